"""The :class:`VectorIndex` protocol, its :class:`SearchResult` and the checks every index shares.

An index stores L2-normalised vectors of one :class:`~wildreid.types.EmbeddingSpace` under string
image ids and answers k-nearest-neighbour queries by inner product (= cosine similarity for unit
vectors). It knows nothing of identities or the catalogue: aggregation per identity lives in
:mod:`wildreid.matching.identification`.

Result convention (all backends): a search always returns ``(Q, k)`` arrays. When fewer than
``k`` hits exist (a small index, or an approximate index that reaches fewer items), the rows are
padded with :data:`PAD_ID` (``""``) and a score of ``-inf``. Padding keeps the shape fixed, so
results of different backends and sizes can be compared and stacked; consumers skip pad entries
with :meth:`SearchResult.valid`. Because ``""`` marks padding, it is refused as an image id.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np

from wildreid.errors import ConfigError, EmbeddingSpaceError
from wildreid.types import Embeddings, EmbeddingSpace

__all__ = [
    "NORM_TOLERANCE",
    "PAD_ID",
    "SearchResult",
    "VectorIndex",
    "check_new_embeddings",
    "check_remove_ids",
    "query_matrix",
    "sidecar_path",
]

PAD_ID = ""
"""Image id of a padding entry in a :class:`SearchResult` (its score is ``-inf``)."""

NORM_TOLERANCE = 1e-2
"""Largest accepted deviation of a vector's L2 norm from 1. Loose on purpose: it catches vectors
that were never normalised (norms of 5-50 are typical), not float16 rounding."""

_NORM_CHUNK_ROWS = 65536
_MAX_NAMED = 5


@dataclass(frozen=True, eq=False)
class SearchResult:
    """Image-level hits of a k-nearest-neighbour search, best first in every row.

    Shapes:
        scores: (Q, k) float32, descending along each row; padding entries are ``-inf``.
        image_ids: (Q, k) object array of ``str``; padding entries are :data:`PAD_ID`.
    """

    scores: np.ndarray
    image_ids: np.ndarray

    def __post_init__(self) -> None:
        if self.scores.ndim != 2 or self.scores.dtype != np.float32:
            raise ConfigError(
                f"SearchResult.scores must be a (Q, k) float32 array, got "
                f"{self.scores.dtype} of shape {self.scores.shape}"
            )
        if self.image_ids.shape != self.scores.shape or self.image_ids.dtype != object:
            raise ConfigError(
                f"SearchResult.image_ids must be an object array of shape {self.scores.shape}, "
                f"got {self.image_ids.dtype} of shape {self.image_ids.shape}"
            )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def k(self) -> int:
        """The number of hits per query (including padding)."""
        return int(self.scores.shape[1])

    def valid(self) -> np.ndarray:
        """Mask of real (non-padding) hits.

        Shapes:
            return: (Q, k) bool.
        """
        return np.asarray(self.image_ids != PAD_ID, dtype=bool)

    def row(self, i: int) -> list[tuple[str, float]]:
        """The real hits of query ``i`` as ``(image_id, score)`` pairs, best first."""
        return [
            (str(image_id), float(score))
            for image_id, score in zip(self.image_ids[i], self.scores[i], strict=True)
            if image_id != PAD_ID
        ]

    @classmethod
    def empty(cls, num_queries: int, k: int) -> SearchResult:
        """A result of ``num_queries`` rows holding only padding."""
        scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
        image_ids = np.full((num_queries, k), PAD_ID, dtype=object)
        return cls(scores, image_ids)


@runtime_checkable
class VectorIndex(Protocol):
    """A k-nearest-neighbour index over L2-normalised vectors of one embedding space.

    Implementations: :class:`~wildreid.index.flat.ExactIndex` (numpy reference, test double) and
    :class:`~wildreid.index.faiss_backend.FaissIndex` (``flat``, ``hnsw``, ``ivf``).
    """

    @property
    def space(self) -> EmbeddingSpace:
        """The embedding space of every stored vector."""
        ...

    @property
    def dim(self) -> int:
        """The vector dimension D."""
        ...

    @property
    def image_ids(self) -> tuple[str, ...]:
        """The stored image ids, in insertion order."""
        ...

    def __len__(self) -> int: ...

    def add(self, embeddings: Embeddings) -> None:
        """Store ``embeddings``.

        Raises:
            EmbeddingSpaceError: another space or another dimension (both are named).
            ConfigError: an id is already stored or empty, or a vector is not unit-norm;
                nothing was added.
        """
        ...

    def remove(self, image_ids: Iterable[str]) -> int:
        """Remove ``image_ids`` and return how many were removed.

        Raises:
            ConfigError: an id is not stored (they are named); nothing was removed.
        """
        ...

    def search(self, queries: Embeddings | np.ndarray, k: int) -> SearchResult:
        """The ``k`` most similar stored vectors of every query, padded as the module says.

        Shapes:
            queries: (Q, D) float32 unit vectors, or Embeddings of this index's space.
            return: SearchResult of shape (Q, k).
        """
        ...

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index (vectors, ids and space) atomically to ``path``."""
        ...

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read an index written by :meth:`save`.

        Raises:
            IndexBackendError: the file is missing, corrupt or of another kind (path named).
        """
        ...


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of an index file that needs one: ``path + ".json"``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _name_some(ids: Iterable[str]) -> str:
    ids = list(ids)
    named = ", ".join(repr(i) for i in ids[:_MAX_NAMED])
    return named + (f" and {len(ids) - _MAX_NAMED} more" if len(ids) > _MAX_NAMED else "")


def _check_unit_norm(vectors: np.ndarray, *, what: str) -> None:
    for start in range(0, vectors.shape[0], _NORM_CHUNK_ROWS):
        chunk = vectors[start : start + _NORM_CHUNK_ROWS]
        norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))  # float32 is ample for 1e-2
        bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
        if bad.size:
            row = start + int(bad[0])
            raise ConfigError(
                f"{what}: vector {row} has L2 norm {norms[bad[0]]:.4g}, not 1; "
                f"L2-normalise embeddings before indexing or searching"
            )


def _check_dim(
    index_space: EmbeddingSpace,
    index_dim: int,
    other: EmbeddingSpace | None,
    dim: int,
    *,
    what: str,
) -> None:
    if dim != index_dim:
        theirs = f"space {other.describe()}" if other is not None else "the queries"
        raise EmbeddingSpaceError(
            f"{what}: vectors of {theirs} have dimension {dim} but the index of space "
            f"{index_space.describe()} has dimension {index_dim}"
        )


def check_new_embeddings(
    index_space: EmbeddingSpace,
    index_dim: int,
    stored: Container[str],
    embeddings: Embeddings,
    *,
    what: str,
) -> None:
    """Validate embeddings about to be added to an index; raise before anything changes.

    Args:
        stored: the ids already in the index (a dict or set: membership must be fast).
        what: the index, for messages (e.g. ``"exact index"``).

    Raises:
        EmbeddingSpaceError: another space or dimension (both spaces named).
        ConfigError: duplicate or empty ids (named), or vectors that are not unit-norm.
    """
    index_space.require_same(embeddings.space, what=what)
    _check_dim(index_space, index_dim, embeddings.space, embeddings.dim, what=what)
    duplicates = [i for i in embeddings.image_ids if i in stored]
    if duplicates:
        raise ConfigError(
            f"{what}: {len(duplicates)} image id(s) already stored: {_name_some(duplicates)}; "
            f"remove them first to replace their vectors"
        )
    if PAD_ID in embeddings.image_ids:
        raise ConfigError(f"{what}: the empty image id is reserved for search padding")
    _check_unit_norm(embeddings.vectors, what=what)


def check_remove_ids(stored: dict[str, int], image_ids: Iterable[str], *, what: str) -> list[str]:
    """The unique ids to remove, in first-seen order; unknown ids raise ConfigError naming them."""
    unique = list(dict.fromkeys(image_ids))
    unknown = [i for i in unique if i not in stored]
    if unknown:
        raise ConfigError(
            f"{what}: {len(unknown)} image id(s) are not stored: {_name_some(unknown)}; "
            f"nothing was removed"
        )
    return unique


def query_matrix(
    queries: Embeddings | np.ndarray,
    index_space: EmbeddingSpace,
    index_dim: int,
    k: int,
    *,
    what: str,
) -> np.ndarray:
    """Validate queries and ``k``; return a C-contiguous (Q, D) float32 matrix (not a copy).

    Raises:
        EmbeddingSpaceError: Embeddings of another space, or another dimension.
        ConfigError: ``k < 1``; an array that is not (Q, D) float32 unit vectors.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"{what}: k must be a positive integer, got {k!r}")
    if isinstance(queries, Embeddings):
        index_space.require_same(queries.space, what=what)
        _check_dim(index_space, index_dim, queries.space, queries.dim, what=what)
        matrix = queries.vectors
    else:
        matrix = np.asarray(queries)
        if matrix.ndim != 2 or matrix.dtype != np.float32:
            raise ConfigError(
                f"{what}: queries must be a (Q, D) float32 array, got {matrix.dtype} of shape "
                f"{matrix.shape}"
            )
        _check_dim(index_space, index_dim, None, int(matrix.shape[1]), what=what)
        if not np.isfinite(matrix).all():
            raise ConfigError(f"{what}: queries contain NaN or infinite values")
    _check_unit_norm(matrix, what=f"{what} query")
    return np.ascontiguousarray(matrix)
