"""Data-parallel training across processes started by ``torchrun``.

Usage (N processes on one machine; each GPU gets one process)::

    torchrun --nproc_per_node N $(which wildreid) train --config run.yaml --out runs/x

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them and joins the process group: NCCL on CUDA (process ``r``
takes ``cuda:LOCAL_RANK``), gloo on CPU. Without them (a plain ``wildreid train``) the run is a
single process and every function here is a no-op.

What is shared and how (see :mod:`wildreid.training.trainer`):

* the network is wrapped in ``DistributedDataParallel`` (gradients averaged, buffers such as
  BatchNorm statistics broadcast from rank 0 at every forward, and again at each epoch end);
* the loss parameters (ArcFace class weights, centres) start equal (:func:`broadcast_module`)
  and have their gradients averaged (:func:`average_gradients`) before every step;
* losses that mine pairs (triplet) see the global batch: :func:`gather_with_grad` concatenates
  every rank's features, the local part keeping its autograd graph. Its backward sums the
  gradients that all ranks computed for each slice (every rank computes the same loss on the same
  global batch), so after DDP's average the parameters get exactly the gradient of the
  global-batch loss. Classification losses stay on the local batch;
* only rank 0 writes files and validates; the others wait at a barrier and receive its
  decisions (:func:`broadcast_object`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from wildreid.device import resolve_device
from wildreid.errors import ConfigError

__all__ = [
    "DistContext",
    "average_gradients",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "gather_objects",
    "gather_tensor",
    "gather_with_grad",
    "init_distributed",
    "shutdown_distributed",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_TIMEOUT = dt.timedelta(minutes=60)
"""How long ranks wait for each other (rank 0 validates while the others wait)."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run.

    Attributes:
        rank: 0 .. world_size - 1.
        world_size: number of processes (1 without torchrun).
        device: the device this process trains on.
        owns_group: this context initialised the process group (and destroys it).
    """

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: writes files, validates, logs."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer") from exc


def init_distributed(device: str) -> DistContext:
    """Join the process group described by torchrun's environment, if any.

    Args:
        device: the configured device; ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` when
            distributed on GPUs.

    Raises:
        ConfigError: malformed environment, or an explicit ``cuda:N`` in a multi-process run
            (each process must take its own GPU).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world_size <= 1:
        return DistContext(rank=0, world_size=1, device=resolve_device(device))
    local_rank = _env_int("LOCAL_RANK", rank)
    target = resolve_device(device)
    if target.type == "cuda":
        if target.index is not None and device not in ("auto", "cuda"):
            raise ConfigError(
                f"train.device {device!r} pins one GPU, but torchrun started {world_size} "
                "processes; use auto or cuda (each process takes cuda:LOCAL_RANK)"
            )
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=_TIMEOUT)
        owns = True
        logger.info("rank %d of %d joined the %s process group", rank, world_size, backend)
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), device=target, owns_group=owns
    )


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group if this context joined it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def broadcast_object(ctx: DistContext, value: T) -> T:
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not ctx.distributed:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


def gather_objects(ctx: DistContext, value: T) -> list[T]:
    """Every rank's ``value``, in rank order (picklable objects)."""
    if not ctx.distributed:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def broadcast_module(ctx: DistContext, module: nn.Module, *, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (or only its buffers) into ``module`` on every rank.

    DistributedDataParallel syncs buffers (BatchNorm statistics) at the start of each forward
    pass, so after the last step of an epoch each rank holds its own; the trainer calls this
    with ``buffers_only`` at every epoch end so that all ranks hold rank 0's.
    """
    if not ctx.distributed:
        return
    tensors = [*module.buffers()] if buffers_only else [*module.parameters(), *module.buffers()]
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)


def average_gradients(ctx: DistContext, params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the ranks, in one all-reduce.

    A parameter without a gradient on this rank counts as a zero gradient when another rank has
    one (and gets the average); one without a gradient on every rank keeps none, so every rank
    makes the same update.
    """
    if not ctx.distributed:
        return
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        return
    device = trainable[0].device
    has_grad = torch.tensor(
        [p.grad is not None for p in trainable], dtype=torch.float32, device=device
    )
    flat = torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
            for p in trainable
        ]
        + [has_grad]
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    any_grad = flat[-len(trainable) :] > 0
    offset = 0
    for p, present in zip(trainable, any_grad.tolist(), strict=True):
        n = p.numel()
        averaged = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n
        if not present:
            p.grad = None
        elif p.grad is None:
            p.grad = averaged.clone()
        else:
            p.grad.copy_(averaged)


def _sizes(ctx: DistContext, n: int, device: torch.device) -> list[int]:
    local = torch.tensor([n], device=device, dtype=torch.int64)
    sizes = [torch.zeros_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _padded_gather(tensor: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Every rank's (n_r, ...) tensor, padded to the largest n for the collective, trimmed."""
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return [part[:n] for part, n in zip(parts, sizes, strict=True)]


def gather_tensor(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows concatenated in rank order, without gradient (e.g. labels).

    Shapes:
        tensor: (n_r, ...); ranks may hold different n_r.
        returns: (sum n_r, ...).
    """
    if not ctx.distributed:
        return tensor
    sizes = _sizes(ctx, tensor.shape[0], tensor.device)
    return torch.cat(_padded_gather(tensor.detach(), sizes))


# Why not pytorch-metric-learning's DistributedLossWrapper / utils.distributed.all_gather:
# with efficient=False it computes the loss on [local rows (with grad), other ranks' rows
# (without)] and multiplies it by world_size, which after DDP's averaging is the same gradient
# as ours. But it wraps one PML loss called as loss(embeddings, labels, ref_emb=...), while
# LossPair's global part is a CompositeLoss over two tensors (features before and after the
# BNNeck) that also reports the mined-triplet count; its rows come local-first (a different
# order on every rank, so tie-breaking in batch-hard mining differs between ranks) and the
# logged loss would be world_size times too large. This gather keeps one rank order and the
# true loss value; tests/training/test_distributed.py checks its gradients.
class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the rank-summed gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, rank: int, sizes: list[int]) -> torch.Tensor:
        ctx.rank, ctx.sizes = rank, sizes
        return torch.cat(_padded_gather(tensor, sizes))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        summed = grads[0].contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return summed[start : start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows concatenated in rank order; gradients flow back to the local rows.

    The backward all-reduces (sums) the gradient of the whole output and keeps this rank's
    slice, so a loss computed identically on every rank over the gathered batch gives, after
    DistributedDataParallel's averaging, the gradient of that global-batch loss.

    Shapes:
        tensor: (n_r, D); ranks may hold different n_r.
        returns: (sum n_r, D).
    """
    if not ctx.distributed:
        return tensor
    sizes = _sizes(ctx, tensor.shape[0], tensor.device)
    gathered: torch.Tensor = _GatherWithGrad.apply(tensor, ctx.rank, sizes)
    return gathered


def wrap_ddp(ctx: DistContext, module: nn.Module) -> nn.Module:
    """``module`` in DistributedDataParallel (its trainable parameters as they are now).

    DDP registers the parameters that require gradients when it is built, so wrap again after
    freezing or unfreezing parameters.
    """
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)
