"""Landmarks as network input (Landmark-Id): per-row landmark arrays, heatmaps, augmentation.

A landmark-aware model takes ``k`` heatmap channels after the RGB ones, one per landmark in the
order its card lists. :func:`landmark_table` turns the metadata ``landmarks`` column into a
``(N, k, 3)`` array ``[x, y, visible]``; :func:`render_heatmaps` draws each visible landmark as
a disk of radius ``radius_frac`` of the image size (the mean of height and width), smoothed by
a Gaussian, peak 1; an invisible or unlabelled landmark (COCO visibility 0 or 1, or absent from
the cell) gives an all-zero channel. :func:`noisy_landmarks` (NLA) shifts each blob by up to its
radius; :func:`mask_landmarks` (MLA) blanks landmarks with probability ``p`` while keeping at
least ``min_visible``. :func:`affine_points` moves points with the matrix that warps the image,
so geometric augmentation applies identically to both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from PIL import Image

from wildreid.data.schema import parse_landmarks
from wildreid.errors import ConfigError, MetadataError

__all__ = [
    "LandmarkAugment",
    "LandmarkInput",
    "affine_points",
    "check_inside",
    "landmark_points",
    "landmark_table",
    "mask_landmarks",
    "noisy_landmarks",
    "radius_px",
    "render_heatmaps",
]

Points = npt.NDArray[np.float32]
"""(k, 3) float32: x, y in pixels and 1.0 for a visible landmark, 0.0 otherwise."""


def landmark_table(rows: pd.DataFrame, names: Sequence[str]) -> npt.NDArray[np.float32]:
    """The landmarks of each row in the order ``names``.

    Shapes:
        returns: (N, k, 3) float32 ``[x, y, visible]`` (``visible`` 1 for COCO visibility 2).

    Raises:
        MetadataError: no ``landmarks`` column; a cell that does not parse; a landmark name the
            model does not know (the message names the row, image id and landmark); a landmark
            of the model that no row has (the data and the model disagree).
    """
    if not names:
        raise MetadataError("the model has no landmarks; use it without --landmarks")
    if "landmarks" not in rows.columns:
        raise MetadataError(
            f"metadata has no landmarks column; the model needs landmarks {', '.join(names)} "
            "(or use --landmarks none / predicted)"
        )
    index = {name: i for i, name in enumerate(names)}
    out = np.zeros((len(rows), len(names), 3), dtype=np.float32)
    seen: set[str] = set()
    ids = rows["image_id"].astype(str).tolist() if "image_id" in rows else [""] * len(rows)
    positions = list(rows.index)
    for r, cell in enumerate(rows["landmarks"].fillna("").astype(str)):
        where = f"metadata row {positions[r]} (image_id {ids[r]!r})"
        try:
            marks = parse_landmarks(cell)
        except ValueError as exc:
            raise MetadataError(f"{where}: landmarks: {exc}") from exc
        for name, mark in marks.items():
            if name not in index:
                raise MetadataError(
                    f"{where}: landmark {name!r} is not one of the model's landmarks "
                    f"({', '.join(names)}); the model and the data must name the same points"
                )
            seen.add(name)
            out[r, index[name]] = (mark.x, mark.y, 1.0 if mark.visibility == 2 else 0.0)
    absent = [name for name in names if name not in seen]
    if absent and len(rows):
        raise MetadataError(
            f"no metadata row has landmark {absent[0]!r} of the model's {', '.join(names)}; "
            "the model and the data must name the same points"
        )
    return out


def check_inside(
    points: Points, size: tuple[int, int], *, where: str, names: Sequence[str]
) -> None:
    """Raise for a visible landmark outside an image of ``size`` = (height, width).

    Raises:
        MetadataError: naming ``where`` (row, image id) and the landmark.
    """
    h, w = size
    for name, (x, y, visible) in zip(names, points, strict=True):
        if visible and not (0 <= x <= w and 0 <= y <= h):
            raise MetadataError(
                f"{where}: landmark {name!r} at ({x:g}, {y:g}) lies outside the "
                f"{w}x{h} image; fix it or mark it invisible (visibility 0 or 1)"
            )


def radius_px(radius_frac: float, size: tuple[int, int]) -> float:
    """The blob radius in pixels for an image of ``size`` = (height, width)."""
    return float(radius_frac * (size[0] + size[1]) / 2)


def render_heatmaps(points: Points, size: tuple[int, int], *, radius_frac: float) -> Points:
    """One channel per landmark: a Gaussian-smoothed disk (peak 1), zeros when invisible.

    Shapes:
        points: (k, 3); returns (k, H, W) float32 in [0, 1].
    """
    h, w = size
    radius = max(radius_px(radius_frac, size), 0.5)
    sigma = max(radius / 4, 0.5)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5  # pixel centres
    out = np.zeros((len(points), h, w), dtype=np.float32)
    for i, (x, y, visible) in enumerate(points):
        if not visible:
            continue
        disk = (((xs - x) ** 2 + (ys - y) ** 2) <= radius**2).astype(np.float32)
        blob = cv2.GaussianBlur(disk, (0, 0), sigmaX=sigma)
        peak = float(blob.max())
        if peak > 0:
            out[i] = blob / peak
    return out


def affine_points(points: Points, matrix: npt.NDArray[np.float64], size: tuple[int, int]) -> Points:
    """Points moved by the 2x3 ``matrix`` (as ``cv2.warpAffine`` moves pixels); those that
    leave the ``size`` = (height, width) output become invisible."""
    out = points.copy()
    xy = np.concatenate([points[:, :2], np.ones((len(points), 1), np.float32)], axis=1)
    out[:, :2] = xy @ matrix.T.astype(np.float32)
    h, w = size
    inside = (out[:, 0] >= 0) & (out[:, 0] <= w) & (out[:, 1] >= 0) & (out[:, 1] <= h)
    out[:, 2] = np.where(inside, points[:, 2], 0.0)
    return out


def noisy_landmarks(points: Points, radius: float, rng: np.random.Generator) -> Points:
    """NLA: each landmark shifted by a uniform offset of length at most ``radius`` pixels."""
    out = points.copy()
    angle = rng.uniform(0, 2 * np.pi, len(points))
    length = radius * np.sqrt(rng.uniform(0, 1, len(points)))
    out[:, 0] += (length * np.cos(angle)).astype(np.float32)
    out[:, 1] += (length * np.sin(angle)).astype(np.float32)
    return out


def mask_landmarks(
    points: Points, *, prob: float, min_visible: int, rng: np.random.Generator
) -> Points:
    """MLA: blank each visible landmark with probability ``prob``, keeping at least
    ``min_visible`` of them (or all, when fewer are visible)."""
    out = points.copy()
    visible = np.flatnonzero(points[:, 2] > 0)
    drop = visible[rng.uniform(0, 1, len(visible)) < prob]
    room = max(0, len(visible) - min_visible)
    if len(drop) > room:
        drop = rng.choice(drop, size=room, replace=False)
    out[drop, 2] = 0.0
    return out


@dataclass(frozen=True)
class LandmarkAugment:
    """Training augmentation of an image and its landmarks (all off: inference).

    Attributes:
        rotation_deg: rotation uniform in +-``rotation_deg`` (360: any angle).
        zoom: scale uniform in ``[1 - zoom, 1 + zoom]``.
        translate: shift uniform in +-``translate`` of the image size, per axis.
        nla: noisy landmark augmentation (each blob shifted by up to its radius).
        mla_prob: missing landmark augmentation: blank probability (0: off).
        mla_min_visible: MLA keeps at least this many landmarks visible.
    """

    rotation_deg: float = 0.0
    zoom: float = 0.0
    translate: float = 0.0
    nla: bool = False
    mla_prob: float = 0.0
    mla_min_visible: int = 2

    def __post_init__(self) -> None:
        checks = {
            "rotation_deg": (self.rotation_deg, 0.0, 360.0),
            "zoom": (self.zoom, 0.0, 0.9),
            "translate": (self.translate, 0.0, 0.5),
            "mla_prob": (self.mla_prob, 0.0, 1.0),
        }
        for name, (value, low, high) in checks.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (low <= value <= high)
            ):
                raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
        if isinstance(self.mla_min_visible, bool) or not isinstance(self.mla_min_visible, int):
            raise ConfigError(f"mla_min_visible must be an integer, got {self.mla_min_visible!r}")
        if self.mla_min_visible < 0:
            raise ConfigError(f"mla_min_visible must be >= 0, got {self.mla_min_visible}")


@dataclass(frozen=True)
class LandmarkInput:
    """``(PIL image, points) -> (3 + k, H, W)`` tensor: the RGB image resized to
    ``input_size`` (stretched) and normalised, then the heatmaps of the landmarks in the
    same frame; with ``augment`` the same random affine warp moves both.

    Args:
        input_size: (height, width).
        mean, std: RGB normalisation.
        radius_frac: blob radius as a fraction of the image size.
        augment: training augmentation; ``None`` at inference.
        seed: seeds the augmentation's generator (drawn afresh per call from torch's).
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    radius_frac: float = 0.05
    augment: LandmarkAugment | None = None

    def __call__(self, image: Image.Image, points: Points | None = None) -> torch.Tensor:
        h, w = self.input_size
        if points is None:
            points = np.zeros((0, 3), np.float32)
        source = np.asarray(image.convert("RGB"), dtype=np.uint8)
        sy, sx = h / source.shape[0], w / source.shape[1]
        pixels: Any = cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA)
        pts = points.copy()
        pts[:, 0] *= sx
        pts[:, 1] *= sy
        aug = self.augment
        if aug is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
            angle = rng.uniform(-aug.rotation_deg, aug.rotation_deg)
            scale = rng.uniform(1 - aug.zoom, 1 + aug.zoom)
            matrix = np.asarray(cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale), np.float64)
            matrix[:, 2] += rng.uniform(-aug.translate, aug.translate, 2) * np.array([w, h])
            fill = tuple(int(255 * m) for m in self.mean)
            pixels = cv2.warpAffine(
                pixels, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=fill
            )
            pts = affine_points(pts, matrix, (h, w))
            if aug.nla:
                pts = noisy_landmarks(pts, radius_px(self.radius_frac, (h, w)), rng)
            if aug.mla_prob > 0:
                pts = mask_landmarks(
                    pts, prob=aug.mla_prob, min_visible=aug.mla_min_visible, rng=rng
                )
        rgb = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 255
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        heat = torch.from_numpy(render_heatmaps(pts, (h, w), radius_frac=self.radius_frac))
        return torch.cat([(rgb - mean) / std, heat], dim=0)


def landmark_points(
    points: Points,
    *,
    bbox: tuple[float, float, float, float] | None,
    size: tuple[int, int],
    where: str,
    names: Sequence[str],
) -> Points:
    """A row's points in the frame of its loaded image of ``size`` = (height, width).

    Without a box the image is the full photo and a visible landmark outside it is an error;
    with one the points are shifted by the box corner and those it cropped away become
    invisible.

    Raises:
        MetadataError: a visible landmark outside the image (names ``where`` and the landmark).
    """
    if bbox is None:
        check_inside(points, size, where=where, names=names)
        return points
    out = points.copy()
    out[:, 0] -= bbox[0]
    out[:, 1] -= bbox[1]
    h, w = size
    inside = (out[:, 0] >= 0) & (out[:, 0] <= w) & (out[:, 1] >= 0) & (out[:, 1] <= h)
    out[:, 2] = np.where(inside, out[:, 2], 0.0)
    return out
