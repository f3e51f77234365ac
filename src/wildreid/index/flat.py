"""The exact reference index: brute-force inner products in numpy.

:class:`ExactIndex` scores every stored vector (a matrix product over blocks of the gallery, so
memory stays bounded) and keeps the ``k`` best. Ties are broken by insertion position (the
earlier-added vector first), so results are fully deterministic. It doubles as the test double
of :class:`~wildreid.index.protocol.VectorIndex` and as the ground truth of the approximate
faiss indexes. Saved as one ``.npz`` file (vectors, ids, space).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Self

import numpy as np

from wildreid.errors import ConfigError, EmbeddingSpaceError, IndexBackendError
from wildreid.files import atomic_path
from wildreid.index.protocol import (
    PAD_ID,
    SearchResult,
    check_new_embeddings,
    check_remove_ids,
    query_matrix,
)
from wildreid.ranking import top_k
from wildreid.types import Embeddings, EmbeddingSpace

__all__ = ["EXACT_FORMAT", "ExactIndex", "topk_stable"]

logger = logging.getLogger(__name__)

EXACT_FORMAT = "wildreid.exact-index"
_FORMAT_VERSION = 1
_QUERY_CHUNK = 1024
_BLOCK_ELEMENTS = 1 << 24  # scores per block: 64 MiB of float32
_MIN_BLOCK_ROWS = 4096
_PAD_POSITION = np.iinfo(np.int64).max


def _block_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``min(k, B)`` best columns of every row, best first; ties go to the smaller column.

    Shapes:
        scores: (Q, B) float32.
        return: scores (Q, kb) and column positions (Q, kb) int64.
    """
    columns = top_k(scores, k).astype(np.int64)
    return np.take_along_axis(scores, columns, axis=1), columns


def topk_stable(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products; ties broken by gallery row, missing hits padded.

    Args:
        gallery: the stored vectors.
        queries: the query vectors.
        k: hits per query; rows with fewer gallery vectors are padded with ``-inf`` and
            position ``iinfo(int64).max``.

    Shapes:
        gallery: (N, D) float32. queries: (Q, D) float32.
        return: scores (Q, k) float32 descending, gallery positions (Q, k) int64.
    """
    num_queries, n = queries.shape[0], gallery.shape[0]
    best_scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
    best_positions = np.full((num_queries, k), _PAD_POSITION, dtype=np.int64)
    for q0 in range(0, num_queries, _QUERY_CHUNK):
        chunk = queries[q0 : q0 + _QUERY_CHUNK]
        block_rows = max(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS // chunk.shape[0])
        top_s = best_scores[q0 : q0 + _QUERY_CHUNK]
        top_p = best_positions[q0 : q0 + _QUERY_CHUNK]
        for start in range(0, n, block_rows):
            block = gallery[start : start + block_rows]
            if chunk.shape[0] == 1:  # numpy's own loop streams the block faster than sgemv
                scores = np.einsum("ij,j->i", block, chunk[0])[None, :]
            else:
                scores = chunk @ block.T
            block_s, block_p = _block_topk(scores, k)
            all_s = np.concatenate([top_s, block_s], axis=1)
            all_p = np.concatenate([top_p, block_p + start], axis=1)
            order = top_k(all_s, k, key=all_p)
            top_s = np.take_along_axis(all_s, order, axis=1)
            top_p = np.take_along_axis(all_p, order, axis=1)
        best_scores[q0 : q0 + _QUERY_CHUNK] = top_s
        best_positions[q0 : q0 + _QUERY_CHUNK] = top_p
    return best_scores, best_positions


class ExactIndex:
    """Brute-force inner-product index in numpy (see the module docstring).

    Args:
        space: the embedding space of every vector this index will hold.
        dim: the vector dimension; must equal ``space.dim`` when that is set.

    Raises:
        EmbeddingSpaceError: ``dim`` contradicts ``space.dim``.
        ConfigError: ``dim < 1``.
    """

    def __init__(self, *, space: EmbeddingSpace, dim: int) -> None:
        if dim < 1:
            raise ConfigError(f"index dimension must be >= 1, got {dim}")
        if space.dim and space.dim != dim:
            raise EmbeddingSpaceError(f"index dimension {dim} contradicts space {space.describe()}")
        self._space = space
        self._dim = dim
        self._buffer = np.empty((0, dim), dtype=np.float32)
        self._n = 0
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        self._id_array: np.ndarray | None = None

    @property
    def space(self) -> EmbeddingSpace:
        """The embedding space of every stored vector."""
        return self._space

    @property
    def dim(self) -> int:
        """The vector dimension D."""
        return self._dim

    @property
    def image_ids(self) -> tuple[str, ...]:
        """The stored image ids, in insertion order."""
        return tuple(self._ids)

    @property
    def vectors(self) -> np.ndarray:
        """A read-only view of the stored vectors, in insertion order.

        Shapes:
            return: (N, D) float32.
        """
        view = self._buffer[: self._n]
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"ExactIndex({self._n} vectors, {self._space.describe()})"

    def add(self, embeddings: Embeddings) -> None:
        """Append ``embeddings`` (copied); see :meth:`VectorIndex.add` for the errors."""
        check_new_embeddings(self._space, self._dim, self._position, embeddings, what="exact index")
        m = len(embeddings)
        if self._n + m > self._buffer.shape[0]:
            capacity = max(self._n + m, 2 * self._buffer.shape[0])
            grown = np.empty((capacity, self._dim), dtype=np.float32)
            grown[: self._n] = self._buffer[: self._n]
            self._buffer = grown
        self._buffer[self._n : self._n + m] = embeddings.vectors
        for offset, image_id in enumerate(embeddings.image_ids):
            self._position[image_id] = self._n + offset
        self._ids.extend(embeddings.image_ids)
        self._n += m
        self._id_array = None
        logger.debug("exact index: added %d vectors, %d stored", m, self._n)

    def remove(self, image_ids: Iterable[str]) -> int:
        """Remove ``image_ids``; the others keep their relative order (and tie priority)."""
        unique = check_remove_ids(self._position, image_ids, what="exact index")
        if not unique:
            return 0
        keep = np.ones(self._n, dtype=bool)
        keep[[self._position[i] for i in unique]] = False
        self._buffer = np.ascontiguousarray(self._buffer[: self._n][keep])
        self._ids = [i for i, kept in zip(self._ids, keep, strict=True) if kept]
        self._position = {image_id: p for p, image_id in enumerate(self._ids)}
        self._n = len(self._ids)
        self._id_array = None
        return len(unique)

    def search(self, queries: Embeddings | np.ndarray, k: int) -> SearchResult:
        """Exact top-``k`` by inner product, ties by insertion order, padded with ``""``/-inf.

        Shapes:
            queries: (Q, D) float32 unit vectors, or Embeddings of this space.
            return: SearchResult (Q, k).
        """
        matrix = query_matrix(queries, self._space, self._dim, k, what="exact index")
        scores, positions = topk_stable(self._buffer[: self._n], matrix, int(k))
        if self._id_array is None:
            self._id_array = np.array([*self._ids, PAD_ID], dtype=object)
        positions = np.where(positions == _PAD_POSITION, self._n, positions)
        return SearchResult(scores, self._id_array[positions])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one ``.npz`` file (vectors, ids, space) atomically to exactly ``path``."""
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez(
                handle,
                format=np.array(EXACT_FORMAT),
                version=np.array(_FORMAT_VERSION),
                space=np.array(self._space.to_json()),
                dim=np.array(self._dim),
                vectors=self._buffer[: self._n],
                image_ids=np.array(self._ids, dtype=np.str_).reshape(-1),
            )
        logger.info("saved exact index of %d vectors to %s", self._n, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a file written by :meth:`save`.

        Raises:
            IndexBackendError: missing, unreadable, corrupt, or not an exact index (path named).
        """
        path = Path(path)
        hint = "re-create it with ExactIndex.save from the embeddings"
        try:
            # Our own handle: np.load leaks the file it opened when the zip is corrupt.
            with path.open("rb") as handle:
                data = np.load(handle, allow_pickle=False)
                if not isinstance(data, np.lib.npyio.NpzFile):
                    raise IndexBackendError(f"{path} is not a wildreid exact index; {hint}")
                if "format" not in data.files or str(data["format"]) != EXACT_FORMAT:
                    raise IndexBackendError(f"{path} is not a wildreid exact index; {hint}")
                if int(data["version"]) != _FORMAT_VERSION:
                    raise IndexBackendError(
                        f"{path} is an exact index of version {data['version']}, this wildreid "
                        f"reads version {_FORMAT_VERSION}; {hint}"
                    )
                space = EmbeddingSpace.from_json(str(data["space"]))
                dim = int(data["dim"])
                vectors = np.ascontiguousarray(data["vectors"])
                ids = tuple(str(i) for i in data["image_ids"])
        except IndexBackendError:
            raise
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, ConfigError) as exc:
            raise IndexBackendError(f"cannot read exact index {path}: {exc}; {hint}") from exc
        try:
            index = cls(space=space, dim=dim)
            index.add(Embeddings(vectors, ids, space))
        except (ConfigError, EmbeddingSpaceError) as exc:
            raise IndexBackendError(f"exact index {path} is inconsistent: {exc}; {hint}") from exc
        return index
