"""Vector indexes: the :class:`VectorIndex` protocol, the exact numpy reference and faiss kinds.

The index stores image-level vectors under string ids and knows nothing of identities or the
catalogue. faiss (slow to import) is loaded only when :class:`FaissIndex` or a faiss kind is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wildreid.index.flat import ExactIndex
from wildreid.index.kinds import INDEX_KINDS, IndexFactory, build_index, load_index
from wildreid.index.params import FAISS_KINDS, FlatParams, HNSWParams, IVFParams
from wildreid.index.protocol import PAD_ID, SearchResult, VectorIndex

if TYPE_CHECKING:
    from wildreid.index.faiss_backend import FaissIndex

__all__ = [
    "FAISS_KINDS",
    "INDEX_KINDS",
    "PAD_ID",
    "ExactIndex",
    "FaissIndex",
    "FlatParams",
    "HNSWParams",
    "IVFParams",
    "IndexFactory",
    "SearchResult",
    "VectorIndex",
    "build_index",
    "load_index",
]

_LAZY = frozenset({"FaissIndex"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from wildreid.index import faiss_backend

        return getattr(faiss_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
