"""An on-disk cache of embeddings keyed by (embedding space, image id): only changes are embedded.

It is a :class:`~wildreid.fingerprint_cache.FingerprintCache` (format, invalidation and recovery
are described there) whose key is the space's JSON and whose entries are the L2-normalised float32
vectors as little-endian bytes. A cached vector of another dimension than the space's is ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wildreid.fingerprint_cache import CacheRow, FingerprintCache
from wildreid.types import EmbeddingSpace

__all__ = ["CacheRow", "EmbeddingCache"]


class EmbeddingCache(FingerprintCache):
    """Embeddings on disk, one SQLite file per :class:`~wildreid.types.EmbeddingSpace`.

    Args:
        directory: the cache folder (created on the first store).
        timeout_s: how long to wait for another process's write lock before giving up.
    """

    def __init__(self, directory: str | os.PathLike[str], *, timeout_s: float = 30.0) -> None:
        super().__init__(directory, timeout_s=timeout_s, what="embedding")

    def path_for(self, space: EmbeddingSpace) -> Path:
        """The database file of ``space``."""
        return self.path_for_key(space.to_json())

    def lookup(
        self, space: EmbeddingSpace, rows: Sequence[CacheRow]
    ) -> tuple[dict[str, np.ndarray], list[CacheRow]]:
        """Split ``rows`` into cached vectors and rows to embed.

        Returns:
            The vectors whose fingerprint matches, by image id (each (D,) float32), and the other
            rows in their original order.
        """
        stored, missing = self.lookup_bytes(space.to_json(), rows)
        found: dict[str, np.ndarray] = {}
        for row in rows:
            blob = stored.get(row.image_id)
            if blob is None:
                continue
            vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
            if space.dim and vector.shape[0] != space.dim:
                missing.append(row)
            else:
                found[row.image_id] = vector
        if len(found) != len(stored):
            order = {row.image_id: i for i, row in enumerate(rows)}
            missing.sort(key=lambda row: order[row.image_id])
        return found, missing

    def store(self, space: EmbeddingSpace, rows: Sequence[CacheRow], vectors: np.ndarray) -> int:
        """Save the vectors of ``rows`` (replacing older entries of the same image ids).

        Rows whose file could not be fingerprinted (``size < 0``) are not saved. Failures are
        logged, never raised.

        Shapes:
            vectors: (len(rows), D) float32.

        Returns:
            The number of vectors saved.
        """
        if vectors.ndim != 2 or vectors.shape[0] != len(rows):
            raise ValueError(f"{len(rows)} rows but vectors of shape {vectors.shape}")
        data = np.ascontiguousarray(vectors, dtype="<f4")
        return self.store_bytes(
            space.to_json(), rows, [data[i].tobytes() for i in range(len(rows))]
        )
