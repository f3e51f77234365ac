"""Embed images with a Landmark-Id network: RGB plus one heatmap per landmark.

The heatmaps come from the metadata's ``landmarks`` column (``annotated``), from a landmark
predictor (``predicted``, :mod:`wildreid.models.landmark_predictor`), or are all zero
(``none``: the network then sees no landmark, as for a photo nobody annotated). For the
missing-landmark evaluation, ``hide_prob`` hides each visible landmark at random (keeping
``min_visible``), with a fixed seed so every model sees the same hidden points.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from PIL import Image

from wildreid.data.dataset import bbox_tuple
from wildreid.data.images import load_image
from wildreid.data.landmarks import (
    LandmarkInput,
    landmark_points,
    landmark_table,
    mask_landmarks,
)
from wildreid.errors import ConfigError
from wildreid.models.embedder import EmbedResult
from wildreid.models.heads import EmbeddingNet
from wildreid.types import Embeddings, EmbeddingSpace

__all__ = ["LANDMARK_SOURCES", "LandmarkEmbedConfig", "LandmarkSource", "embed_with_landmarks"]

LANDMARK_SOURCES = ("annotated", "predicted", "none")


class LandmarkSource(Protocol):
    """Predicts landmarks: ``(PIL image) -> (k, 3) points`` in the image's pixels."""

    names: tuple[str, ...]

    def predict(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class LandmarkEmbedConfig:
    """How to feed landmarks (see the module docstring).

    Attributes:
        source: ``annotated``, ``predicted`` or ``none``.
        hide_prob: probability of hiding each visible landmark (0: none hidden).
        min_visible: landmarks kept visible when hiding.
        seed: seed of the hiding.
        batch_size: images per forward pass.
        device: where the network runs.
    """

    source: str = "annotated"
    hide_prob: float = 0.0
    min_visible: int = 0
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.source not in LANDMARK_SOURCES:
            raise ConfigError(
                f"landmarks must be one of {', '.join(LANDMARK_SOURCES)}, got {self.source!r}"
            )
        if not 0 <= self.hide_prob <= 1:
            raise ConfigError(f"hide_prob must be in [0, 1], got {self.hide_prob}")


def embed_with_landmarks(
    net: EmbeddingNet,
    space: EmbeddingSpace,
    metadata: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    config: LandmarkEmbedConfig = LandmarkEmbedConfig(),
    predictor: LandmarkSource | None = None,
) -> EmbedResult:
    """L2-normalised embeddings of every row of ``metadata`` (in order).

    Raises:
        ConfigError: ``net`` has no landmarks, or ``predicted`` without a predictor, or a
            predictor for other landmarks.
        MetadataError: (annotated) no landmarks column, unknown landmark names, a landmark
            outside its image (the message names the row and landmark).
        ImageReadError: an image cannot be read.
    """
    start = time.perf_counter()
    names = net.landmarks
    if not names or net.config is None:
        raise ConfigError("this model takes no landmarks (its card lists none)")
    if config.source == "predicted":
        if predictor is None:
            raise ConfigError("--landmarks predicted needs a landmark predictor (--landmark-model)")
        if tuple(predictor.names) != tuple(names):
            raise ConfigError(
                f"the landmark predictor gives {list(predictor.names)}, the model takes "
                f"{list(names)} (names and order must match)"
            )
    points = (
        landmark_table(metadata, names)
        if config.source == "annotated"
        else np.zeros((len(metadata), len(names), 3), np.float32)
    )
    to_input = LandmarkInput(
        input_size=space.input_size,
        mean=space.mean,
        std=space.std,
        radius_frac=net.config.radius_frac,
    )
    device = torch.device(config.device)
    net = net.to(device).eval()
    rng = np.random.default_rng(config.seed)
    ids = metadata["image_id"].astype(str).tolist()
    paths = metadata["path"].astype(str).tolist()
    cells = (
        metadata["bbox"].fillna("").astype(str).tolist()
        if "bbox" in metadata
        else [""] * len(metadata)
    )
    positions = list(metadata.index)
    vectors: list[np.ndarray] = []
    for begin in range(0, len(ids), config.batch_size):
        images, rows = [], range(begin, min(begin + config.batch_size, len(ids)))
        for i in rows:
            box = bbox_tuple(cells[i], int(positions[i]))
            images.append(load_image(Path(root) / paths[i], bbox=box))
        if config.source == "predicted":
            assert predictor is not None
            batch_points = predictor.predict(list(images))
        else:
            batch_points = (
                np.stack(
                    [
                        landmark_points(
                            points[i],
                            bbox=bbox_tuple(cells[i], int(positions[i])),
                            size=(image.height, image.width),
                            where=f"metadata row {positions[i]} (image_id {ids[i]!r})",
                            names=names,
                        )
                        for i, image in zip(rows, images, strict=True)
                    ]
                )
                if len(images)
                else np.zeros((0, len(names), 3), np.float32)
            )
        if config.hide_prob > 0:
            batch_points = np.stack(
                [
                    mask_landmarks(
                        p, prob=config.hide_prob, min_visible=config.min_visible, rng=rng
                    )
                    for p in batch_points
                ]
            )
        batch = torch.stack(
            [to_input(image, p) for image, p in zip(images, batch_points, strict=True)]
        )
        with torch.inference_mode():
            out = net(batch.to(device)).float()
        vectors.append(F.normalize(out, dim=1).cpu().numpy())
    matrix = (
        np.concatenate(vectors).astype(np.float32)
        if vectors
        else np.zeros((0, net.embedding_dim), np.float32)
    )
    embeddings = Embeddings(np.ascontiguousarray(matrix), tuple(ids), space)
    return EmbedResult(embeddings, (), 0, len(ids), time.perf_counter() - start)
