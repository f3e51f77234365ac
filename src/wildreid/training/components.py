"""The pieces a training run is built from: network, losses, optimizers, schedule, precision.

* :func:`build_net`: the base model's pretrained backbone (loaded by
  :func:`wildreid.models.factory.load_model`, so every registered and ``timm/<name>`` model
  works and no weight-mapping code is repeated) with a fresh
  :class:`~wildreid.models.heads.EmbeddingHead`;
* :class:`LossPair`: the configured losses, split into those that mine pairs over the global
  batch under DDP (triplet) and those computed on the local batch;
* :func:`build_optimizers`: parameter groups ``backbone`` (``lr * backbone_lr_mult``),
  ``head`` (``lr``) and ``loss:<name>`` (``lr`` or the loss's own rate); groups the loss wants
  stepped by its own plain SGD (the centres of ``center``) get a second optimizer that the
  schedule does not touch, as in the BNNeck baseline;
* :func:`build_scheduler`: timm's scheduler, stepped every iteration (linear warm-up, then
  cosine or step decay); :func:`group_lr` reads a group's rate by name;
* :func:`determinism`, :func:`seed_all`: deterministic kernels, seeds;
* :func:`validate`: top-1 / mAP of the current network on the validation set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from timm.scheduler.cosine_lr import CosineLRScheduler
from timm.scheduler.multistep_lr import MultiStepLRScheduler
from torch import nn

from wildreid.errors import ConfigError
from wildreid.evaluation.protocol import evaluate_embeddings, protocol_from_split
from wildreid.losses import CompositeLoss, LossOutput, build_loss
from wildreid.models.embedder import Embedder, EmbedderConfig
from wildreid.models.factory import EmbeddingModel
from wildreid.models.heads import EmbeddingNet, NetConfig, build_backbone
from wildreid.models.landmark import first_conv_name, widen_first_conv
from wildreid.models.landmark_embedder import LandmarkEmbedConfig, embed_with_landmarks
from wildreid.models.weights import check_state_dict_fits
from wildreid.training.config import ModelConfig, ScheduleConfig, TrainConfig
from wildreid.training.data import TrainingData
from wildreid.training.distributed import DistContext, gather_tensor, gather_with_grad
from wildreid.types import EmbeddingSpace

__all__ = [
    "GLOBAL_BATCH_LOSSES",
    "LossPair",
    "PairForward",
    "Scheduler",
    "build_net",
    "build_optimizers",
    "build_scheduler",
    "derived_seed",
    "determinism",
    "group_lr",
    "net_parameter_groups",
    "seed_all",
    "validate",
]

logger = logging.getLogger(__name__)

GLOBAL_BATCH_LOSSES = frozenset({"triplet"})
"""Losses that mine pairs: under DDP they see every rank's batch; the others the local one."""


def _probe_rank(config: NetConfig, input_size: tuple[int, int]) -> int | None:
    """The rank of the backbone's output for one image, computed on the meta device."""
    try:
        with torch.device("meta"):
            out = build_backbone(config)(torch.empty(1, 3, *input_size))
    except (RuntimeError, NotImplementedError, TypeError, ValueError, AssertionError):
        return None  # some backbones cannot run on meta tensors; the first batch will tell
    return int(out.ndim) if isinstance(out, torch.Tensor) else None


def build_net(base: EmbeddingModel, config: ModelConfig) -> tuple[EmbeddingNet, tuple[int, int]]:
    """The base model's backbone (its weights copied) with a fresh head, and the input size.

    Raises:
        ConfigError: the base is not an :class:`EmbeddingNet` with a config, or the pooling
            does not fit the backbone's output (``gem``/``avg`` need feature maps).
        WeightsError: the base's backbone weights do not fit the rebuilt backbone.
    """
    source = base.module
    if not isinstance(source, EmbeddingNet) or source.config is None:
        raise ConfigError(f"model.base {base.card.name!r} cannot be fine-tuned (no NetConfig)")
    net_config = NetConfig(
        backbone=source.config.backbone,
        pooling=config.pooling,
        embedding_dim=config.embedding_dim,
        bnneck=config.bnneck,
        backbone_kwargs=dict(source.config.backbone_kwargs),
        landmarks=tuple(config.landmarks),
        radius_frac=config.landmark_radius_frac,
        reconstruction_weight=config.reconstruction_weight,
    )
    if source.landmarks and source.landmarks != net_config.landmarks:
        raise ConfigError(
            f"model.landmarks {list(net_config.landmarks)} differ from the base "
            f"{base.card.name}'s {list(source.landmarks)} (names and order must match)"
        )
    input_size = config.input_size or base.card.input_size
    rank = _probe_rank(net_config, input_size)
    if config.pooling != "none" and rank not in (None, 4):
        raise ConfigError(
            f"model.pooling {config.pooling!r} needs feature maps, but {base.card.name} "
            f"returns {rank}-D tokens; use pooling: none (the backbone's own pooling)"
        )
    net = EmbeddingNet.from_config(net_config)
    state = source.backbone.state_dict()
    if net.landmarks and not source.landmarks:
        state = widen_first_conv(state, first_conv_name(net.backbone), 3 + len(net.landmarks))
    check_state_dict_fits(net.backbone, state, what=f"{base.card.name} backbone")
    net.backbone.load_state_dict(state)
    if config.keep_head:
        head = source.head.state_dict()
        check_state_dict_fits(net.head, head, what=f"{base.card.name} head (model.keep_head)")
        net.head.load_state_dict(head)
        if net.reconstruction is not None and source.reconstruction is not None:
            net.reconstruction.load_state_dict(source.reconstruction.state_dict())
    return net, (int(input_size[0]), int(input_size[1]))


class LossPair(nn.Module):
    """The configured losses, split into the global-batch part and the local part.

    Under DDP the :data:`GLOBAL_BATCH_LOSSES` (triplet mining) are computed on the features of
    every rank (gathered), the others (classification, centres) on this rank's batch. In a
    single process the gather is the identity, so the sum equals one composite loss.
    """

    def __init__(
        self, config: TrainConfig, *, num_classes: int, embedding_dim: int, class_counts: list[int]
    ) -> None:
        super().__init__()
        self.order = [spec.name for spec in config.losses]
        parts = (
            [s for s in config.losses if s.name in GLOBAL_BATCH_LOSSES],
            [s for s in config.losses if s.name not in GLOBAL_BATCH_LOSSES],
        )
        built = [
            build_loss(
                specs,
                num_classes=num_classes,
                embedding_dim=embedding_dim,
                class_counts=class_counts,
            )
            if specs
            else None
            for specs in parts
        ]
        self.global_part: CompositeLoss | None = built[0]
        self.local_part: CompositeLoss | None = built[1]

    def composites(self) -> list[CompositeLoss]:
        """The non-empty parts."""
        return [c for c in (self.global_part, self.local_part) if c is not None]

    def compute(
        self,
        ctx: DistContext,
        features: torch.Tensor,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
    ) -> LossOutput:
        """Both parts on their batches; parts in config order, ``total`` their sum."""
        outputs: list[LossOutput] = []
        if self.global_part is not None:
            both = gather_with_grad(ctx, torch.cat([features, embeddings], dim=1))
            dim = features.shape[1]
            outputs.append(
                self.global_part(
                    features=both[:, :dim],
                    embeddings=both[:, dim:],
                    labels=gather_tensor(ctx, labels),
                )
            )
        if self.local_part is not None:
            outputs.append(self.local_part(features=features, embeddings=embeddings, labels=labels))
        parts = {k: v for out in outputs for k, v in out.parts.items()}
        mined = [out.n_triplets for out in outputs if out.n_triplets is not None]
        return LossOutput(
            total=sum((out.total for out in outputs[1:]), outputs[0].total),
            parts={name: parts[name] for name in self.order},
            n_triplets=sum(mined) if mined else None,
        )


def net_parameter_groups(net: EmbeddingNet) -> dict[str, list[nn.Parameter]]:
    """The network's parameters by group: ``stem`` (a landmark network's widened first
    convolution), ``backbone`` (the rest of it), ``head``, ``reconstruction``; each parameter
    in exactly one group, empty groups left out."""
    seen: set[int] = set()
    out: dict[str, list[nn.Parameter]] = {}
    for name, module in net.module_groups().items():
        params = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            out[name] = params
    return out


def build_optimizers(
    net: EmbeddingNet, losses: LossPair, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """The main optimizer (backbone, head, loss groups) and the loss parameters' own SGD.

    Every group carries a ``name`` (those of :func:`net_parameter_groups`, ``loss:<name>``).
    """
    optim = config.optim
    groups: list[dict[str, Any]] = [
        {
            "name": name,
            "params": params,
            "lr": optim.lr * (optim.backbone_lr_mult if name == "backbone" else 1.0),
        }
        for name, params in net_parameter_groups(net).items()
        if params
    ]
    own: list[dict[str, Any]] = []
    for composite in losses.composites():
        for group in composite.parameter_groups():
            entry = {"name": f"loss:{group.name}", **group.to_torch()}
            entry.setdefault("lr", optim.lr)
            (own if group.own_sgd else groups).append(entry)
    main: torch.optim.Optimizer
    if optim.name == "sgd":
        main = torch.optim.SGD(
            groups,
            lr=optim.lr,
            momentum=optim.momentum,
            nesterov=optim.momentum > 0,
            weight_decay=optim.weight_decay,
        )
    else:
        main = torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)
    side = torch.optim.SGD(own, lr=optim.lr, momentum=0.0, weight_decay=0.0) if own else None
    return main, side


Scheduler = CosineLRScheduler | MultiStepLRScheduler


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: ScheduleConfig,
    *,
    lr: float,
    steps_per_epoch: int,
) -> Scheduler:
    """timm's per-iteration scheduler for ``schedule`` (``step_update(n)`` after step ``n``).

    Linear warm-up over ``warmup_epochs`` (from ``1 / warmup steps`` of each group's rate),
    then ``cosine`` down to ``min_lr_ratio * lr`` at the last iteration (timm's floor is one
    absolute rate for every group), or ``step``: times ``gamma`` at each epoch of
    ``step_epochs`` (1-based, at its start).
    """
    warmup = schedule.warmup_epochs * steps_per_epoch
    lowest = min(float(g["lr"]) for g in optimizer.param_groups) if optimizer.param_groups else lr
    init = lowest / warmup if warmup else 0.0
    if schedule.kind == "step":
        return MultiStepLRScheduler(
            optimizer,
            decay_t=[(e - 1) * steps_per_epoch for e in schedule.step_epochs],
            decay_rate=schedule.gamma,
            warmup_t=warmup,
            warmup_lr_init=init,
            warmup_prefix=False,
            t_in_epochs=False,
        )
    total = schedule.epochs * steps_per_epoch
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup - 1),
        lr_min=schedule.min_lr_ratio * lr,
        warmup_t=warmup,
        warmup_lr_init=init,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def group_lr(optimizer: torch.optim.Optimizer, name: str) -> float:
    """The current learning rate of the parameter group called ``name``.

    Raises:
        KeyError: no group has that name (the message lists them).
    """
    for group in optimizer.param_groups:
        if group.get("name") == name:
            return float(group["lr"])
    names = [str(g.get("name")) for g in optimizer.param_groups]
    raise KeyError(f"no parameter group {name!r} (groups: {', '.join(names)})")


@contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic cuDNN/CUDA kernels for the run (restored after); CPU needs nothing."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    before = (
        cudnn.deterministic,
        cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        cudnn.deterministic, cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        cudnn.benchmark = True
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = before[0], before[1]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's (global) and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. seed, epoch, rank)."""
    text = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


class PairForward(nn.Module):
    """``net.forward_train`` as ``forward``, so DistributedDataParallel can wrap it."""

    def __init__(self, net: EmbeddingNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.forward_train(x)


@dataclass(frozen=True)
class _Snapshot:
    """The network in training, as the embedder sees a model (it embeds a copy)."""

    module: nn.Module
    space: EmbeddingSpace


def validate(
    net: EmbeddingNet,
    *,
    space: EmbeddingSpace,
    data: TrainingData,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """``top1``, ``top5``, ``mAP`` and ``mINP`` of the current network on the validation set.

    The :class:`~wildreid.models.embedder.Embedder` embeds the validation images with the
    inference preprocessing (no augmentation) from a copy of ``net`` in eval mode; the val
    queries are ranked against the val gallery (closed set). It runs with torch: the
    weights change between validations while the space does not, so a compiled copy would be
    both stale and costly.
    queries are ranked against the val gallery (closed set). A landmark network is fed the
    annotated landmarks (:func:`~wildreid.models.landmark_embedder.embed_with_landmarks`).
    """
    if net.landmarks:
        was_training = net.training
        embedded = embed_with_landmarks(
            net,
            space,
            data.val,
            root=data.root,
            config=LandmarkEmbedConfig(batch_size=config.train.eval_batch_size, device=str(device)),
        )
        net.train(was_training)
        landmark_eval = evaluate_embeddings(
            data.val,
            protocol_from_split(data.val, data.val_split),
            embedded.embeddings,
            open_set=False,
        )
        keys = ("top1", "top5", "mAP", "mINP")
        return {k: float(landmark_eval.metrics[k]) for k in keys if k in landmark_eval.metrics}
    embedder = Embedder(
        _Snapshot(module=net, space=space),
        config=EmbedderConfig(
            batch_size=config.train.eval_batch_size,
            workers=config.train.workers,
            device=str(device),
            precision=config.train.precision,
            channels_last=config.train.channels_last,
            skip_bad_images=config.data.skip_bad_images,
            runtime="torch",  # the weights change every epoch: compiling would not pay off
        ),
    )
    result = embedder.embed_images(data.val, root=data.root)
    protocol = protocol_from_split(data.val, data.val_split).without(
        image_id for image_id, _ in result.skipped
    )
    evaluation = evaluate_embeddings(data.val, protocol, result.embeddings, open_set=False)
    keys = ("top1", "top5", "mAP", "mINP")
    return {k: float(evaluation.metrics[k]) for k in keys if k in evaluation.metrics}
