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
    "LocalFeatures",
    "Matches",
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


def _float32_array(values: np.ndarray, name: str, ndim: int) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=np.float32)
    if array.ndim != ndim:
        raise ConfigError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return array


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Keypoints of one image with their descriptors and detection scores.

    Keypoints are ``(x, y)`` pixels of the image the extractor saw: the (bbox-cropped) image
    resized to ``image_size`` = ``(width, height)``.

    Shapes:
        keypoints: (N, 2) float32.
        descriptors: (N, D) float32.
        scores: (N,) float32; higher is a stronger detection.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        keypoints = _float32_array(self.keypoints, "LocalFeatures.keypoints", 2)
        descriptors = _float32_array(self.descriptors, "LocalFeatures.descriptors", 2)
        scores = _float32_array(self.scores, "LocalFeatures.scores", 1)
        n = keypoints.shape[0]
        if keypoints.shape[1] != 2:
            raise ConfigError(f"LocalFeatures.keypoints must be (N, 2), got {keypoints.shape}")
        if descriptors.shape[0] != n or scores.shape[0] != n:
            raise ConfigError(
                f"LocalFeatures: {n} keypoints but {descriptors.shape[0]} descriptors and "
                f"{scores.shape[0]} scores"
            )
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ConfigError(f"LocalFeatures.image_size {self.image_size} must be (width, height)")
        object.__setattr__(self, "keypoints", keypoints)
        object.__setattr__(self, "descriptors", descriptors)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def dim(self) -> int:
        """The descriptor dimension D."""
        return int(self.descriptors.shape[1])


@dataclass(frozen=True, eq=False)
class Matches:
    """Correspondences between the keypoints of two images.

    Shapes:
        pairs: (M, 2) int64: row ``i`` matches keypoint ``pairs[i, 0]`` of the first image with
            keypoint ``pairs[i, 1]`` of the second.
        scores: (M,) float32 match confidences in 0..1 (1 where the matcher has none).
        inliers: (M,) bool, True for matches consistent with the geometric model; all True
            before verification.
    """

    pairs: np.ndarray
    scores: np.ndarray
    inliers: np.ndarray | None = None

    def __post_init__(self) -> None:
        pairs = np.ascontiguousarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        scores = _float32_array(np.asarray(self.scores).reshape(-1), "Matches.scores", 1)
        if scores.shape[0] != pairs.shape[0]:
            raise ConfigError(f"Matches: {pairs.shape[0]} pairs but {scores.shape[0]} scores")
        if pairs.size and pairs.min() < 0:
            raise ConfigError("Matches.pairs holds a negative keypoint index")
        inliers = (
            np.ones(pairs.shape[0], dtype=np.bool_)
            if self.inliers is None
            else np.asarray(self.inliers, dtype=np.bool_).reshape(-1)
        )
        if inliers.shape[0] != pairs.shape[0]:
            raise ConfigError(
                f"Matches: {pairs.shape[0]} pairs but {inliers.shape[0]} inlier flags"
            )
        object.__setattr__(self, "pairs", pairs)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "inliers", inliers)

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def n_inliers(self) -> int:
        """How many matches the geometric model kept."""
        assert self.inliers is not None  # set in __post_init__
        return int(np.count_nonzero(self.inliers))

    @classmethod
    def empty(cls) -> Matches:
        """No correspondence."""
        return cls(np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32))
