"""The :class:`Catalogue`: known individuals, their photos, a vector index and the decisions.

The catalogue is the library the CLI (``wildreid catalogue``) and the service (``wildreid serve``)
are thin shells over. It keeps one :class:`~wildreid.catalogue.store.CatalogueStore` (SQLite in a
bundle folder, see :mod:`wildreid.catalogue.bundle`) and one vector index of the active
:class:`~wildreid.types.EmbeddingSpace`, kept consistent with the store:

- the store is the truth; the index file is checked against it on open (same space, same image
  ids) and brought into step (rebuilt, or the missing vectors added) when it is not;
- every change commits to the store first and only then touches the index, so a crash leaves at
  worst a stale index, which the next open repairs;
- a ``generation`` counter in the store tells a process that another one (the CLI beside a
  running server) changed the gallery; it then re-reads it before answering.

Identification: query photo -> decode -> embed -> search (exact inner product) -> optional local
re-ranking of the shortlist (:mod:`wildreid.catalogue.local`: SIFT, RootSIFT, ALIKED or DISK +
LightGlue, features cached in the bundle) -> per-individual ranking -> calibrated probability
when the catalogue has a calibration (:mod:`wildreid.catalogue.calibration`, fitted on its own
images by :meth:`Catalogue.calibrate`) -> known / new / review (:class:`DecisionPolicy`).
Filters (species, location, date window) restrict the gallery; when an image they left out scores
above every candidate shown, the result says so (``outside_filters``): a filter must never
silently hide the right animal.

Curation (:mod:`wildreid.catalogue.curation`): decisions, new individuals, merge, split, rename and
undo, each logged in the append-only audit log with who, when and how confident.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wildreid.catalogue import curation
from wildreid.catalogue.bundle import Bundle
from wildreid.catalogue.records import (
    CatalogueCandidate,
    Event,
    Filters,
    IdentificationRecord,
    ImageRecord,
    Individual,
    utc_now,
)
from wildreid.catalogue.sqlite import SQLiteStore
from wildreid.catalogue.store import CatalogueStore
from wildreid.data.images import DEFAULT_MAX_PIXELS, load_image
from wildreid.data.schema import parse_bbox
from wildreid.errors import (
    CatalogueError,
    ConfigError,
    DataError,
    DuplicateError,
    EmbeddingSpaceError,
    IndexBackendError,
    NotFoundError,
)
from wildreid.index.kinds import build_index, load_index
from wildreid.index.protocol import PAD_ID, SearchResult, VectorIndex
from wildreid.matching.identification import Aggregation, decide, rank_identities
from wildreid.types import Candidate, Embeddings, EmbeddingSpace

if TYPE_CHECKING:
    from PIL import Image

    from wildreid.catalogue.calibration import CatalogueCalibration
    from wildreid.catalogue.local import LocalMatching
    from wildreid.matching.rerank import PairComparison, RerankConfig
    from wildreid.models.embedder import Embedder

__all__ = ["Catalogue", "CheckReport", "DecisionPolicy", "EnrolResult"]

logger = logging.getLogger(__name__)

SAVE_INDEX_MAX = 20_000
"""Indexes up to this size are saved after every change; larger ones after enrolment batches
and on close (a stale file is repaired on the next open either way)."""

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DecisionPolicy:
    """How a shortlist is built and what the system proposes.

    Attributes:
        k_images: gallery images retrieved before grouping by individual.
        aggregation, topk: per-individual score (see :func:`~wildreid.matching.rank_identities`).
        max_candidates: individuals proposed per query.
        threshold, review_margin: the known / review / new rule of
            :func:`~wildreid.matching.decide`, on the calibrated probability when the catalogue
            is calibrated, else on the score. ``None``: the calibration's threshold and margin
            when there is one, else every query with a candidate is ``known``.
    """

    k_images: int = 50
    aggregation: Aggregation = "max"
    topk: int = 3
    max_candidates: int = 5
    threshold: float | None = None
    review_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.k_images < 1 or self.max_candidates < 1 or self.topk < 1:
            raise ConfigError("k_images, topk and max_candidates must be >= 1")
        decide([], threshold=self.threshold, review_margin=self.review_margin)


@dataclass(frozen=True)
class EnrolResult:
    """What :meth:`Catalogue.enrol` did.

    Attributes:
        added: image ids now in the catalogue.
        duplicates: ``(image_id, existing image_id)`` of photos already in it (not added again).
        skipped: ``(image_id, reason)`` of rows that could not be added.
    """

    added: tuple[str, ...]
    duplicates: tuple[tuple[str, str], ...]
    skipped: tuple[tuple[str, str], ...]
    seconds: float


@dataclass(frozen=True)
class CheckReport:
    """What :meth:`Catalogue.check` found; ``problems`` empty means consistent."""

    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


def _space_key(space: EmbeddingSpace) -> str:
    return space.to_json()


def _cell(row: Any, column: str) -> str:
    value = row.get(column, "") if hasattr(row, "get") else ""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


class Catalogue:
    """A catalogue bundle opened for use; see the module docstring.

    Build one with :meth:`create` or :meth:`open`; use it as a context manager (or call
    :meth:`close`). Thread-safe: writes and index changes take one lock; decoding and embedding
    of queries run outside it. ``device`` and ``runtime`` say where and with which inference
    runtime photos are embedded (:class:`~wildreid.models.embedder.EmbedderConfig`; ``auto``: the
    fastest measured on a CPU); every runtime embeds into the catalogue's one space.
    """

    def __init__(
        self,
        bundle: Bundle,
        store: CatalogueStore,
        *,
        device: str = "cpu",
        runtime: str = "auto",
        policy: DecisionPolicy = DecisionPolicy(),
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        from wildreid.models.runtimes import check_runtime

        check_runtime(runtime)  # an unknown runtime fails on open, not at the first embedding
        self.bundle = bundle
        self.store = store
        self.device = device
        self.runtime = runtime
        self.policy = policy
        self.max_pixels = max_pixels
        self._lock = threading.RLock()
        self._embedder: Embedder | None = None
        self._local: dict[RerankConfig, LocalMatching] = {}
        self._calibration: tuple[object, CatalogueCalibration | None, str] = (None, None, "")
        space_json = store.get_meta("space")
        if space_json is None:
            raise CatalogueError(f"{bundle.root}: the catalogue has no embedding space recorded")
        self._space = EmbeddingSpace.from_json(space_json)
        self._gallery: dict[str, tuple[str, str, str, str]] = {}
        self._generation = ""
        self._index: VectorIndex = build_index("flat", space=self._space, dim=self._space.dim)
        self._load_index()

    # ----------------------------------------------------------------- create / open / close

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        *,
        model: str = "efficientnet-lite0",
        weights: str | None = None,
        device: str = "cpu",
        runtime: str = "auto",
        **options: Any,
    ) -> Catalogue:
        """Create an empty catalogue in folder ``root`` (new, or empty) for ``model``.

        The model is loaded once to record its exact :class:`EmbeddingSpace`; every image is
        embedded in that space until :meth:`reembed` switches to another.

        Raises:
            DuplicateError: ``root`` already holds a catalogue or other files.
            UnknownComponentError, WeightsError: the model cannot be loaded.
        """
        bundle = Bundle(root)
        if bundle.root.exists() and any(bundle.root.iterdir()):
            raise DuplicateError(
                f"{bundle.root} is not empty; create a catalogue in a new or empty folder"
            )
        embedder = _make_embedder(model, weights, device, runtime)
        space = embedder.space
        bundle.root.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(bundle.db_path, create=True)
        with store.transaction():
            store.set_meta("format", "wildreid.catalogue")
            store.set_meta("created_at", utc_now())
            store.set_meta("model", model)
            store.set_meta("weights", weights or "")
            store.set_meta("space", space.to_json())
            store.set_meta("generation", "0")
        catalogue = cls(bundle, store, device=device, runtime=runtime, **options)
        catalogue._embedder = embedder
        catalogue._save_index()
        logger.info("created catalogue %s for %s", bundle.root, space.describe())
        return catalogue

    @classmethod
    def open(
        cls, root: str | os.PathLike[str], *, device: str = "cpu", **options: Any
    ) -> Catalogue:
        """Open the catalogue in folder ``root``; the index is checked and repaired if needed.

        Raises:
            NotFoundError: no catalogue there.
            SchemaVersionError: a newer wildreid wrote it, or the database is unreadable.
        """
        bundle = Bundle(root)
        if not bundle.db_path.is_file():
            raise NotFoundError(
                f"{bundle.root}: no catalogue here (no {bundle.db_path.name}); create one with "
                "`wildreid catalogue init`"
            )
        return cls(bundle, SQLiteStore(bundle.db_path), device=device, **options)

    @classmethod
    def in_memory(
        cls,
        root: str | os.PathLike[str],
        store: CatalogueStore,
        *,
        space: EmbeddingSpace,
        model: str,
        weights: str = "",
        **options: Any,
    ) -> Catalogue:
        """A catalogue over any store (e.g. :class:`MemoryStore`) with image files in ``root``."""
        with store.transaction():
            store.set_meta("model", model)
            store.set_meta("weights", weights)
            store.set_meta("space", space.to_json())
            store.set_meta("generation", "0")
        return cls(Bundle(root), store, **options)

    def close(self) -> None:
        """Save the index (if it changed since it was read or saved) and close the store."""
        with self._lock:
            if self._saved != self._index_state():
                self._save_index()
            close = getattr(self.store, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- properties

    @property
    def root(self) -> Path:
        """The bundle folder."""
        return self.bundle.root

    @property
    def space(self) -> EmbeddingSpace:
        """The active embedding space."""
        return self._space

    @property
    def model(self) -> str:
        """The active model's name (or checkpoint path)."""
        return self.store.get_meta("model") or ""

    @property
    def index_size(self) -> int:
        """Vectors in the index (gallery images of the active space)."""
        return len(self._index)

    # ----------------------------------------------------------------- index consistency

    def _load_index(self) -> None:
        """Read the gallery from the store and bring the index file into step with it."""
        with self._lock:
            self._read_gallery()
            path = self.bundle.index_path
            index: VectorIndex | None = None
            if path.exists():
                try:
                    index = load_index(path)
                except IndexBackendError as exc:
                    logger.warning("rebuilding the index: %s", exc)
                if index is not None and index.space != self._space:
                    logger.warning("rebuilding the index: it holds another embedding space")
                    index = None
            if index is None:
                index = build_index("flat", space=self._space, dim=self._space.dim)
                self._saved: tuple[EmbeddingSpace, frozenset[str]] | None = None
            else:
                self._saved = (index.space, frozenset(index.image_ids))
            self._index = index
            if self._sync_index() and self._writable():
                self._save_index()

    def _writable(self) -> bool:
        return os.access(self.bundle.root, os.W_OK)

    def _read_gallery(self) -> None:
        self._generation = self.store.get_meta("generation") or "0"
        self._gallery = {
            image.image_id: (image.individual_id or "", image.species, image.location, image.date)
            for image in self.store.images(role="gallery")
        }

    def _sync_index(self) -> bool:
        """Add missing vectors to / remove stray ones from the index; True if it changed."""
        wanted = set(self._gallery)
        present = set(self._index.image_ids)
        extra = sorted(present - wanted)
        missing = sorted(wanted - present)
        if extra:
            self._index.remove(extra)
        if missing:
            vectors = self.store.vectors(_space_key(self._space), missing)
            self._index.add(Embeddings(np.ascontiguousarray(vectors), tuple(missing), self._space))
        if extra or missing:
            logger.info("index brought into step: %d added, %d removed", len(missing), len(extra))
        return bool(extra or missing)

    def _refresh(self) -> None:
        """Re-read the gallery if another process changed it."""
        if (self.store.get_meta("generation") or "0") != self._generation:
            with self._lock:
                self._read_gallery()
                self._sync_index()

    def _bump(self) -> None:
        """Inside a transaction: mark the gallery changed for other processes."""
        value = str(int(self.store.get_meta("generation") or "0") + 1)
        self.store.set_meta("generation", value)
        self._pending_generation = value

    def _index_state(self) -> tuple[EmbeddingSpace, frozenset[str]]:
        """What the index file must hold: vectors are fixed per (space, image id)."""
        return self._space, frozenset(self._index.image_ids)

    def _save_index(self, *, force: bool = True) -> None:
        if not force and len(self._index) > SAVE_INDEX_MAX:
            return
        if isinstance(self.store, SQLiteStore):
            self._index.save(self.bundle.index_path)
            self._saved = self._index_state()

    def _after_write(self) -> None:
        self._generation = getattr(self, "_pending_generation", self._generation)
        self._save_index(force=False)

    # ----------------------------------------------------------------- embedding

    def embedder(self) -> Embedder:
        """The active model's embedder (loaded on first use, checked against the space).

        Raises:
            EmbeddingSpaceError: the model now loads with other weights or preprocessing.
        """
        with self._lock:
            if self._embedder is None:
                weights = self.store.get_meta("weights") or None
                embedder = _make_embedder(self.model, weights, self.device, self.runtime)
                self._space.require_same(embedder.space, what=f"catalogue {self.root}")
                self._embedder = embedder
            return self._embedder

    def embed_file(
        self, path: Path, *, bbox: tuple[float, float, float, float] | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Decode and embed one image; returns the (D,) vector and decode/embed times in ms.

        Raises:
            ImageReadError: unreadable, truncated, not an image, or over the pixel limit.
        """
        import torch

        from wildreid.data.transforms import Resize, normalize

        embedder = self.embedder()
        resize = Resize.from_space(self._space)
        start = time.perf_counter()
        image = load_image(
            path, bbox=bbox, target_size=resize.target_size, max_pixels=self.max_pixels
        )
        batch = resize(image)[None]
        decoded = time.perf_counter()
        with torch.inference_mode():
            tensor = normalize(batch, mean=self._space.mean, std=self._space.std)
        vector = embedder.embed_tensors(tensor)[0]
        done = time.perf_counter()
        return vector, {"decode": (decoded - start) * 1e3, "embed": (done - decoded) * 1e3}

    # ----------------------------------------------------------------- enrolment

    def enrol(
        self,
        metadata: pd.DataFrame,
        *,
        root: str | os.PathLike[str],
        chunk_size: int = 256,
        progress: Progress | None = None,
        on_committed: Callable[[Sequence[str]], None] | None = None,
    ) -> EnrolResult:
        """Add the photos of known individuals from a metadata table.

        See :func:`wildreid.catalogue.enrolment.enrol`.
        """
        from wildreid.catalogue import enrolment

        return enrolment.enrol(
            self,
            metadata,
            root=root,
            chunk_size=chunk_size,
            progress=progress,
            on_committed=on_committed,
        )

    def enrol_file(self, source: bytes, *, individual_id: str, **fields: str) -> EnrolResult:
        """Add one uploaded photo of a known individual; see
        :func:`wildreid.catalogue.enrolment.enrol_file`."""
        from wildreid.catalogue import enrolment

        return enrolment.enrol_file(self, source, individual_id=individual_id, **fields)

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        """A private temporary folder inside the bundle (same file system), removed after."""
        parent = self.bundle.root / ".staging"
        parent.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent) as folder:
            yield Path(folder)

    # ----------------------------------------------------------------- identification

    def add_query(
        self,
        source: Path | bytes,
        *,
        filename: str = "",
        bbox: str = "",
        species: str = "",
        location: str = "",
        date: str = "",
    ) -> tuple[ImageRecord, np.ndarray, dict[str, float]]:
        """Store a query photo (checked and embedded first); the same photo is stored once.

        Returns:
            The query's record (an existing one for a photo uploaded before), its vector and the
            decode/embed times.

        Raises:
            ImageReadError: the bytes are not a readable image within the pixel limit.
            ConfigError: ``bbox`` is not a box.
        """
        box = _parse_box(bbox)
        suffix = Path(filename).suffix if filename else ""
        if isinstance(source, bytes):
            with self._staging() as staging:
                tmp = staging / f"upload{suffix.lower()[:8]}"
                tmp.write_bytes(source)
                vector, timings = self.embed_file(tmp, bbox=box)
                sha, relative = self.bundle.add_file(tmp, suffix=suffix)
        else:
            vector, timings = self.embed_file(source, bbox=box)
            sha, relative = self.bundle.add_file(source)
        box_tag = hashlib.sha256(bbox.encode()).hexdigest()[:6] if bbox else ""
        query_id = f"q-{sha[:16]}" + (f"-{box_tag}" if box_tag else "")
        with self._lock:
            existing = self.store.get_image(query_id)
            if existing is not None:
                return existing, vector, timings
            record = ImageRecord(
                image_id=query_id,
                sha256=sha,
                path=relative,
                individual_id=None,
                role="query",
                species=species,
                date=date,
                location=location,
                bbox=bbox,
                original_name=Path(filename).name[:200] if filename else "",
                added_at=utc_now(),
            )
            try:
                with self.store.transaction():
                    self.store.add_image(record)
                    self.store.put_vectors(_space_key(self._space), [query_id], vector[None])
            except DuplicateError:  # another process stored the same photo just now
                return self.image(query_id), vector, timings
        return record, vector, timings

    def identify(
        self,
        source: Path | bytes,
        *,
        filename: str = "",
        filters: Filters = Filters(),
        bbox: str = "",
        location: str = "",
        date: str = "",
        species: str = "",
        rerank: str | RerankConfig | None = None,
        shortlist: int | None = None,
    ) -> IdentificationRecord:
        """Identify one photo: store it as a query, propose candidates and a decision.

        Args:
            rerank: re-rank the shortlist with local features: ``sift``, ``rootsift``,
                ``aliked-lightglue`` or ``disk-lightglue`` (a method of
                :data:`~wildreid.matching.rerank.RERANKERS`) or a
                :class:`~wildreid.matching.rerank.RerankConfig`; ``None``: global scores only.
            shortlist: gallery images matched locally (default: 1000 for SIFT and RootSIFT, 20 for
                LightGlue; 0: all the filters admit).

        Raises:
            ImageReadError: the photo cannot be read (nothing is stored).
            ConfigError: an unknown re-ranking method or a shortlist without one (nothing is
                stored).
        """
        config = _resolve_rerank(rerank, shortlist)
        query, vector, timings = self.add_query(
            source,
            filename=filename,
            bbox=bbox,
            species=species,
            location=location,
            date=date,
        )
        return self.identify_vector(query, vector, filters=filters, rerank=config, timings=timings)

    def identify_vector(
        self,
        query: ImageRecord,
        vector: np.ndarray,
        *,
        filters: Filters = Filters(),
        rerank: str | RerankConfig | None = None,
        shortlist: int | None = None,
        timings: dict[str, float] | None = None,
        record: bool = True,
    ) -> IdentificationRecord:
        """Shortlist, re-rank, calibrate and decide for a stored query's (D,) vector."""
        config = _resolve_rerank(rerank, shortlist)
        timings = dict(timings or {})
        self._refresh()
        policy = self.policy
        start = time.perf_counter()
        allowed: list[tuple[str, float]] = []
        outside: list[tuple[str, float]] = []
        identity_of: dict[str, str] = {}
        with self._lock:
            n = len(self._index)
            # Gallery images kept in global order: enough to rank individuals, and the whole
            # re-ranking shortlist (0: every image the filters admit).
            depth = policy.k_images
            if config is not None:
                depth = max(depth, config.shortlist) if config.shortlist else max(n, 1)
            matrix = np.ascontiguousarray(vector[None], dtype=np.float32)
            # With filters, search deeper (x8 each round) until the shortlist fills or every
            # gallery image was seen: a selective filter must not come back empty-handed.
            k = min(depth * (8 if filters.active else 1), n)
            while n:
                allowed.clear()
                outside.clear()
                hits = self._index.search(matrix, k)
                # Hits come best first: once the shortlist is full, later hits (inside or
                # outside the filters) cannot change it, nor beat it.
                for image_id, score in zip(hits.image_ids[0], hits.scores[0], strict=True):
                    if image_id == PAD_ID or len(allowed) >= depth:
                        break
                    meta = self._gallery.get(image_id)
                    if meta is None:
                        continue
                    identity_of[image_id] = meta[0]
                    pair = (str(image_id), float(score))
                    if filters.admits(meta[1], meta[2], meta[3]):
                        allowed.append(pair)
                    elif len(outside) < policy.k_images:
                        outside.append(pair)
                if len(allowed) >= depth or k >= n:
                    break
                k = min(k * 8, n)

        def ranked(pairs: Sequence[tuple[str, float]]) -> list[Candidate]:
            if not pairs:
                return []
            result = SearchResult(
                np.array([[s for _, s in pairs]], dtype=np.float32),
                np.array([[i for i, _ in pairs]], dtype=object),
            )
            return rank_identities(
                result,
                identity_of,
                aggregation=policy.aggregation,
                topk=policy.topk,
                max_candidates=policy.max_candidates,
            )[0]

        searched = time.perf_counter()
        timings["search"] = (searched - start) * 1e3
        calibration, notes = self._usable_calibration()
        matcher = ""
        cosine = dict(allowed)
        local: dict[str, float] = {}
        evidence: dict[str, PairComparison] = {}
        if config is None or not allowed:
            shortlist_ = ranked(allowed[: policy.k_images])
        else:
            matching = self.local_matching(config)
            matcher = matching.matcher_name
            members = allowed[: config.shortlist or len(allowed)]
            evidence = self._match(matching, query, [i for i, _ in members])
            local = {i: c.score for i, c in evidence.items()}
            if len(evidence) < len(members):
                notes.append(
                    f"{len(members) - len(evidence)} gallery image(s) could not be read for "
                    f"local matching and kept their global rank; run `wildreid catalogue check "
                    f"{self.root}`"
                )
            order_scores = self._rerank_order(
                config, allowed, len(members), local, calibration, matcher
            )
            shortlist_ = [
                Candidate(c.identity, c.image_id, cosine[c.image_id])
                for c in ranked(list(zip([i for i, _ in allowed], order_scores, strict=True)))
            ]
            if calibration is not None and not calibration.uses_local(matcher):
                notes.append(
                    f"the calibration covers "
                    f"{calibration.local_matcher or 'global scores only'}, not {matcher}: "
                    "probabilities and the threshold use the global score alone (run `wildreid "
                    f"catalogue calibrate --rerank {config.method}` to include it)"
                )
        timings["rerank"] = (time.perf_counter() - searched) * 1e3
        decided = time.perf_counter()
        probabilities: list[float | None] = [None] * len(shortlist_)
        if calibration is not None and shortlist_:
            values = calibration.probabilities(
                [c.score for c in shortlist_],
                [local.get(c.image_id, np.nan) for c in shortlist_],
                matcher=matcher,
            )
            probabilities = [float(v) for v in values]
        candidates = tuple(
            self._candidate(c, p, evidence.get(c.image_id))
            for c, p in zip(shortlist_, probabilities, strict=True)
        )
        threshold, margin = policy.threshold, policy.review_margin
        if threshold is None and calibration is not None:
            threshold, margin = calibration.threshold(matcher), calibration.policy.review_margin
        scored = [
            Candidate(
                c.identity, c.image_id, c.probability if c.probability is not None else c.score
            )
            for c in candidates
        ]
        decision = decide(scored, threshold=threshold, review_margin=margin)
        best_outside = ranked(outside)[:1]
        best_shown = max((c.score for c in shortlist_), default=-np.inf)
        outside_candidate = (
            self._candidate(best_outside[0], None, None)
            if best_outside and best_outside[0].score > best_shown
            else None
        )
        duplicate = next(
            (
                i.image_id
                for i in self.store.images_by_content(query.sha256)
                if i.image_id != query.image_id
            ),
            None,
        )
        timings["decision"] = (time.perf_counter() - decided) * 1e3
        result = IdentificationRecord(
            identification_id=0,
            query_image_id=query.image_id,
            created_at=utc_now(),
            candidates=candidates,
            decision=decision,
            threshold=threshold,
            filters=filters,
            space=self._space.to_json(),
            model=self.model,
            outside_filters=outside_candidate,
            duplicate_of=duplicate,
            reranked=config is not None and bool(allowed),
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            rerank=self.local_matching(config).describe() if config is not None else {},
            calibration=calibration.describe(matcher) if calibration is not None else {},
            notes=tuple(notes),
            evidence={
                c.image_id: evidence[c.image_id] for c in candidates if c.image_id in evidence
            },
        )
        if not record:
            return result
        with self._lock, self.store.transaction():
            new_id = self.store.add_identification(replace(result, evidence={}))
        return replace(result, identification_id=new_id)

    def _match(
        self, matching: LocalMatching, query: ImageRecord, image_ids: Sequence[str]
    ) -> dict[str, PairComparison]:
        """The local comparison of the query with each readable gallery image (features
        cached); an unreadable gallery file is left out, an unreadable query raises."""
        features = matching.features([self.image(i) for i in image_ids], skip_bad_images=True)
        features.update(matching.features([query]))
        ids = [i for i in image_ids if i in features]
        _, comparisons = matching.score(features[query.image_id], [features[i] for i in ids])
        return dict(zip(ids, comparisons, strict=True))

    @staticmethod
    def _rerank_order(
        config: RerankConfig,
        allowed: Sequence[tuple[str, float]],
        n_shortlist: int,
        local: dict[str, float],
        calibration: CatalogueCalibration | None,
        matcher: str,
    ) -> list[float]:
        """Scores ordering the gallery hits as the re-ranking configuration says: the shortlist
        by its fusion above the rest (:func:`~wildreid.matching.rerank.fuse`), or by the fused
        probability for ``calibrated`` fusion with a calibration of this matcher."""
        from wildreid.matching.rerank import fuse

        global_scores = np.array([[s for _, s in allowed]], dtype=np.float32)
        local_row = np.array(
            [[local.get(i, np.nan) for i, _ in allowed[:n_shortlist]]], dtype=np.float64
        )
        if (
            config.fusion == "calibrated"
            and calibration is not None
            and calibration.uses_local(matcher)
        ):
            padded = np.full(len(allowed), np.nan)
            padded[:n_shortlist] = local_row[0]
            return [
                float(v)
                for v in calibration.probabilities(global_scores[0], padded, matcher=matcher)
            ]
        # Without a calibration of this matcher, ``calibrated`` orders by the local score.
        order = fuse(global_scores, np.arange(n_shortlist)[None], local_row, fusion=config.fusion)
        return [float(v) for v in order[0]]

    def _candidate(
        self, candidate: Candidate, probability: float | None, evidence: PairComparison | None
    ) -> CatalogueCandidate:
        individual = self.store.get_individual(candidate.identity)
        return CatalogueCandidate(
            identity=candidate.identity,
            name=individual.name if individual is not None else candidate.identity,
            image_id=candidate.image_id,
            score=round(float(candidate.score), 6),
            probability=probability,
            local_score=None if evidence is None else float(evidence.score),
            n_matches=None if evidence is None else len(evidence.matches),
            n_inliers=None if evidence is None else evidence.matches.n_inliers,
        )

    # ----------------------------------------------------------------- local matching

    def local_matching(self, rerank: str | RerankConfig) -> LocalMatching:
        """The local matching of a re-ranking method (built once, features cached in the
        bundle).

        Raises:
            ConfigError: an unknown method.
        """
        from wildreid.catalogue.local import LocalMatching

        config = _resolve_rerank(rerank, None)
        assert config is not None
        with self._lock:
            found = self._local.get(config)
            if found is None:
                found = self._local[config] = LocalMatching(self.bundle, config)
            return found

    def evidence(
        self, query_image_id: str, image_id: str, *, rerank: str | RerankConfig = "rootsift"
    ) -> PairComparison:
        """The local comparison of a query with a gallery image (features and verified matches).

        Raises:
            NotFoundError: an unknown image. ConfigError: an unknown method.
        """
        matching = self.local_matching(rerank)
        return matching.compare(self.image(query_image_id), self.image(image_id))

    def evidence_image(
        self,
        query_image_id: str,
        image_id: str,
        *,
        rerank: str | RerankConfig = "rootsift",
        height_px: int = 240,
    ) -> Image.Image:
        """The query and a gallery image side by side with their matched keypoints drawn
        (inliers green, other matches red; see :mod:`wildreid.viz.keypoint_matches`).

        Raises:
            NotFoundError: an unknown image. ConfigError: an unknown method.
        """
        from wildreid.viz.keypoint_matches import render_keypoint_matches

        matching = self.local_matching(rerank)
        query, image = self.image(query_image_id), self.image(image_id)
        comparison = matching.compare(query, image)
        return render_keypoint_matches(
            matching.load(query),
            matching.load(image),
            comparison.features0,
            comparison.features1,
            comparison.matches,
            height_px=height_px,
            caption=(
                f"{matching.config.method}: {len(comparison.matches)} matches, "
                f"{comparison.matches.n_inliers} inliers (query left, {image_id} right)"
            ),
        )

    # ----------------------------------------------------------------- calibration

    def calibrate(
        self,
        *,
        rerank: str | RerankConfig | None = None,
        shortlist: int | None = None,
        kind: str = "isotonic",
        target: str = "open_score",
        max_false_new: float = 0.05,
        review_margin: float = 0.0,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> CatalogueCalibration:
        """Fit the calibration on the catalogue's own images and save it in the bundle.

        See :mod:`wildreid.catalogue.calibration`: gallery-side pairs only, encounters kept
        whole; with ``rerank``, the local scores of that method are calibrated too and fused.
        Identify then reports ``probability`` and decides on it with the saved threshold.

        Raises:
            ConfigError: invalid options, an unknown method, or too few individuals.
            DataError: too few positive or negative pairs.
        """
        from wildreid.catalogue.calibration import fit_calibration

        config = _resolve_rerank(rerank, shortlist)
        self._refresh()
        calibration = fit_calibration(
            self,
            local=self.local_matching(config) if config is not None else None,
            kind=kind,
            target=target,
            max_false_new=max_false_new,
            review_margin=review_margin,
            seed=seed,
            progress=progress,
        )
        calibration.policy.save(self.bundle.calibration_path)
        self._calibration = (None, None, "")
        return calibration

    def calibration(self) -> CatalogueCalibration | None:
        """The saved calibration, if there is one for the active model.

        Raises:
            EmbeddingSpaceError: it was fitted for another model or weights.
            DataError: the file is unreadable.
        """
        from wildreid.catalogue.calibration import load_calibration

        path = self.bundle.calibration_path
        if not path.is_file():
            return None
        return load_calibration(path, space=self._space)

    def _usable_calibration(self) -> tuple[CatalogueCalibration | None, list[str]]:
        """The saved calibration (re-read when the file or the space changed) and, when one is
        saved but cannot be used, a note saying why."""
        path = self.bundle.calibration_path
        try:
            info = path.stat()
        except FileNotFoundError:
            return None, []
        key = (info.st_mtime_ns, info.st_size, self._space)
        with self._lock:
            if self._calibration[0] != key:
                try:
                    loaded, note = self.calibration(), ""
                except (DataError, EmbeddingSpaceError) as exc:
                    loaded = None
                    note = (
                        f"calibration ignored: {exc}; fit it again with `wildreid catalogue "
                        f"calibrate {self.root}`"
                    )
                    logger.warning("%s", note)
                self._calibration = (key, loaded, note)
            _, calibration, note = self._calibration
        return calibration, [note] if note else []

    # ----------------------------------------------------------------- curation

    def decide(self, query_image_id: str, verdict: str, *, who: str, **options: Any) -> Event:
        """A person's verdict on a query; see :func:`wildreid.catalogue.curation.decide_query`."""
        return curation.decide_query(self, query_image_id, verdict, who=who, **options)

    def new_individual(
        self, query_image_id: str, *, who: str, individual_id: str | None = None, **options: Any
    ) -> Event:
        """Register a new individual whose first image is the query (verdict ``new``)."""
        return curation.decide_query(
            self, query_image_id, "new", who=who, new_individual_id=individual_id, **options
        )

    def undo(self, query_image_id: str, *, who: str) -> Event:
        """Revert the last verdict on a query; see :func:`wildreid.catalogue.curation.undo`."""
        return curation.undo(self, query_image_id, who=who)

    def merge(self, keep: str, absorb: str, *, who: str, note: str = "") -> Event:
        """Merge ``absorb`` into ``keep``; see :func:`wildreid.catalogue.curation.merge`."""
        return curation.merge(self, keep, absorb, who=who, note=note)

    def split(
        self, individual_id: str, image_ids: Sequence[str], *, who: str, **options: Any
    ) -> Event:
        """Move images to a new individual; see :func:`wildreid.catalogue.curation.split`."""
        return curation.split(self, individual_id, image_ids, who=who, **options)

    def rename(self, individual_id: str, name: str, *, who: str) -> Event:
        """Change an individual's display name."""
        return curation.rename(self, individual_id, name, who=who)

    def events(
        self, *, query_image_id: str | None = None, individual_id: str | None = None
    ) -> list[Event]:
        """The audit log (of one query, or naming one individual), oldest first."""
        return self.store.events(query_image_id=query_image_id, individual_id=individual_id)

    # ----------------------------------------------------------------- reading

    def image(self, image_id: str) -> ImageRecord:
        """The record of ``image_id``; NotFoundError if there is none."""
        image = self.store.get_image(image_id)
        if image is None:
            raise NotFoundError(f"no image {image_id!r} in the catalogue {self.root}")
        return image

    def image_path(self, image_id: str) -> Path:
        """The stored file of ``image_id``."""
        return self.bundle.file(self.image(image_id).path)

    def individual(self, individual_id: str) -> Individual:
        """The record of ``individual_id``; NotFoundError (with close ids) if there is none."""
        found = self.store.get_individual(individual_id)
        if found is None:
            raise NotFoundError(f"no individual {individual_id!r} in the catalogue {self.root}")
        return found

    def individuals(self, *, include_merged: bool = False) -> list[Individual]:
        """Every individual (without those merged into others unless asked)."""
        return [i for i in self.store.individuals() if include_merged or i.merged_into is None]

    def sightings(self, individual_id: str) -> list[dict[str, Any]]:
        """The individual's encounters on a timeline: date, location and image ids, oldest first."""
        groups: dict[str, dict[str, Any]] = {}
        for image in self.store.images(individual_id=individual_id):
            key = image.encounter or f"{image.date}|{image.location}|{image.image_id}"
            group = groups.setdefault(
                key,
                {
                    "encounter": image.encounter,
                    "date": image.date,
                    "location": image.location,
                    "image_ids": [],
                },
            )
            group["image_ids"].append(image.image_id)
        return sorted(groups.values(), key=lambda g: (g["date"], g["encounter"]))

    def stats(self) -> dict[str, Any]:
        """Counts, the active space and the index size."""
        return {
            **self.store.counts(),
            "index_vectors": len(self._index),
            "model": self.model,
            "space": self._space.describe(),
        }

    # ----------------------------------------------------------------- maintenance

    def check(self, *, verify_files: bool = True) -> CheckReport:
        """Check the catalogue's consistency; see :func:`wildreid.catalogue.maintenance.check`."""
        from wildreid.catalogue import maintenance

        self._refresh()
        return maintenance.check(self, verify_files=verify_files)

    def reembed(
        self,
        model: str,
        *,
        weights: str | None = None,
        progress: Progress | None = None,
        batch_size: int = 32,
    ) -> EmbeddingSpace:
        """Embed every image with another model, then switch to its space in one step.

        See :func:`wildreid.catalogue.maintenance.reembed`.
        """
        from wildreid.catalogue import maintenance

        return maintenance.reembed(
            self, model, weights=weights, progress=progress, batch_size=batch_size
        )

    def export(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write the gallery in the metadata format; see
        :func:`wildreid.catalogue.maintenance.export`."""
        from wildreid.catalogue import maintenance

        return maintenance.export(self, out_dir)


def _make_embedder(model: str, weights: str | None, device: str, runtime: str) -> Embedder:
    from wildreid.models.embedder import Embedder, EmbedderConfig
    from wildreid.models.factory import load_model

    loaded = load_model(model, device=device, weights=weights)
    config = EmbedderConfig(device=device, workers=0, skip_bad_images=True, runtime=runtime)
    return Embedder(loaded, config=config)


def _hash_only(path: Path) -> tuple[str, int]:
    from wildreid.files import sha256_file

    return sha256_file(path), path.stat().st_size


def _parse_box(bbox: str) -> tuple[float, float, float, float] | None:
    if not bbox:
        return None
    try:
        box = parse_bbox(bbox)
    except ValueError as exc:
        raise ConfigError(f"bbox {bbox!r}: {exc}") from exc
    return None if box is None else box.as_tuple()


def _resolve_rerank(
    rerank: str | RerankConfig | None, shortlist: int | None
) -> RerankConfig | None:
    """:func:`wildreid.catalogue.local.resolve_rerank`, imported on use (it imports torch)."""
    if rerank is None and shortlist is None:
        return None
    from wildreid.catalogue.local import resolve_rerank

    return resolve_rerank(rerank, shortlist=shortlist)
