"""Small frozen value objects that cross module boundaries.

Shapes are validated on creation, so a malformed object never travels far.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from wildreid.errors import ConfigError, EmbeddingSpaceError
from wildreid.ids import first_repeat

__all__ = [
    "CROP_MODES",
    "DECISIONS",
    "Candidate",
    "EmbeddingSpace",
    "Embeddings",
    "Identification",
]

CROP_MODES = ("stretch", "center")
"""How an image (or its bbox crop) is fitted to the model's input size: ``stretch`` resizes it to
the input size ignoring the aspect ratio (the usual re-ID choice, nothing is cut off); ``center``
resizes the shorter side and crops the centre (the ImageNet convention)."""

DECISIONS = ("known", "new", "review")
Decision = Literal["known", "new", "review"]


@dataclass(frozen=True)
class EmbeddingSpace:
    """Everything that decides what a vector means: model, exact weights and preprocessing.

    Two vectors are comparable only when their spaces are equal. ``weights_sha256`` is the
    SHA-256 of the weights file (or of the state dict for weights built in memory).
    """

    model: str
    weights_sha256: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_mode: str = "stretch"
    dim: int = 0

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("EmbeddingSpace.model must be a non-empty name")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ConfigError(
                f"EmbeddingSpace.input_size {self.input_size} must be (height, width)"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("EmbeddingSpace.mean and std must be 3 numbers each, std > 0")
        if self.crop_mode not in CROP_MODES:
            raise ConfigError(f"EmbeddingSpace.crop_mode {self.crop_mode!r} not in {CROP_MODES}")
        if self.dim < 0:
            raise ConfigError(f"EmbeddingSpace.dim {self.dim} must be >= 0")

    def describe(self) -> str:
        """A short human-readable identification of the space."""
        h, w = self.input_size
        return (
            f"{self.model} (weights {self.weights_sha256[:12]}, {h}x{w} {self.crop_mode}, "
            f"dim {self.dim})"
        )

    def to_json(self) -> str:
        """JSON text; :meth:`from_json` restores an equal object."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EmbeddingSpace:
        """Parse :meth:`to_json` output.

        Raises:
            ConfigError: the text is not a serialised EmbeddingSpace.
        """
        try:
            raw: dict[str, Any] = json.loads(text)
            return cls(
                model=str(raw["model"]),
                weights_sha256=str(raw["weights_sha256"]),
                input_size=(int(raw["input_size"][0]), int(raw["input_size"][1])),
                mean=(float(raw["mean"][0]), float(raw["mean"][1]), float(raw["mean"][2])),
                std=(float(raw["std"][0]), float(raw["std"][1]), float(raw["std"][2])),
                crop_mode=str(raw.get("crop_mode", "stretch")),
                dim=int(raw.get("dim", 0)),
            )
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a serialised EmbeddingSpace: {text[:120]!r}") from exc

    def require_same(self, other: EmbeddingSpace, *, what: str) -> None:
        """Raise EmbeddingSpaceError naming both spaces unless ``other`` equals this space.

        Args:
            what: what is being mixed, for the message (e.g. ``"index /x/gallery.faiss"``).
        """
        if other != self:
            raise EmbeddingSpaceError(
                f"{what}: vectors of space {other.describe()} cannot be mixed with "
                f"space {self.describe()}; embed both with the same model and weights"
            )


@dataclass(frozen=True, eq=False)
class Embeddings:
    """L2-normalised vectors, one per image, all from one :class:`EmbeddingSpace`.

    Shapes:
        vectors: (N, D) float32, C-contiguous.
        image_ids: N unique strings.
    """

    vectors: np.ndarray
    image_ids: tuple[str, ...]
    space: EmbeddingSpace

    def __post_init__(self) -> None:
        vectors = self.vectors
        if vectors.ndim != 2:
            raise ConfigError(f"Embeddings.vectors must be 2-D (N, D), got shape {vectors.shape}")
        if vectors.dtype != np.float32:
            raise ConfigError(f"Embeddings.vectors must be float32, got {vectors.dtype}")
        if len(self.image_ids) != vectors.shape[0]:
            raise ConfigError(
                f"Embeddings has {vectors.shape[0]} vectors but {len(self.image_ids)} image ids"
            )
        if first_repeat(self.image_ids) is not None:
            raise ConfigError("Embeddings.image_ids must be unique")
        if self.space.dim and vectors.shape[1] != self.space.dim:
            raise EmbeddingSpaceError(
                f"vectors have dimension {vectors.shape[1]} but space {self.space.describe()} "
                f"has dimension {self.space.dim}"
            )
        if not np.isfinite(vectors).all():
            raise ConfigError("Embeddings.vectors contain NaN or infinite values")

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def dim(self) -> int:
        """The vector dimension D."""
        return int(self.vectors.shape[1])

    def select(self, image_ids: list[str] | tuple[str, ...]) -> Embeddings:
        """The embeddings of ``image_ids``, in that order.

        Raises:
            ConfigError: an id is not present (the first few missing ids are named).
        """
        position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        missing = [i for i in image_ids if i not in position]
        if missing:
            raise ConfigError(
                f"{len(missing)} image id(s) have no embedding, e.g. {', '.join(missing[:5])}"
            )
        rows = np.fromiter((position[i] for i in image_ids), dtype=np.int64, count=len(image_ids))
        return Embeddings(np.ascontiguousarray(self.vectors[rows]), tuple(image_ids), self.space)


@dataclass(frozen=True)
class Candidate:
    """One proposed identity for a query, with the gallery image that supports it best."""

    identity: str
    image_id: str
    score: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.score):
            raise ConfigError(f"Candidate score must be finite, got {self.score}")


@dataclass(frozen=True)
class Identification:
    """The answer for one query: ranked candidates (best first) and the open-set decision."""

    query_id: str
    candidates: tuple[Candidate, ...]
    decision: Decision
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ConfigError(f"Identification.decision {self.decision!r} not in {DECISIONS}")
        scores = [c.score for c in self.candidates]
        if scores != sorted(scores, reverse=True):
            raise ConfigError("Identification.candidates must be sorted by descending score")
