"""Faiss indexes behind the :class:`~wildreid.index.protocol.VectorIndex` protocol.

Kinds (all by inner product, i.e. cosine similarity of unit vectors):

- ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact; removal native.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``, approximate graph search. Faiss cannot delete from an
  HNSW graph, so :meth:`FaissIndex.remove` rebuilds the graph from the stored vectors (which
  ``IndexHNSWFlat`` keeps in full): O(N log N), logged; batch removals.
- ``ivf``: ``IndexIVFFlat`` with spherical k-means, using its own ids. Not wrapped in
  ``IndexIDMap2``: that wrapper's ``remove_ids`` assumes the sub-index renumbers the remaining
  vectors like a flat index does, which IVF does not, and returns wrong ids after a removal.
  The coarse quantizer is trained on the first :meth:`FaissIndex.add`, which must therefore hold
  at least ``nlist`` vectors (about ``39 * nlist`` for good centroids, a warning is logged
  otherwise); later adds reuse those centroids.

Saved as two files, each written atomically: the faiss index at ``path`` and a JSON sidecar at
``path + ".json"`` (format, kind, params, space, ids and the index file's SHA-256, which ties the
pair together: a torn or corrupt pair is refused on load instead of reaching faiss).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Self

import numpy as np

from wildreid.errors import ConfigError, EmbeddingSpaceError, IndexBackendError
from wildreid.files import atomic_path, sha256_file
from wildreid.index.params import (
    FAISS_KINDS,
    FaissParams,
    FlatParams,
    HNSWParams,
    IVFParams,
    make_params,
)
from wildreid.index.protocol import (
    PAD_ID,
    SearchResult,
    check_new_embeddings,
    check_remove_ids,
    query_matrix,
    sidecar_path,
)
from wildreid.ranking import top_k
from wildreid.types import Embeddings, EmbeddingSpace

with warnings.catch_warnings():
    # SWIG-generated bindings warn "builtin type SwigPy... has no __module__ attribute" on import
    # under Python >= 3.12; the warning is about faiss's bindings, nothing we can act on.
    warnings.filterwarnings(
        "ignore", message=r"builtin type .* has no __module__", category=DeprecationWarning
    )
    import faiss

__all__ = [
    "FAISS_FORMAT",
    "FAISS_KINDS",
    "FaissIndex",
    "FlatParams",
    "HNSWParams",
    "IVFParams",
]

logger = logging.getLogger(__name__)

FAISS_FORMAT = "wildreid.faiss-index"
_FORMAT_VERSION = 1
_GOOD_POINTS_PER_CENTROID = 39  # faiss's own advice for k-means training


class FaissIndex:
    """A faiss index of kind ``flat``, ``hnsw`` or ``ivf`` (see the module docstring).

    Args:
        kind: one of :data:`FAISS_KINDS`.
        space: the embedding space of every vector this index will hold.
        dim: the vector dimension; must equal ``space.dim`` when that is set.
        **params: the fields of :class:`HNSWParams` or :class:`IVFParams` for that kind.

    Raises:
        ConfigError: unknown kind or parameter, or a parameter < 1.
        EmbeddingSpaceError: ``dim`` contradicts ``space.dim``.
    """

    def __init__(self, kind: str, *, space: EmbeddingSpace, dim: int, **params: int) -> None:
        self._params = make_params(kind, dict(params))
        if dim < 1:
            raise ConfigError(f"index dimension must be >= 1, got {dim}")
        if space.dim and space.dim != dim:
            raise EmbeddingSpaceError(f"index dimension {dim} contradicts space {space.describe()}")
        self._kind = kind
        self._space = space
        self._dim = dim
        self._ids: list[str] = []
        self._label_of: dict[str, int] = {}
        self._next_label = 0
        self._name_table: np.ndarray | None = None
        self._index = self._new_faiss_index()
        self._apply_search_params()

    def _new_faiss_index(self) -> faiss.Index:
        p = self._params
        if isinstance(p, HNSWParams):
            hnsw = faiss.IndexHNSWFlat(self._dim, p.m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = p.ef_construction
            return faiss.IndexIDMap2(hnsw)
        if isinstance(p, IVFParams):
            quantizer = faiss.IndexFlatIP(self._dim)
            ivf = faiss.IndexIVFFlat(quantizer, self._dim, p.nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.cp.spherical = True
            ivf.cp.min_points_per_centroid = 1  # we log our own warning instead of faiss's print
            return ivf
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self._dim))

    def _inner(self) -> faiss.Index:
        if isinstance(self._index, faiss.IndexIDMap):
            return faiss.downcast_index(self._index.index)
        return self._index

    def _apply_search_params(self) -> None:
        p, inner = self._params, self._inner()
        if isinstance(p, HNSWParams) and isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = p.ef_search
        elif isinstance(p, IVFParams) and isinstance(inner, faiss.IndexIVF):
            inner.nprobe = p.nprobe

    @property
    def kind(self) -> str:
        """``flat``, ``hnsw`` or ``ivf``."""
        return self._kind

    @property
    def params(self) -> FaissParams:
        """The kind's parameters."""
        return self._params

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

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"FaissIndex({self._kind}, {self._params}, {len(self)} vectors)"

    def configure_search(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change ``ef_search`` (hnsw) or ``nprobe`` (ivf) without rebuilding the index.

        Raises:
            ConfigError: the parameter does not belong to this kind, or is < 1.
        """
        if ef_search is not None:
            if not isinstance(self._params, HNSWParams):
                raise ConfigError(f"ef_search applies to hnsw indexes, this one is {self._kind}")
            self._params = replace(self._params, ef_search=ef_search)
        if nprobe is not None:
            if not isinstance(self._params, IVFParams):
                raise ConfigError(f"nprobe applies to ivf indexes, this one is {self._kind}")
            self._params = replace(self._params, nprobe=nprobe)
        self._apply_search_params()

    def add(self, embeddings: Embeddings) -> None:
        """Add ``embeddings``; the first add of an ``ivf`` index trains it.

        Raises:
            EmbeddingSpaceError: another space or dimension (both spaces named).
            ConfigError: duplicate or empty ids, vectors not unit-norm, or an untrained ``ivf``
                index given fewer than ``nlist`` vectors; nothing was added.
        """
        what = f"faiss {self._kind} index"
        check_new_embeddings(self._space, self._dim, self._label_of, embeddings, what=what)
        if not len(embeddings):
            return
        if not self._index.is_trained:
            self._train(embeddings.vectors)
        labels = np.arange(self._next_label, self._next_label + len(embeddings), dtype=np.int64)
        self._index.add_with_ids(np.ascontiguousarray(embeddings.vectors), labels)
        for image_id, label in zip(embeddings.image_ids, labels.tolist(), strict=True):
            self._label_of[image_id] = label
        self._ids.extend(embeddings.image_ids)
        self._next_label += len(embeddings)
        self._name_table = None

    def _train(self, vectors: np.ndarray) -> None:
        assert isinstance(self._params, IVFParams)
        nlist, n = self._params.nlist, vectors.shape[0]
        if n < nlist:
            raise ConfigError(
                f"faiss ivf index: the first add trains {nlist} cells and needs at least {nlist} "
                f"vectors, got {n}; add more vectors at once, lower nlist, or use kind 'flat'"
            )
        if n < _GOOD_POINTS_PER_CENTROID * nlist:
            logger.warning(
                "training ivf with %d cells on only %d vectors (%d advised); recall may suffer",
                nlist,
                n,
                _GOOD_POINTS_PER_CENTROID * nlist,
            )
        start = time.perf_counter()
        self._index.train(np.ascontiguousarray(vectors))
        logger.info(
            "trained ivf (%d cells) on %d vectors in %.2f s", nlist, n, time.perf_counter() - start
        )

    def remove(self, image_ids: Iterable[str]) -> int:
        """Remove ``image_ids`` (``hnsw``: by rebuilding the graph, see the module docstring).

        Raises:
            ConfigError: an id is not stored (named); nothing was removed.
        """
        unique = check_remove_ids(self._label_of, image_ids, what=f"faiss {self._kind} index")
        if not unique:
            return 0
        labels = np.array([self._label_of[i] for i in unique], dtype=np.int64)
        if isinstance(self._params, HNSWParams):
            self._rebuild_without(labels)
        else:
            removed = self._index.remove_ids(faiss.IDSelectorBatch(labels))
            if removed != len(unique):
                raise IndexBackendError(
                    f"faiss {self._kind} index removed {removed} of {len(unique)} vectors; "
                    "the index is inconsistent, rebuild it from the embeddings"
                )
        gone = set(unique)
        self._ids = [i for i in self._ids if i not in gone]
        for image_id in unique:
            del self._label_of[image_id]
        self._name_table = None
        return len(unique)

    def _rebuild_without(self, labels: np.ndarray) -> None:
        start = time.perf_counter()
        assert isinstance(self._index, faiss.IndexIDMap2)
        all_labels = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = self._inner().reconstruct_n(0, self._index.ntotal)
        keep = ~np.isin(all_labels, labels)
        self._index = self._new_faiss_index()
        self._apply_search_params()
        if keep.any():
            kept = np.ascontiguousarray(vectors[keep], dtype=np.float32)
            self._index.add_with_ids(kept, np.ascontiguousarray(all_labels[keep]))
        logger.info(
            "rebuilt hnsw graph of %d vectors after removing %d in %.2f s",
            int(keep.sum()),
            labels.size,
            time.perf_counter() - start,
        )

    def search(self, queries: Embeddings | np.ndarray, k: int) -> SearchResult:
        """Top-``k`` by inner product, padded with ``""``/-inf; ties by insertion order among
        the hits faiss returns.

        Shapes:
            queries: (Q, D) float32 unit vectors, or Embeddings of this space.
            return: SearchResult (Q, k).
        """
        matrix = query_matrix(queries, self._space, self._dim, k, what=f"faiss {self._kind} index")
        if not self._ids or matrix.shape[0] == 0:
            return SearchResult.empty(matrix.shape[0], int(k))
        scores, labels = self._index.search(matrix, int(k))
        missing = labels < 0
        scores = np.where(missing, np.float32(-np.inf), scores).astype(np.float32)
        order = top_k(scores, int(k), key=np.where(missing, np.iinfo(np.int64).max, labels))
        scores = np.take_along_axis(scores, order, axis=1)
        labels = np.take_along_axis(labels, order, axis=1)
        if self._name_table is None:  # label -> id; the extra last slot (label -1) is padding
            table = np.full(self._next_label + 1, PAD_ID, dtype=object)
            table[list(self._label_of.values())] = list(self._label_of.keys())
            self._name_table = table
        return SearchResult(scores, self._name_table[labels])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the faiss index to ``path`` and its sidecar to ``path + ".json"``, atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            faiss.write_index(self._index, str(tmp))
            digest = sha256_file(tmp)
        sidecar = {
            "format": FAISS_FORMAT,
            "version": _FORMAT_VERSION,
            "kind": self._kind,
            "params": asdict(self._params),
            "dim": self._dim,
            "space": json.loads(self._space.to_json()),
            "index_file": path.name,
            "index_sha256": digest,
            "next_label": self._next_label,
            "image_ids": self._ids,
            "labels": [self._label_of[i] for i in self._ids],
        }
        with atomic_path(sidecar_path(path)) as tmp:
            tmp.write_text(json.dumps(sidecar), encoding="utf-8")
        logger.info("saved faiss %s index of %d vectors to %s", self._kind, len(self), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read an index written by :meth:`save` (``path`` and ``path + ".json"``).

        Raises:
            IndexBackendError: either file is missing, unreadable or corrupt, or they do not
                belong together (the path is named).
        """
        path, meta_path = Path(path), sidecar_path(path)
        hint = "re-create it with FaissIndex.save from the embeddings"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FAISS_FORMAT:
                raise IndexBackendError(f"{meta_path} is not a wildreid faiss sidecar; {hint}")
            if meta.get("version") != _FORMAT_VERSION:
                raise IndexBackendError(
                    f"{meta_path} has version {meta.get('version')}, this wildreid reads "
                    f"version {_FORMAT_VERSION}; {hint}"
                )
            if sha256_file(path) != meta["index_sha256"]:
                raise IndexBackendError(
                    f"{path} does not match its sidecar {meta_path} (SHA-256 differs): corrupt "
                    f"or from another save; {hint}"
                )
            space = EmbeddingSpace.from_json(json.dumps(meta["space"]))
            index = cls(meta["kind"], space=space, dim=int(meta["dim"]), **meta["params"])
            ids = [str(i) for i in meta["image_ids"]]
            labels = [int(label) for label in meta["labels"]]
            next_label = int(meta["next_label"])
            raw = faiss.read_index(str(path))
        except IndexBackendError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, ConfigError) as exc:
            raise IndexBackendError(f"cannot read faiss index {path}: {exc}; {hint}") from exc
        index._adopt(raw, ids, labels, next_label, path=path)  # raw owns the C++ index
        return index

    def _adopt(
        self, raw: faiss.Index, ids: list[str], labels: list[int], next_label: int, *, path: Path
    ) -> None:
        expected, expected_inner = type(self._index), type(self._inner())
        inner = faiss.downcast_index(raw.index) if isinstance(raw, faiss.IndexIDMap) else raw
        if (
            type(raw) is not expected
            or type(inner) is not expected_inner
            or raw.d != self._dim
            or raw.ntotal != len(ids)
        ):
            raise IndexBackendError(
                f"faiss index {path} ({type(inner).__name__}, dim {raw.d}, {raw.ntotal} vectors) "
                f"does not match its sidecar ({self._kind}, dim {self._dim}, {len(ids)} ids); "
                "re-create it from the embeddings"
            )
        if (
            len(labels) != len(ids)
            or len(set(ids)) != len(ids)
            or len(set(labels)) != len(labels)
            or any(not 0 <= label < next_label for label in labels)
        ):
            raise IndexBackendError(
                f"sidecar of {path} has inconsistent ids and labels; re-create the index"
            )
        self._index = raw
        self._apply_search_params()
        self._ids = ids
        self._label_of = dict(zip(ids, labels, strict=True))
        self._next_label = next_label
        self._name_table = None
