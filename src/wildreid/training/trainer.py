"""Fine-tune an embedding network for re-identification: :func:`train`.

The network is the base model's pretrained backbone (a registered model or ``timm/<name>``,
loaded by :func:`wildreid.models.factory.load_model`) and a fresh
:class:`~wildreid.models.heads.EmbeddingHead` (GeM/avg pooling, projection, BNNeck). Batches
are P identities x K images (:class:`~wildreid.training.sampling.PKSampler`) with training
augmentations; the loss is the configured weighted sum (:func:`wildreid.losses.build_loss`).

Optimisation: AdamW or SGD with three kinds of parameter groups: the backbone
(``lr * backbone_lr_mult``), the head (``lr``), the loss parameters (``lr``, or their own
rate); the centres of ``center`` take their own plain SGD (outside the schedule), as in the
BNNeck baseline. The rate factor is updated every iteration: linear warm-up, then cosine or
step decay (:class:`LrFactor`). For ``freeze_backbone_epochs`` the backbone is frozen
(``requires_grad`` off, BatchNorms in eval mode) and only the head and the losses learn;
after that the backbone's BatchNorms keep their pretrained running statistics if
``freeze_backbone_bn`` says so.
Gradients may be clipped (global norm over the model and the loss parameters of the main
optimizer). On CUDA the forward pass runs under autocast (bf16, or fp16 with a gradient
scaler); ``precision: bf16`` autocasts on CPU too; losses are computed in float32.

Validation embeds the carved validation images with the current network through the
:class:`~wildreid.models.embedder.Embedder` (inference preprocessing, no augmentation) and
scores them with :func:`~wildreid.evaluation.protocol.evaluate_embeddings`; the best mAP
gives ``model.pt``, and ``early_stopping_patience`` validations without improvement stop the
run. Files: see :mod:`wildreid.training.checkpoints` and :mod:`wildreid.training.logs`.

What a run is built from (data, network, losses, sampler, optimizers):
:mod:`wildreid.training.setup`.

Reproducibility: on CPU, the same config and seed give bit-identical weights (decoding and
augmentation happen in the training process with ``workers: 0``, whose generators are seeded;
worker processes are seeded from the seed, the epoch and the rank). ``last.pt`` holds every
generator state, so a resumed run continues exactly as an uninterrupted one. Multi-process
training: :mod:`wildreid.training.distributed`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from wildreid.config import to_dict
from wildreid.errors import DataError
from wildreid.losses import LossOutput
from wildreid.models.checkpoint import CHECKPOINT_FILENAME, save_checkpoint
from wildreid.models.heads import EmbeddingNet
from wildreid.training.checkpoints import (
    LAST_FILENAME,
    TrainingState,
    absolute_paths,
    capture_rng,
    check_resumable,
    open_run_dir,
    restore_rng,
    save_training_state,
)
from wildreid.training.components import (
    LossPair,
    PairForward,
    derived_seed,
    determinism,
    seed_all,
    validate,
)
from wildreid.training.config import TrainConfig
from wildreid.training.data import check_bad_images
from wildreid.training.distributed import (
    DistContext,
    average_gradients,
    barrier,
    broadcast_module,
    broadcast_object,
    gather_objects,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from wildreid.training.logs import RunLog, epoch_line
from wildreid.training.setup import RunSetup, build_setup, epoch_loader

__all__ = ["TrainProgress", "TrainResult", "Trainer", "train"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainProgress:
    """Where a run is, for progress bars.

    Attributes:
        epoch: the epoch in progress, 1-based.
        epochs: epochs configured.
        batch: batches finished in this epoch.
        batches: batches per epoch.
        phase: ``batch`` after each step, ``validate`` before validating, ``epoch`` once the
            epoch (and ``last.pt``) is written.
    """

    epoch: int
    epochs: int
    batch: int
    batches: int
    phase: Literal["batch", "validate", "epoch"]


ProgressCallback = Callable[[TrainProgress], None]


@dataclass(frozen=True)
class TrainResult:
    """What a run produced.

    Attributes:
        run_dir: the run directory.
        checkpoint_path: ``model.pt`` (load it with ``load_model(run_dir)``).
        best_metrics: validation metrics of the best epoch (``top1``, ``mAP``, ...); empty
            without validation.
        best_epoch: 1-based epoch of ``model.pt`` (the last one without validation).
        epochs_run: epochs finished, including those before a resume.
        stopped_early: early stopping ended the run.
        excluded_identities: training identities with one image, never in a P x K batch (no
            positive pair, so no triplet anchor).
        history: one record per epoch (the rows of ``metrics.csv``).
        seconds: wall time of this call.
    """

    run_dir: Path
    checkpoint_path: Path
    best_metrics: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    stopped_early: bool
    excluded_identities: int
    history: tuple[dict[str, Any], ...]
    seconds: float


@dataclass
class _Book:
    """Progress that survives a resume: epochs, steps, the best validation, the history."""

    epoch: int = 0
    step: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    bad_validations: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def best(self) -> dict[str, Any]:
        return {
            "metrics": dict(self.best_metrics),
            "epoch": self.best_epoch,
            "bad_validations": self.bad_validations,
        }


class Trainer:
    """One training run; :func:`train` is ``Trainer(...).run()``.

    After :meth:`run`, :attr:`net` is the network as trained (last epoch, on its device) and
    :attr:`losses` the loss module (class weights, centres).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        out_dir: str | os.PathLike[str],
        resume: bool = False,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.config = absolute_paths(config)
        self.run_dir = Path(out_dir)
        self.resume = resume
        self.progress = progress
        self.net: EmbeddingNet | None = None
        self.losses: LossPair | None = None
        self._book = _Book()

    def run(self) -> TrainResult:
        """Train (see :func:`train`)."""
        start = time.perf_counter()
        ctx = init_distributed(self.config.train.device)
        try:
            with determinism(self.config.train.deterministic, ctx.device):
                result = self._run(ctx)
        finally:
            shutdown_distributed(ctx)
        return replace(result, seconds=time.perf_counter() - start)

    def _restore(self, ctx: DistContext, s: RunSetup, state: TrainingState) -> None:
        check_resumable(state, path=self.run_dir / LAST_FILENAME, net=s.net, losses=s.losses)
        s.net.load_state_dict(state.net)
        s.losses.load_state_dict(state.losses)
        s.optimizer.load_state_dict(state.optimizers[0])
        if s.side is not None:
            s.side.load_state_dict(state.optimizers[1])
        s.scheduler.load_state_dict(state.scheduler)
        s.scaler.load_state_dict(state.scaler)
        s.sampler.set_epoch(state.sampler_epoch)
        best = state.best
        self._book = _Book(
            epoch=state.epoch,
            step=state.step,
            best_metrics=dict(best["metrics"]),
            best_epoch=best["epoch"],
            bad_validations=int(best["bad_validations"]),
            history=[dict(r) for r in state.history],
        )
        if len(state.rng) == ctx.world_size:
            restore_rng(state.rng[ctx.rank])
        else:
            logger.warning(
                "last.pt was written by %d process(es), this run has %d: random generators "
                "restart from the seed, so the run will not repeat the original exactly",
                len(state.rng),
                ctx.world_size,
            )
            seed_all(derived_seed(self.config.train.seed, state.epoch, ctx.rank))
        logger.info("resuming %s after epoch %d (step %d)", self.run_dir, state.epoch, state.step)

    def _run(self, ctx: DistContext) -> TrainResult:
        cfg = self.config
        state = open_run_dir(self.run_dir, self.config, resume=self.resume, write=ctx.is_main)
        barrier(ctx)
        seed_all(cfg.train.seed)
        s = build_setup(cfg, ctx, run_dir=self.run_dir)
        if state is not None:
            self._restore(ctx, s, state)
        else:
            broadcast_module(ctx, s.losses)  # the net is broadcast by DistributedDataParallel
            if ctx.rank:
                seed_all(derived_seed(cfg.train.seed, ctx.rank))  # own augmentation stream
        self.net, self.losses = s.net, s.losses
        excluded = s.sampler.excluded_identities
        if ctx.is_main:
            logger.info(
                "training %s on %d images of %d identities, %d batches of %dx%d per epoch%s; "
                "%d identities with one image are left out of the batches (no triplet anchor)",
                s.card.name,
                len(s.data.train),
                s.data.labels.num_classes,
                s.sampler.batches_per_epoch,
                cfg.sampler.p,
                cfg.sampler.k,
                f" on each of {ctx.world_size} processes" if ctx.distributed else "",
                excluded,
            )
        log = RunLog(
            self.run_dir,
            loss_names=s.losses.order,
            history=self._book.history,
            start_step=self._book.step,
            enabled=ctx.is_main,
        )
        stopped = False
        try:
            for epoch in range(self._book.epoch, cfg.schedule.epochs):
                stopped = self._epoch(ctx, s, log, epoch)
                if stopped:
                    break
        finally:
            log.close()
        book = self._book
        return TrainResult(
            run_dir=self.run_dir,
            checkpoint_path=self.run_dir / CHECKPOINT_FILENAME,
            best_metrics=dict(book.best_metrics),
            best_epoch=book.best_epoch,
            epochs_run=book.epoch,
            stopped_early=stopped,
            excluded_identities=excluded,
            history=tuple(book.history),
            seconds=0.0,
        )

    def _set_stage(self, ctx: DistContext, s: RunSetup, *, frozen: bool) -> None:
        if s.frozen is frozen:
            return
        s.net.backbone.requires_grad_(not frozen)
        s.forward = None  # DDP registers trainable parameters when built: wrap again
        s.forward = wrap_ddp(ctx, PairForward(s.net))
        s.frozen = frozen
        if ctx.is_main:
            logger.info("backbone %s", "frozen: training the head" if frozen else "trainable")

    def _report(self, ctx: DistContext, epoch: int, batch: int, batches: int, phase: Any) -> None:
        if self.progress is not None and ctx.is_main:
            self.progress(
                TrainProgress(epoch + 1, self.config.schedule.epochs, batch, batches, phase)
            )

    def _step(
        self, ctx: DistContext, s: RunSetup, images: torch.Tensor, labels: torch.Tensor
    ) -> LossOutput:
        pinned = ctx.device.type == "cuda" and images.is_pinned()
        images = images.to(ctx.device, non_blocking=pinned)
        labels = labels.to(ctx.device, non_blocking=pinned)
        if s.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        assert s.forward is not None
        with torch.autocast(ctx.device.type, dtype=s.dtype, enabled=s.dtype is not None):
            features, embeddings = s.forward(images)
        out = s.losses.compute(ctx, features.float(), embeddings.float(), labels)
        s.optimizer.zero_grad(set_to_none=True)
        if s.side is not None:
            s.side.zero_grad(set_to_none=True)
        scaled: torch.Tensor = s.scaler.scale(out.total)
        torch.autograd.backward(scaled)
        average_gradients(ctx, s.losses.parameters())
        clip = self.config.train.grad_clip_norm
        if clip is not None:
            s.scaler.unscale_(s.optimizer)
            params = [
                p for g in s.optimizer.param_groups for p in g["params"] if p.grad is not None
            ]
            torch.nn.utils.clip_grad_norm_(params, clip)
        s.scaler.step(s.optimizer)
        if s.side is not None:
            s.scaler.step(s.side)
        s.scaler.update()
        s.scheduler.step()
        return out

    def _epoch(self, ctx: DistContext, s: RunSetup, log: RunLog, epoch: int) -> bool:
        """Train one epoch, validate, write the files; return whether to stop early."""
        cfg, book = self.config, self._book
        start = time.perf_counter()
        self._set_stage(ctx, s, frozen=epoch < cfg.schedule.freeze_backbone_epochs)
        s.sampler.set_epoch(epoch)
        loader = epoch_loader(
            s,
            workers=cfg.train.workers,
            pin_memory=ctx.device.type == "cuda",
            seed=derived_seed(cfg.train.seed, epoch, ctx.rank),
        )
        s.net.train()
        if s.frozen:
            s.net.backbone.eval()
        elif cfg.schedule.freeze_backbone_bn:
            for module in s.net.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        batches = s.sampler.batches_per_epoch
        sums: dict[str, float] = dict.fromkeys(s.losses.order, 0.0)
        total, n_batches, zero = 0.0, 0, 0
        mined: list[int] = []
        for index, batch in enumerate(loader, start=1):
            check_bad_images(batch, skip_bad_images=cfg.data.skip_bad_images)
            if batch.images is None:
                if ctx.distributed:
                    raise DataError(f"epoch {epoch + 1}: every image of a batch is unreadable")
                continue
            out = self._step(ctx, s, batch.images, batch.labels)
            book.step += 1
            n_batches += 1
            loss = float(out.total.detach())
            total += loss
            for name, value in out.parts.items():
                sums[name] += value
            if out.n_triplets is not None:
                mined.append(out.n_triplets)
                if out.n_triplets == 0 and zero == 0 and ctx.is_main:
                    logger.warning(
                        "epoch %d batch %d: no triplet mined (an identity needs 2+ images in "
                        "the batch and a violating negative); counted in zero_triplet_batches",
                        epoch + 1,
                        index,
                    )
                zero += out.n_triplets == 0
            lr = float(s.optimizer.param_groups[1]["lr"])  # the head's
            log.iteration(book.step, {"loss": loss, "lr": lr, **out.parts})
            self._report(ctx, epoch, index, batches, "batch")
        del loader
        broadcast_module(ctx, s.net, buffers_only=True)  # rank 0's BatchNorm statistics
        n = max(1, n_batches)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": book.step,
            "lr": float(s.optimizer.param_groups[1]["lr"]),
            "loss": total / n,
            **{f"loss_{k}": v / n for k, v in sums.items()},
            "n_triplets": sum(mined) / len(mined) if mined else None,
            "zero_triplet_batches": zero if mined else None,
            "val_top1": None,
            "val_mAP": None,
        }
        due = len(s.data.val) > 0 and (
            (epoch + 1) % cfg.train.eval_every_epochs == 0 or epoch + 1 == cfg.schedule.epochs
        )
        metrics: dict[str, float] | None = None
        if due:
            self._report(ctx, epoch, batches, batches, "validate")
            metrics = broadcast_object(
                ctx,
                validate(s.net, space=s.space, data=s.data, config=self.config, device=ctx.device)
                if ctx.is_main
                else None,
            )
            assert metrics is not None
            record["val_top1"], record["val_mAP"] = metrics["top1"], metrics["mAP"]
        improved = metrics is not None and (
            book.best_epoch is None or metrics["mAP"] > book.best_metrics.get("mAP", -1.0)
        )
        if improved:
            assert metrics is not None
            book.best_metrics, book.best_epoch, book.bad_validations = metrics, epoch + 1, 0
        elif metrics is not None:
            book.bad_validations += 1
        if not len(s.data.val):
            book.best_epoch = epoch + 1
        if ctx.is_main and (improved or not len(s.data.val)):
            save_checkpoint(self.run_dir, net=s.net, card=s.card, config=to_dict(cfg))
        record["seconds"] = time.perf_counter() - start
        book.epoch = epoch + 1
        book.history.append(record)
        self._save_state(ctx, s)
        if ctx.is_main:
            log.epoch(record)
            logger.info("%s", epoch_line(record, cfg.schedule.epochs))
        self._report(ctx, epoch, batches, batches, "epoch")
        patience = cfg.train.early_stopping_patience
        if patience is not None and book.bad_validations >= patience:
            if ctx.is_main:
                logger.info(
                    "early stopping after epoch %d: no better val mAP in %d validations "
                    "(best %.4f at epoch %s)",
                    epoch + 1,
                    patience,
                    book.best_metrics.get("mAP", float("nan")),
                    book.best_epoch,
                )
            return True
        return False

    def _save_state(self, ctx: DistContext, s: RunSetup) -> None:
        rng = gather_objects(ctx, capture_rng())
        if not ctx.is_main:
            barrier(ctx)
            return
        book = self._book
        optimizers = [s.optimizer.state_dict()]
        if s.side is not None:
            optimizers.append(s.side.state_dict())
        state = TrainingState(
            epoch=book.epoch,
            step=book.step,
            net={k: v.detach().cpu() for k, v in s.net.state_dict().items()},
            net_config=s.net_config,
            losses={k: v.detach().cpu() for k, v in s.losses.state_dict().items()},
            optimizers=optimizers,
            scheduler=s.scheduler.state_dict(),
            scaler=s.scaler.state_dict(),
            rng=rng,
            sampler_epoch=book.epoch,
            best=book.best(),
            history=[dict(r) for r in book.history],
            config=to_dict(self.config),
        )
        save_training_state(self.run_dir / LAST_FILENAME, state)
        barrier(ctx)


def train(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train a model as ``config`` says and write the run directory ``out_dir``.

    Args:
        config: the validated configuration (e.g. ``load_config(path, TrainConfig)``); paths
            in it are relative to the current directory.
        out_dir: the run directory; it must not hold a run already unless ``resume``.
        resume: continue the run in ``out_dir`` from its ``last.pt`` exactly as if it had not
            stopped; the config's ``model`` section must be the run's (other changes are
            logged).
        progress: called on rank 0 after every step and epoch (see :class:`TrainProgress`).

    Returns:
        The best epoch's metrics, the checkpoint path and the history.

    Raises:
        ConfigError: invalid device or precision, ``out_dir`` already holds a run (without
            ``resume``) or holds none (with it), a loss option or a pooling that does not fit.
        DataError: unusable metadata, split or images (MetadataError, ImageReadError).
        WeightsError: base weights missing or unreadable; a ``last.pt`` from another
            architecture or a changed ``model`` section on resume.
        UnknownComponentError: unknown model or loss name.
    """
    return Trainer(config, out_dir=out_dir, resume=resume, progress=progress).run()
