"""What a training run is made of: :func:`build_setup` loads the data and builds the network,
losses, sampler and optimizers into a :class:`RunSetup`; :func:`epoch_loader` gives one epoch's
batches. The loop over them is :class:`~wildreid.training.trainer.Trainer`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from wildreid.config import to_dict
from wildreid.data.dataset import worker_context
from wildreid.data.landmarks import LandmarkInput
from wildreid.data.schema import load_dataset
from wildreid.data.splits import read_split
from wildreid.device import autocast_dtype
from wildreid.errors import ConfigError
from wildreid.evaluation.protocol import split_from_column
from wildreid.models.cards import ModelCard
from wildreid.models.factory import load_model
from wildreid.models.heads import EmbeddingNet
from wildreid.models.weights import check_state_dict_fits
from wildreid.training.augment import build_train_transform
from wildreid.training.checkpoints import LAST_FILENAME, load_training_state, trained_card
from wildreid.training.components import (
    LossPair,
    Scheduler,
    build_net,
    build_optimizers,
    build_scheduler,
)
from wildreid.training.config import TrainConfig
from wildreid.training.data import (
    TrainDataset,
    TrainingData,
    collate_train,
    group_keys,
    prepare_training_data,
)
from wildreid.training.distributed import DistContext
from wildreid.training.sampling import PKSampler
from wildreid.types import EmbeddingSpace

logger = logging.getLogger(__name__)

__all__ = ["RunSetup", "build_setup", "epoch_loader"]


@dataclass(frozen=True)
class RunSetup:
    """Everything one run builds."""

    data: TrainingData
    net: EmbeddingNet
    card: ModelCard
    space: EmbeddingSpace
    dataset: TrainDataset
    sampler: PKSampler
    losses: LossPair
    optimizer: torch.optim.Optimizer
    side: torch.optim.Optimizer | None
    scheduler: Scheduler
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    channels_last: bool
    net_config: dict[str, Any]


def _continue_losses(losses: LossPair, cfg: TrainConfig) -> None:
    """Start the loss parameters (class weights, centres) from those of the run ``model.base``
    names, where it is a run folder (or its ``model.pt``) with a ``last.pt`` of the same data
    and losses: Landmark-Id's stage 2 keeps stage 1's classifier (``model.keep_head``).

    Raises:
        ConfigError: the base run trained on other data or losses, so its class weights would
            belong to other classes.
    """
    base = Path(cfg.model.base)
    if not (base.is_dir() or base.is_file()):
        return  # a registered or hub model: no training run behind it
    state_path = (base if base.is_dir() else base.parent) / LAST_FILENAME
    if not state_path.is_file():
        logger.info(
            "model.keep_head: no %s beside %s; loss parameters start fresh", LAST_FILENAME, base
        )
        return
    state = load_training_state(state_path)
    ours = to_dict(cfg)
    for section in ("data", "losses"):
        if state.config.get(section) != ours[section]:
            raise ConfigError(
                f"model.keep_head: the base run {state_path.parent} trained with another "
                f"{section} section, so its classifier does not fit this run; train with the "
                f"same {section} (or model.keep_head: false)"
            )
    check_state_dict_fits(losses, state.losses, what=f"loss parameters of {state_path}")
    losses.load_state_dict(state.losses)


def build_setup(config: TrainConfig, ctx: DistContext, *, run_dir: Path) -> RunSetup:
    """Load the data, build the network, losses, sampler and optimizers of a run (on
    ``ctx.device``), for the process ``ctx``.

    Raises:
        ConfigError, DataError, WeightsError: as :func:`~wildreid.training.trainer.train`.
    """
    cfg = config
    metadata, root = load_dataset(cfg.data.metadata, root=cfg.data.root)
    split = (
        read_split(cfg.data.split, metadata=metadata)
        if cfg.data.split is not None
        else split_from_column(metadata, str(cfg.data.split_column))
    )
    spread = cfg.sampler.spread_over
    if spread is not None and spread not in metadata.columns:
        raise ConfigError(
            f"sampler.spread_over: {spread!r} is not a column of {cfg.data.metadata} "
            f"(columns: {', '.join(map(str, metadata.columns))})"
        )
    data = prepare_training_data(
        metadata,
        split,
        root=root,
        val_fraction=cfg.data.val_fraction,
        val_kind=cfg.data.val_kind,
        group_column=cfg.data.group_column,
        seed=cfg.train.seed,
    )
    base = load_model(cfg.model.base, weights=cfg.model.weights, device="cpu")
    net, input_size = build_net(base, cfg.model)
    terms = " + ".join(f"{s.weight:g} {s.name}" for s in cfg.losses)
    card = trained_card(base.card, run_dir=run_dir, net=net, input_size=input_size, losses=terms)
    space = EmbeddingSpace(
        model=card.name,
        weights_sha256="training",
        input_size=input_size,
        mean=card.mean,
        std=card.std,
        crop_mode=card.crop_mode,
        dim=card.embedding_dim,
    )
    transform: Any
    if cfg.model.landmarks or cfg.augment_kind == "landmark":
        transform = LandmarkInput(
            input_size=input_size,
            mean=card.mean,
            std=card.std,
            radius_frac=cfg.model.landmark_radius_frac,
            augment=cfg.landmark_augment,
        )
    else:
        transform = build_train_transform(
            cfg.augment,
            input_size=input_size,
            mean=card.mean,
            std=card.std,
            crop_mode=card.crop_mode,
        )
    dataset = TrainDataset(
        data.root,
        data.train,
        labels=data.labels,
        transform=transform,
        landmarks=cfg.model.landmarks,
    )
    sampler = PKSampler(
        dataset.labels,
        p=cfg.sampler.p,
        k=cfg.sampler.k,
        seed=cfg.train.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        batches_per_epoch=cfg.sampler.batches_per_epoch,
        groups=None if spread is None else group_keys(data.train[spread]),
    )
    counts = np.bincount(dataset.labels, minlength=data.labels.num_classes).tolist()
    losses = LossPair(
        cfg,
        num_classes=data.labels.num_classes,
        embedding_dim=net.embedding_dim,
        class_counts=counts,
    )
    channels_last = cfg.train.channels_last and any(isinstance(m, nn.Conv2d) for m in net.modules())
    net.to(ctx.device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if cfg.model.keep_head:
        _continue_losses(losses, cfg)
    losses.to(ctx.device)
    optimizer, side = build_optimizers(net, losses, cfg)
    scheduler = build_scheduler(
        optimizer, cfg.schedule, lr=cfg.optim.lr, steps_per_epoch=sampler.batches_per_epoch
    )
    try:
        dtype = autocast_dtype(cfg.train.precision, ctx.device)
    except ConfigError as exc:
        raise ConfigError(f"train.{exc}") from exc  # names the key: train.precision
    return RunSetup(
        data=data,
        net=net,
        card=card,
        space=space,
        dataset=dataset,
        sampler=sampler,
        losses=losses,
        optimizer=optimizer,
        side=side,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(ctx.device.type, enabled=dtype == torch.float16),
        dtype=dtype,
        channels_last=channels_last,
        net_config=net.config.to_dict() if net.config is not None else {},
    )


def epoch_loader(s: RunSetup, *, workers: int, pin_memory: bool, seed: int) -> DataLoader[Any]:
    """One epoch's batches (a new loader per epoch, so worker processes are seeded from the
    seed, the epoch and the rank, and a resumed run draws the same augmentations)."""
    return DataLoader(
        s.dataset,
        batch_size=s.sampler.batch_size,
        sampler=s.sampler,
        num_workers=workers,
        collate_fn=collate_train,
        pin_memory=pin_memory,
        multiprocessing_context=worker_context() if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )
