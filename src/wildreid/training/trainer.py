"""Fine-tune an embedding network for re-identification: :func:`train`.

The network is the base model's pretrained backbone (a registered model or ``timm/<name>``,
loaded by :func:`wildreid.models.factory.load_model`) and a fresh
:class:`~wildreid.models.heads.EmbeddingHead` (GeM/avg pooling, projection, BNNeck). Batches
are P identities x K images (:class:`~wildreid.training.sampling.PKSampler`) with training
augmentations; the loss is the configured weighted sum (:func:`wildreid.losses.build_loss`).

Optimisation: AdamW or SGD with three kinds of parameter groups: the backbone
(``lr * backbone_lr_mult``), the head (``lr``), the loss parameters (``lr``, or their own
rate); the centres of ``center`` take their own plain SGD (outside the schedule), as in the
BNNeck baseline. Groups are found by name. timm's scheduler sets the rates every iteration:
linear warm-up, then cosine or step decay (:func:`~wildreid.training.components.build_scheduler`).
A run is a sequence of stages (``schedule.stages``; ``freeze_backbone_epochs`` is a first
stage training all but the backbone): groups a stage does not train are frozen
(``requires_grad`` off, their modules in eval mode) and its ``lr_scale`` multiplies every rate.
The backbone's BatchNorms keep their pretrained running statistics if ``freeze_backbone_bn``
says so. A network may add its own loss term (a landmark network's heatmap reconstruction).

One epoch is :meth:`Trainer._train_epoch` (the steps, returning :class:`EpochStats`), then
the :class:`Validator` and :class:`EarlyStopping`.
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
    group_lr,
    net_parameter_groups,
    seed_all,
    validate,
)
from wildreid.training.config import StageConfig, TrainConfig
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

__all__ = [
    "EarlyStopping",
    "EpochStats",
    "TrainProgress",
    "TrainResult",
    "Trainer",
    "Validator",
    "train",
]

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


class EarlyStopping:
    """The best validation so far and when to stop: ``patience`` validations without a better
    ``mAP`` (``None``: never)."""

    def __init__(self, patience: int | None, state: dict[str, Any] | None = None) -> None:
        self.patience = patience
        state = state or {}
        self.best_metrics: dict[str, float] = dict(state.get("metrics") or {})
        self.best_epoch: int | None = state.get("epoch")
        self.bad_validations = int(state.get("bad_validations", 0))

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        """Record the validation of ``epoch`` (1-based); return whether it is the best."""
        if self.best_epoch is None or metrics["mAP"] > self.best_metrics.get("mAP", -1.0):
            self.best_metrics, self.best_epoch, self.bad_validations = dict(metrics), epoch, 0
            return True
        self.bad_validations += 1
        return False

    @property
    def stop(self) -> bool:
        """Patience is used up."""
        return self.patience is not None and self.bad_validations >= self.patience

    def state(self) -> dict[str, Any]:
        """What ``last.pt`` keeps (``metrics``, ``epoch``, ``bad_validations``)."""
        return {
            "metrics": dict(self.best_metrics),
            "epoch": self.best_epoch,
            "bad_validations": self.bad_validations,
        }


@dataclass
class EpochStats:
    """What one epoch of training steps measured (means per batch)."""

    loss_names: list[str]
    batches: int = 0
    loss: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    mined: list[int] = field(default_factory=list)
    zero_triplet_batches: int = 0

    def add(self, out: LossOutput, loss: float) -> None:
        """Count one step's loss."""
        self.batches += 1
        self.loss += loss
        for name, value in out.parts.items():
            self.parts[name] = self.parts.get(name, 0.0) + value
        if out.n_triplets is not None:
            self.mined.append(out.n_triplets)
            self.zero_triplet_batches += out.n_triplets == 0

    def record(self, *, epoch: int, step: int, lr: float) -> dict[str, Any]:
        """The epoch's row of ``metrics.csv`` (validation columns empty)."""
        n = max(1, self.batches)
        return {
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "loss": self.loss / n,
            **{f"loss_{k}": self.parts.get(k, 0.0) / n for k in self.loss_names},
            "n_triplets": sum(self.mined) / len(self.mined) if self.mined else None,
            "zero_triplet_batches": self.zero_triplet_batches if self.mined else None,
            "val_top1": None,
            "val_mAP": None,
        }


class Validator:
    """Validates the network every ``eval_every_epochs`` and after the last epoch (rank 0
    computes, the others receive its metrics)."""

    def __init__(self, config: TrainConfig, s: RunSetup, ctx: DistContext) -> None:
        self.config, self.s, self.ctx = config, s, ctx

    @property
    def enabled(self) -> bool:
        """There are validation images."""
        return len(self.s.data.val) > 0

    def due(self, epoch: int) -> bool:
        """Whether to validate after ``epoch`` (0-based)."""
        every, last = self.config.train.eval_every_epochs, self.config.schedule.epochs
        return self.enabled and ((epoch + 1) % every == 0 or epoch + 1 == last)

    def __call__(self) -> dict[str, float]:
        """``top1``, ``top5``, ``mAP``, ``mINP`` of the current network."""
        s, ctx = self.s, self.ctx
        metrics = broadcast_object(
            ctx,
            validate(s.net, space=s.space, data=s.data, config=self.config, device=ctx.device)
            if ctx.is_main
            else None,
        )
        assert metrics is not None
        return metrics


@dataclass
class _Book:
    """Progress that survives a resume: epochs, steps, the best validation, the history."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


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
        self._stopping = EarlyStopping(self.config.train.early_stopping_patience)
        self._forward: nn.Module | None = None
        self._trainable: tuple[str, ...] | None = None

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
        self._stopping = EarlyStopping(self.config.train.early_stopping_patience, state.best)
        self._book = _Book(
            epoch=state.epoch, step=state.step, history=[dict(r) for r in state.history]
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
            loss_names=[*s.losses.order, *s.net.own_loss_names()],
            history=self._book.history,
            start_step=self._book.step,
            enabled=ctx.is_main,
        )
        validator = Validator(cfg, s, ctx)
        stopped = False
        try:
            for epoch in range(self._book.epoch, cfg.schedule.epochs):
                self._epoch(ctx, s, log, validator, epoch)
                if self._stopping.stop:
                    stopped = epoch + 1 < cfg.schedule.epochs
                    self._log_stop(ctx, epoch)
                    break
        finally:
            log.close()
        book, best = self._book, self._stopping
        return TrainResult(
            run_dir=self.run_dir,
            checkpoint_path=self.run_dir / CHECKPOINT_FILENAME,
            best_metrics=dict(best.best_metrics),
            best_epoch=best.best_epoch,
            epochs_run=book.epoch,
            stopped_early=stopped,
            excluded_identities=excluded,
            history=tuple(book.history),
            seconds=0.0,
        )

    def _log_stop(self, ctx: DistContext, epoch: int) -> None:
        if ctx.is_main:
            best = self._stopping
            logger.info(
                "early stopping after epoch %d: no better val mAP in %d validations "
                "(best %.4f at epoch %s)",
                epoch + 1,
                best.patience,
                best.best_metrics.get("mAP", float("nan")),
                best.best_epoch,
            )

    def _apply_stage(self, ctx: DistContext, s: RunSetup, stage: StageConfig) -> None:
        """Freeze the groups ``stage`` does not train (wrapping DDP again when that changes)."""
        groups = net_parameter_groups(s.net)
        trained = tuple(
            name for name in (*groups, "loss") if "all" in stage.train or name in stage.train
        )
        if trained == self._trainable and self._forward is not None:
            return
        for name, params in groups.items():
            for param in params:
                param.requires_grad_(name in trained)
        s.losses.requires_grad_("loss" in trained)
        self._forward = None  # DDP registers trainable parameters when built: wrap again
        self._forward = wrap_ddp(ctx, PairForward(s.net))
        self._trainable = trained
        if ctx.is_main:
            logger.info("training %s", ", ".join(trained))

    def _train_mode(self, s: RunSetup) -> None:
        """Train mode, except frozen groups (eval) and kept backbone BatchNorm statistics."""
        s.net.train()
        trained = self._trainable or ()
        for name, module in s.net.module_groups().items():
            if name not in trained:
                module.eval()
        if self.config.schedule.freeze_backbone_bn:
            for module in s.net.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _set_lr(self, s: RunSetup, scale: float) -> None:
        s.scheduler.step_update(self._book.step)
        if scale != 1.0:
            for group in s.optimizer.param_groups:
                group["lr"] *= scale

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
        assert self._forward is not None
        with torch.autocast(ctx.device.type, dtype=s.dtype, enabled=s.dtype is not None):
            features, embeddings, own = self._forward(images)
        out = s.losses.compute(ctx, features.float(), embeddings.float(), labels)
        if s.net.own_loss_name is not None:
            own = own.float()
            out = LossOutput(
                total=out.total + own,
                parts={**out.parts, s.net.own_loss_name: float(own.detach())},
                n_triplets=out.n_triplets,
            )
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
        return out

    def _train_epoch(self, ctx: DistContext, s: RunSetup, log: RunLog, epoch: int) -> EpochStats:
        """The epoch's optimizer steps; their losses."""
        cfg, book = self.config, self._book
        stage = cfg.schedule.stage_at(epoch)
        self._apply_stage(ctx, s, stage)
        s.sampler.set_epoch(epoch)
        loader = epoch_loader(
            s,
            workers=cfg.train.workers,
            pin_memory=ctx.device.type == "cuda",
            seed=derived_seed(cfg.train.seed, epoch, ctx.rank),
        )
        self._train_mode(s)
        self._set_lr(s, stage.lr_scale)
        batches = s.sampler.batches_per_epoch
        stats = EpochStats(loss_names=[*s.losses.order, *s.net.own_loss_names()])
        for index, batch in enumerate(loader, start=1):
            check_bad_images(batch, skip_bad_images=cfg.data.skip_bad_images)
            if batch.images is None:
                if ctx.distributed:
                    raise DataError(f"epoch {epoch + 1}: every image of a batch is unreadable")
                continue
            lr = group_lr(s.optimizer, "head")
            out = self._step(ctx, s, batch.images, batch.labels)
            book.step += 1
            self._set_lr(s, stage.lr_scale)
            loss = float(out.total.detach())
            if out.n_triplets == 0 and stats.zero_triplet_batches == 0 and ctx.is_main:
                logger.warning(
                    "epoch %d batch %d: no triplet mined (an identity needs 2+ images in "
                    "the batch and a violating negative); counted in zero_triplet_batches",
                    epoch + 1,
                    index,
                )
            stats.add(out, loss)
            log.iteration(book.step, {"loss": loss, "lr": lr, **out.parts})
            self._report(ctx, epoch, index, batches, "batch")
        del loader
        broadcast_module(ctx, s.net, buffers_only=True)  # rank 0's BatchNorm statistics
        return stats

    def _epoch(
        self, ctx: DistContext, s: RunSetup, log: RunLog, validator: Validator, epoch: int
    ) -> None:
        """Train one epoch, validate, keep the best model, write the files."""
        cfg, book = self.config, self._book
        start = time.perf_counter()
        stats = self._train_epoch(ctx, s, log, epoch)
        batches = s.sampler.batches_per_epoch
        record = stats.record(epoch=epoch + 1, step=book.step, lr=group_lr(s.optimizer, "head"))
        improved = not validator.enabled
        if validator.due(epoch):
            self._report(ctx, epoch, batches, batches, "validate")
            metrics = validator()
            record["val_top1"], record["val_mAP"] = metrics["top1"], metrics["mAP"]
            improved = self._stopping.update(metrics, epoch + 1)
        elif not validator.enabled:
            self._stopping.best_epoch = epoch + 1
        if ctx.is_main and improved:
            save_checkpoint(self.run_dir, net=s.net, card=s.card, config=to_dict(cfg))
        record["seconds"] = time.perf_counter() - start
        book.epoch = epoch + 1
        book.history.append(record)
        self._save_state(ctx, s)
        if ctx.is_main:
            log.epoch(record)
            logger.info("%s", epoch_line(record, cfg.schedule.epochs))
        self._report(ctx, epoch, batches, batches, "epoch")

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
            best=self._stopping.state(),
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
