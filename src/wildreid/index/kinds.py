"""Named index kinds: build an index by name, load any saved index by sniffing its file.

=========  ====================================================  =========================
kind       implementation                                        parameters
=========  ====================================================  =========================
``exact``  :class:`~wildreid.index.flat.ExactIndex` (numpy)      none
``flat``   faiss ``IndexFlatIP`` (exact)                         none
``hnsw``   faiss ``IndexHNSWFlat`` (approximate)                 ``m``, ``ef_construction``,
                                                                 ``ef_search``
``ivf``    faiss ``IndexIVFFlat`` (approximate)                  ``nlist``, ``nprobe``
=========  ====================================================  =========================

faiss is imported only when a faiss kind is built or loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from wildreid.errors import ConfigError, IndexBackendError
from wildreid.index.flat import ExactIndex
from wildreid.index.params import FAISS_KINDS
from wildreid.index.protocol import VectorIndex, sidecar_path
from wildreid.registry import Registry
from wildreid.types import EmbeddingSpace

__all__ = ["INDEX_KINDS", "IndexFactory", "build_index", "load_index"]

_ZIP_MAGIC = b"PK\x03\x04"


class IndexFactory(Protocol):
    """Builds an empty index of one kind."""

    def __call__(self, *, space: EmbeddingSpace, dim: int, **params: int) -> VectorIndex: ...


def _exact(*, space: EmbeddingSpace, dim: int, **params: int) -> VectorIndex:
    if params:
        raise ConfigError(f"the exact index takes no parameters, got {', '.join(sorted(params))}")
    return ExactIndex(space=space, dim=dim)


def _faiss_factory(kind: str) -> IndexFactory:
    def build(*, space: EmbeddingSpace, dim: int, **params: int) -> VectorIndex:
        from wildreid.index.faiss_backend import FaissIndex

        return FaissIndex(kind, space=space, dim=dim, **params)

    build.__doc__ = f"Build an empty faiss {kind} index."
    return build


INDEX_KINDS: Registry[IndexFactory] = Registry("index kind")
INDEX_KINDS.add("exact", _exact)
for _kind in FAISS_KINDS:
    INDEX_KINDS.add(_kind, _faiss_factory(_kind))


def build_index(kind: str, *, space: EmbeddingSpace, dim: int, **params: int) -> VectorIndex:
    """An empty index of ``kind`` (a name in :data:`INDEX_KINDS`).

    Raises:
        UnknownComponentError: ``kind`` is not registered (close names are suggested).
        ConfigError: a parameter the kind does not take, or an invalid value.
        EmbeddingSpaceError: ``dim`` contradicts ``space.dim``.
    """
    return INDEX_KINDS.get(kind)(space=space, dim=dim, **params)


def load_index(path: str | os.PathLike[str]) -> VectorIndex:
    """Load an index saved by any kind's ``save``, telling the kinds apart by their files.

    A faiss index has a JSON sidecar at ``path + ".json"``; an exact index is one ``.npz`` (zip)
    file.

    Raises:
        IndexBackendError: nothing at ``path``, a file of no known kind, or a corrupt one.
    """
    path = Path(path)
    if sidecar_path(path).exists():
        from wildreid.index.faiss_backend import FaissIndex

        return FaissIndex.load(path)
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise IndexBackendError(f"cannot read index {path}: {exc}") from exc
    if magic == _ZIP_MAGIC:
        return ExactIndex.load(path)
    raise IndexBackendError(
        f"{path} is neither an exact index (.npz) nor a faiss index with its sidecar "
        f"{sidecar_path(path).name}; re-create it from the embeddings"
    )
