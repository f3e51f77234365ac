"""The training configuration: one frozen dataclass tree, loaded from YAML by the CLI.

Sections (YAML keys) and their defaults are the dataclasses below; ``examples/*.yaml`` show
complete files. Paths in a config file are relative to the current directory (where the
command runs), not to the file. Every value is checked when the tree is built
(:class:`~wildreid.config.InvalidValue` names the key); :func:`check_config` adds the checks
that need the registries (model and loss names, loss options) and still loads no weights and
reads no data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from wildreid.config import InvalidValue
from wildreid.data.landmarks import LandmarkAugment
from wildreid.errors import ConfigError
from wildreid.losses import LossSpec, bnneck_baseline_specs
from wildreid.models.cards import DEFAULT_MODEL
from wildreid.training.augment import AugmentConfig
from wildreid.training.data import VAL_KINDS

__all__ = [
    "GROUP_NAMES",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SamplerConfig",
    "ScheduleConfig",
    "StageConfig",
    "TrainConfig",
    "check_config",
]

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def _int(key: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidValue(key, f"must be an integer >= {low}, got {value!r}")


def _number(
    key: str, value: object, low: float, high: float = math.inf, *, open_low: bool = False
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > low if open_low else value >= low) and value <= high:  # type: ignore[operator]
        return
    bounds = f"{'>' if open_low else '>='} {low:g}" + (
        f" and <= {high:g}" if high < math.inf else ""
    )
    raise InvalidValue(key, f"must be a number {bounds}, got {value!r}")


def _choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidValue(key, f"must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which images to train on (``data:``).

    Attributes:
        metadata: the metadata CSV.
        split: an ``image_id,split`` CSV; only its ``train`` rows are used.
        split_column: or a metadata column holding the split (give exactly one of the two).
        root: the folder image paths are relative to; default: the CSV's folder.
        val_fraction: share held out for validation (see ``val_kind``); 0 disables validation
            and ``model.pt`` is then the last epoch's model.
        val_kind: ``disjoint`` (held-out identities: validated on unseen animals) or
            ``closed`` (held-out images of training identities).
        group_column: metadata column (e.g. ``encounter``) whose rows stay on one side of the
            validation carve.
        skip_bad_images: skip unreadable images (logged) instead of stopping.
    """

    metadata: Path
    split: Path | None = None
    split_column: str | None = None
    root: Path | None = None
    val_fraction: float = 0.2
    val_kind: str = "disjoint"
    group_column: str | None = None
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        if (self.split is None) == (self.split_column is None):
            raise InvalidValue("split", "give exactly one of split (a CSV) or split_column")
        if self.split_column is not None and not self.split_column.strip():
            raise InvalidValue("split_column", "is empty")
        _number("val_fraction", self.val_fraction, 0.0, 1.0)
        if self.val_fraction >= 1:
            raise InvalidValue("val_fraction", f"must be below 1, got {self.val_fraction!r}")
        _choice("val_kind", self.val_kind, VAL_KINDS)


@dataclass(frozen=True)
class ModelConfig:
    """The network (``model:``): a pretrained backbone and a fresh embedding head.

    Attributes:
        base: a registered model (``wildreid models list``) or ``timm/<name>`` whose
            backbone and pretrained weights training starts from; its card gives the
            preprocessing (input size, mean/std, crop mode) and the licence.
        weights: a local weights file for ``base`` (as ``--weights``), or ``random`` for no
            pretrained weights (tests, ablations); default: the base's own source.
        pooling: ``gem`` or ``avg`` over the backbone's feature maps; ``none`` keeps the
            backbone's own pooling (needed for ViT/Swin-like backbones).
        embedding_dim: size of the linear projection; ``null`` for none.
        bnneck: a BNNeck after the projection (metric losses read before it, classifiers
            and inference after it).
        input_size: ``[height, width]`` replacing the base's input size.
        landmarks: Landmark-Id: the landmark names (metadata ``landmarks`` keys) fed as
            heatmap channels after RGB, in this order; the first convolution is widened to
            ``3 + k`` inputs (pretrained RGB filters kept). Empty: an RGB network.
        landmark_radius_frac: heatmap blob radius, as a fraction of the image size.
        reconstruction_weight: ``alpha``: add the reconstruction block and the loss term
            ``alpha * BCE(reconstruction, input heatmaps)``; ``null`` for none.
        keep_head: start from the base's head (and reconstruction block) too, not a fresh
            head, and, where the base is a run folder whose ``last.pt`` trained on the same
            data and losses, from its loss parameters (classifier, centres): stage 2 of
            Landmark-Id continues a stage-1 run this way.
    """

    base: str = DEFAULT_MODEL
    weights: str | None = None
    pooling: Literal["gem", "avg", "none"] = "gem"
    embedding_dim: int | None = 512
    bnneck: bool = True
    input_size: tuple[int, int] | None = None
    landmarks: tuple[str, ...] = ()
    landmark_radius_frac: float = 0.05
    reconstruction_weight: float | None = None
    keep_head: bool = False

    def __post_init__(self) -> None:
        if not self.base.strip():
            raise InvalidValue("base", "is empty; name a model, e.g. efficientnet-lite0")
        if self.weights is not None and not self.weights.strip():
            raise InvalidValue("weights", "is empty; give a file, random, or leave it out")
        if self.embedding_dim is not None:
            _int("embedding_dim", self.embedding_dim, 1)
        if self.input_size is not None:
            for value in self.input_size:
                _int("input_size", value, 8)
        if len(set(self.landmarks)) != len(self.landmarks):
            raise InvalidValue("landmarks", f"names repeat: {list(self.landmarks)}")
        _number("landmark_radius_frac", self.landmark_radius_frac, 0.0, 1.0, open_low=True)
        if self.reconstruction_weight is not None:
            _number("reconstruction_weight", self.reconstruction_weight, 0.0)
            if not self.landmarks:
                raise InvalidValue("reconstruction_weight", "needs landmarks to reconstruct")


@dataclass(frozen=True)
class SamplerConfig:
    """P x K batches (``sampler:``): ``p`` identities with ``k`` images each, per process.

    Attributes:
        p: identities per batch.
        k: images per identity (>= 2).
        batches_per_epoch: default: about every image once per epoch.
        spread_over: metadata column (``clip``, ``encounter``, ``video``): an identity's ``k``
            images come from as many of its values as it has, so positives are not frames of
            one clip. Empty cells count as groups of their own.
    """

    p: int = 8
    k: int = 4
    batches_per_epoch: int | None = None
    spread_over: str | None = None

    def __post_init__(self) -> None:
        _int("p", self.p, 1)
        _int("k", self.k, 2)
        if self.batches_per_epoch is not None:
            _int("batches_per_epoch", self.batches_per_epoch, 1)
        if self.spread_over is not None and not self.spread_over.strip():
            raise InvalidValue("spread_over", "is empty; name a metadata column or leave it out")


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer (``optim:``).

    Attributes:
        name: ``adamw`` or ``sgd`` (with ``momentum``, Nesterov).
        lr: peak learning rate of the head and the loss parameters.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        backbone_lr_mult: the backbone's learning rate is ``lr * backbone_lr_mult``.
        momentum: SGD momentum.
    """

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    backbone_lr_mult: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        _number("lr", self.lr, 0.0, open_low=True)
        _number("weight_decay", self.weight_decay, 0.0)
        _number("backbone_lr_mult", self.backbone_lr_mult, 0.0)
        _number("momentum", self.momentum, 0.0, 1.0)
        if self.momentum >= 1:
            raise InvalidValue("momentum", f"must be below 1, got {self.momentum!r}")


GROUP_NAMES = ("all", "stem", "backbone", "head", "reconstruction", "loss")
"""Parameter groups a stage can train: ``stem`` is the first convolution of a landmark
network (widened to take the heatmaps), ``backbone`` the rest of the backbone, ``loss`` every
loss's parameters (classifier weights, centres), ``all`` everything."""


@dataclass(frozen=True)
class StageConfig:
    """One stage of a run (an item of ``schedule.stages``).

    Attributes:
        epochs: how long the stage lasts; ``null`` (last stage only) for the rest of the run.
        train: the parameter groups that learn (:data:`GROUP_NAMES`); the others are frozen
            (no gradient, their BatchNorms in eval mode).
        lr_scale: every rate of the schedule is multiplied by this during the stage.
    """

    epochs: int | None = None
    train: tuple[str, ...] = ("all",)
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs is not None:
            _int("epochs", self.epochs, 1)
        if not self.train:
            raise InvalidValue("train", f"name at least one group of {', '.join(GROUP_NAMES)}")
        for name in self.train:
            _choice("train", name, GROUP_NAMES)
        _number("lr_scale", self.lr_scale, 0.0, open_low=True)


@dataclass(frozen=True)
class ScheduleConfig:
    """Epochs and the learning-rate schedule (``schedule:``), stepped every iteration.

    The factor on every group's rate rises linearly from ``1 / (warmup steps)`` to 1 over
    ``warmup_epochs``, then follows ``cosine`` (down to ``min_lr_ratio`` at the last
    iteration) or ``step`` (times ``gamma`` at each epoch of ``step_epochs``).

    Attributes:
        epochs: epochs to train.
        warmup_epochs: linear warm-up length.
        kind: ``cosine`` or ``step``.
        step_epochs: epochs (1-based, at their start) where ``step`` decays.
        gamma: the ``step`` decay factor.
        min_lr_ratio: the cosine floor, as a fraction of the peak rate.
        freeze_backbone_epochs: the first epochs train only the head and the loss
            parameters (backbone frozen, its BatchNorms in eval mode).
        stages: consecutive stages, each training some parameter groups at a scaled rate
            (see :class:`StageConfig`); epochs after the last stage train everything.
            ``freeze_backbone_epochs: n`` is the stage ``{epochs: n, train: [stem, head,
            reconstruction, loss]}``.
        freeze_backbone_bn: keep the backbone's BatchNorm running statistics at their
            pretrained values for the whole run (BatchNorms in eval mode; their scale and
            shift still learn). P x K batches of a few animals, augmented, can be a poor
            estimate of the statistics: on Holstein2025CowFaces, letting them update cut
            validation top-1 from 13.8% to 8.1% in 15 steps with the backbone's weights
            untouched. Without batch statistics the network can also drift into a collapse
            (on LionData with ``bnneck-baseline.yaml`` every embedding became one point by
            epoch 3), so it is off by default; validate before relying on it.
    """

    epochs: int = 10
    warmup_epochs: int = 1
    kind: Literal["cosine", "step"] = "cosine"
    step_epochs: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    freeze_backbone_epochs: int = 0
    freeze_backbone_bn: bool = False
    stages: tuple[StageConfig, ...] = ()

    def __post_init__(self) -> None:
        _int("epochs", self.epochs, 1)
        _int("warmup_epochs", self.warmup_epochs, 0)
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise InvalidValue(
                "warmup_epochs", f"must be below epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        for value in self.step_epochs:
            _int("step_epochs", value, 1)
        if list(self.step_epochs) != sorted(set(self.step_epochs)):
            raise InvalidValue("step_epochs", f"must increase, got {list(self.step_epochs)}")
        if self.kind == "step" and not self.step_epochs:
            raise InvalidValue("step_epochs", "kind step needs at least one epoch to decay at")
        _number("gamma", self.gamma, 0.0, 1.0, open_low=True)
        _number("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _int("freeze_backbone_epochs", self.freeze_backbone_epochs, 0)
        if self.freeze_backbone_epochs > self.epochs:
            raise InvalidValue(
                "freeze_backbone_epochs",
                f"must be at most epochs ({self.epochs}), got {self.freeze_backbone_epochs}",
            )
        if self.stages and self.freeze_backbone_epochs:
            raise InvalidValue(
                "stages", "give stages or freeze_backbone_epochs, not both (a stage can freeze)"
            )
        fixed = [stage.epochs for stage in self.stages[:-1]]
        if any(e is None for e in fixed):
            raise InvalidValue("stages", "only the last stage may leave out its epochs")
        if (
            sum(e for e in fixed if e is not None)
            + ((self.stages[-1].epochs or 0) if self.stages else 0)
            > self.epochs
        ):
            raise InvalidValue("stages", f"the stages last longer than epochs ({self.epochs})")

    def stage_plan(self) -> tuple[StageConfig, ...]:
        """The stages, with ``freeze_backbone_epochs`` as a first stage and the last one
        running to the end."""
        stages = self.stages or (
            (StageConfig(self.freeze_backbone_epochs, ("stem", "head", "reconstruction", "loss")),)
            if self.freeze_backbone_epochs
            else ()
        )
        used = sum(stage.epochs or 0 for stage in stages)
        if stages and stages[-1].epochs is None:
            return (
                *stages[:-1],
                StageConfig(self.epochs - used, stages[-1].train, stages[-1].lr_scale),
            )
        if used < self.epochs:
            return (*stages, StageConfig(self.epochs - used))
        return tuple(stages)

    def stage_at(self, epoch: int) -> StageConfig:
        """The stage of ``epoch`` (0-based)."""
        end = 0
        for stage in self.stage_plan():
            end += stage.epochs or 0
            if epoch < end:
                return stage
        return self.stage_plan()[-1]


@dataclass(frozen=True)
class RunConfig:
    """How the loop runs (``train:``).

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (under ``torchrun`` on GPUs each
            process takes ``cuda:LOCAL_RANK``).
        precision: ``auto`` (fp32 on CPU; on CUDA bf16 autocast where supported, else fp16
            with a gradient scaler), ``fp32``, ``bf16`` (autocast, also on CPU) or ``fp16``
            (CUDA only, with a gradient scaler).
        grad_clip_norm: clip the gradients' global L2 norm to this; ``null`` for no clipping.
        seed: seeds the initialisation, the sampler, the augmentation and the carve.
        eval_every_epochs: validate every this many epochs (and after the last).
        early_stopping_patience: stop after this many validations without a better mAP.
        workers: image-decoding processes; 0 decodes in the training process.
        deterministic: deterministic kernels (cuDNN, CUDA); CPU runs are deterministic anyway.
        channels_last: channels-last memory format for convolutional backbones.
        eval_batch_size: images per forward pass when validating.
    """

    device: str = "auto"
    precision: Precision = "auto"
    grad_clip_norm: float | None = None
    seed: int = 0
    eval_every_epochs: int = 1
    early_stopping_patience: int | None = None
    workers: int = 0
    deterministic: bool = True
    channels_last: bool = True
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if not self.device.strip():
            raise InvalidValue("device", "is empty; use auto, cpu or cuda[:N]")
        _choice("precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        if self.grad_clip_norm is not None:
            _number("grad_clip_norm", self.grad_clip_norm, 0.0, open_low=True)
        _int("seed", self.seed, 0)
        _int("eval_every_epochs", self.eval_every_epochs, 1)
        if self.early_stopping_patience is not None:
            _int("early_stopping_patience", self.early_stopping_patience, 1)
        _int("workers", self.workers, 0)
        _int("eval_batch_size", self.eval_batch_size, 1)


def _default_losses() -> tuple[LossSpec, ...]:
    return tuple(bnneck_baseline_specs())


def _landmark_augment() -> LandmarkAugment:
    return LandmarkAugment(rotation_deg=360.0, zoom=0.2, translate=0.2, nla=True)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; the resolved tree is saved as ``config.yaml``.

    Attributes:
        losses: weighted loss terms (``name``, ``weight``, ``params``); default: the BNNeck
            baseline (label-smoothed cross-entropy + batch-hard triplet + centre loss).
        landmark_augment: the augmentation of a landmark network (``model.landmarks``), which
            replaces ``augment``: one random affine warp (rotation, zoom, translation) of the
            image and its landmarks, NLA, MLA (:class:`~wildreid.data.landmarks.LandmarkAugment`).
        augment_kind: ``standard`` (``augment``) or ``landmark`` (``landmark_augment``, the
            Landmark-Id recipe; always used by a landmark network, and set for an RGB
            baseline trained the same way).
    """

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    losses: tuple[LossSpec, ...] = field(default_factory=_default_losses)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    landmark_augment: LandmarkAugment = field(default_factory=_landmark_augment)
    augment_kind: Literal["standard", "landmark"] = "standard"
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if not self.losses:
            raise InvalidValue("losses", "give at least one loss")
        names = [spec.name for spec in self.losses]
        _choice("augment_kind", self.augment_kind, ("standard", "landmark"))
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise InvalidValue("losses", f"{repeated[0]!r} is listed twice")
        if self.schedule.freeze_backbone_bn and self.model.weights == "random":
            raise InvalidValue(
                "schedule.freeze_backbone_bn",
                "a randomly initialised backbone has no BatchNorm statistics worth keeping",
            )


def check_config(config: TrainConfig, *, embedding_dim: int = 8) -> None:
    """The checks that need the registries: model name, loss names and their options.

    Nothing is downloaded or read: only the model card is looked up (an ``hf-hub:`` base,
    whose card needs the hub, is not checked here), and the losses are built once for a
    2-class toy problem.

    Raises:
        UnknownComponentError: unknown model or loss name (close names suggested).
        ConfigError: a loss option is unknown or invalid, or the base model cannot be trained
            (naming the key).
    """
    from wildreid.losses import build_loss
    from wildreid.models.factory import model_spec
    from wildreid.models.hub import HF_HUB_PREFIX

    if not config.model.base.startswith(HF_HUB_PREFIX):
        try:
            model_spec(config.model.base)
        except ConfigError as exc:
            raise ConfigError(f"model.base: {exc}") from exc
    dim = config.model.embedding_dim or embedding_dim
    try:
        build_loss(list(config.losses), num_classes=2, embedding_dim=dim, class_counts=[2, 2])
    except ConfigError as exc:
        raise ConfigError(f"losses: {exc}") from exc
