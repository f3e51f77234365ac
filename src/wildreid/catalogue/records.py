"""The catalogue's records: frozen value objects a :class:`~wildreid.catalogue.store.CatalogueStore`
keeps and the catalogue hands out.

Times are ISO 8601 UTC strings (``2026-05-01T12:00:00.123456+00:00``); dates of images are the
metadata's ISO dates (``2024-05-01`` or a date-time), empty when unknown.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from wildreid.errors import ConfigError

if TYPE_CHECKING:
    from wildreid.matching.rerank import PairComparison

__all__ = [
    "ACTIONS",
    "VERDICTS",
    "Action",
    "CatalogueCandidate",
    "Event",
    "Filters",
    "IdentificationRecord",
    "ImageRecord",
    "Individual",
    "Verdict",
    "utc_now",
]

Verdict = Literal["same", "different", "cannot_tell", "new"]
VERDICTS: tuple[Verdict, ...] = ("same", "different", "cannot_tell", "new")
"""A person's answer about a query: the same individual as a candidate, a different one, cannot
tell, or a new individual."""

Action = Literal["same", "different", "cannot_tell", "new", "undo", "merge", "split", "rename"]
ACTIONS: tuple[Action, ...] = (*VERDICTS, "undo", "merge", "split", "rename")

ROLES = ("gallery", "query")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Individual:
    """A known animal.

    Attributes:
        individual_id: stable id (the metadata's ``identity`` for enrolled animals).
        name: display name; :meth:`~wildreid.catalogue.Catalogue.rename` changes only this.
        merged_into: the individual this one was merged into (it then holds no images).
    """

    individual_id: str
    name: str
    species: str = ""
    notes: str = ""
    created_at: str = ""
    merged_into: str | None = None

    def __post_init__(self) -> None:
        if not self.individual_id.strip() or self.individual_id != self.individual_id.strip():
            raise ConfigError(
                f"individual id {self.individual_id!r} must be non-empty without outer spaces"
            )


@dataclass(frozen=True)
class ImageRecord:
    """One photo (or one bbox of a photo) in the catalogue.

    Attributes:
        image_id: unique id (the metadata's ``image_id``, or ``q-<hash>`` for uploaded queries).
        sha256: SHA-256 of the file's bytes; the file lives at ``path`` inside the bundle.
        path: posix path relative to the bundle folder.
        individual_id: the individual shown, ``None`` for a query not yet decided.
        role: ``"gallery"`` (enrolled) or ``"query"`` (uploaded to be identified).
        encounter: the sighting the photo belongs to (one date and place).
        bbox, landmarks: metadata cells (JSON text), empty when not given.
        original_name: the file name it was added under (for people; never used as a path).
    """

    image_id: str
    sha256: str
    path: str
    individual_id: str | None = None
    role: str = "gallery"
    species: str = ""
    date: str = ""
    location: str = ""
    viewpoint: str = ""
    encounter: str = ""
    bbox: str = ""
    landmarks: str = ""
    original_name: str = ""
    added_at: str = ""

    def __post_init__(self) -> None:
        if not self.image_id.strip():
            raise ConfigError("an image id must be non-empty")
        if self.role not in ROLES:
            raise ConfigError(f"image role {self.role!r} not in {ROLES}")


@dataclass(frozen=True)
class Filters:
    """Which gallery images a query may be matched against; empty fields do not filter.

    Attributes:
        species: exact species (case-insensitive).
        location: exact location (case-insensitive).
        date_from, date_to: inclusive ISO dates; images without a date are kept out when either
            is given.
    """

    species: str = ""
    location: str = ""
    date_from: str = ""
    date_to: str = ""

    def __post_init__(self) -> None:
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value:
                try:
                    dt.date.fromisoformat(value[:10])
                except ValueError:
                    raise ConfigError(
                        f"filter {name}={value!r} is not an ISO date (YYYY-MM-DD)"
                    ) from None
        if self.date_from and self.date_to and self.date_from[:10] > self.date_to[:10]:
            raise ConfigError(f"filter date_from {self.date_from} is after date_to {self.date_to}")

    @property
    def active(self) -> bool:
        """Whether any field filters."""
        return any((self.species, self.location, self.date_from, self.date_to))

    def admits(self, species: str, location: str, date: str) -> bool:
        """Whether a gallery image with these metadata passes."""
        if self.species and species.casefold() != self.species.casefold():
            return False
        if self.location and location.casefold() != self.location.casefold():
            return False
        if self.date_from or self.date_to:
            day = date[:10]
            if not day:
                return False
            if self.date_from and day < self.date_from[:10]:
                return False
            if self.date_to and day > self.date_to[:10]:
                return False
        return True

    def to_dict(self) -> dict[str, str]:
        """The non-empty fields."""
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class CatalogueCandidate:
    """A proposed individual for a query.

    Attributes:
        identity: the individual's id; ``name`` its display name.
        image_id: its gallery image that supports the match best.
        score: cosine similarity of the query and ``image_id`` (the global score).
        probability: calibrated probability of being the same animal, when the catalogue has a
            calibration for its model (and, after re-ranking, for the re-ranking method).
        local_score: the re-ranking's pair score of the query and ``image_id`` (e.g. inliers),
            ``None`` when local matching did not score that pair.
        n_matches, n_inliers: local matches and geometrically verified inliers of that pair.
    """

    identity: str
    name: str
    image_id: str
    score: float
    probability: float | None = None
    local_score: float | None = None
    n_matches: int | None = None
    n_inliers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class IdentificationRecord:
    """One identification of a query, as stored: what was proposed, with which filters and model.

    Attributes:
        identification_id: store-assigned (0 before it is stored).
        decision: ``known`` / ``new`` / ``review`` proposed by the system (not a person's).
        threshold: the decision threshold used, ``None`` when none was set.
        space: the model's embedding space (JSON, see ``EmbeddingSpace.to_json``).
        outside_filters: the best candidate among images the filters left out, when it scored
            above every candidate shown (a filter may have hidden the right animal).
        duplicate_of: a catalogue image with the same bytes as the query, if any.
        reranked: whether local matching re-ordered the shortlist; ``rerank`` says how
            (``method``, ``score``, ``shortlist``, ``fusion``; empty when it did not run).
        calibration: the calibration the probabilities and threshold came from (``kind``,
            ``matcher``, ``fitted_at``); empty when uncalibrated.
        notes: why something the caller might expect did not happen (e.g. a calibration
            ignored because it was fitted for another model).
        timings_ms: decode, embed, search, rerank and decision times.
        evidence: image id -> the local comparison of the query with that candidate image
            (features and verified matches, to draw), for candidates re-ranking scored. Only in
            the result identify returns; never stored (recompute it with
            :meth:`~wildreid.catalogue.Catalogue.evidence`).
    """

    identification_id: int
    query_image_id: str
    created_at: str
    candidates: tuple[CatalogueCandidate, ...]
    decision: str
    threshold: float | None
    filters: Filters
    space: str
    model: str
    outside_filters: CatalogueCandidate | None = None
    duplicate_of: str | None = None
    reranked: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    rerank: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    evidence: Mapping[str, PairComparison] = field(default_factory=dict, compare=False, repr=False)

    def details(self) -> dict[str, Any]:
        """The re-ranking, calibration and notes (stored together as JSON)."""
        return {"rerank": self.rerank, "calibration": self.calibration, "notes": list(self.notes)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the space as its model name and weights digest)."""
        space = json.loads(self.space) if self.space else {}
        return {
            "identification_id": self.identification_id,
            "query_image_id": self.query_image_id,
            "created_at": self.created_at,
            "candidates": [c.to_dict() for c in self.candidates],
            "decision": self.decision,
            "threshold": self.threshold,
            "filters": self.filters.to_dict(),
            "model": self.model,
            "weights_sha256": space.get("weights_sha256", ""),
            "outside_filters": (
                self.outside_filters.to_dict() if self.outside_filters is not None else None
            ),
            "duplicate_of": self.duplicate_of,
            "reranked": self.reranked,
            "rerank": dict(self.rerank),
            "calibration": dict(self.calibration),
            "notes": list(self.notes),
            "timings_ms": dict(self.timings_ms),
        }


@dataclass(frozen=True)
class Event:
    """One entry of the append-only audit log of human decisions.

    Attributes:
        event_id: store-assigned, increasing (0 before it is stored).
        action: a verdict on a query, ``undo`` (of ``undoes``), ``merge``, ``split``, ``rename``.
        who: the person (or API key holder) who decided.
        query_image_id: the query a verdict is about.
        individual_id: the individual the action is about (the kept one for a merge, the new one
            for a split or ``new``).
        other_id: the absorbed individual of a merge, the source of a split, the old name of a
            rename.
        candidate_image_id: the gallery image a verdict compared against.
        confidence: the person's confidence in 0..1, if given.
        tags: free labels (``photobomb``, ``scenery_match``, ...).
        details: what the action changed (JSON), used by undo.
    """

    event_id: int
    at: str
    who: str
    action: str
    query_image_id: str = ""
    individual_id: str = ""
    other_id: str = ""
    candidate_image_id: str = ""
    identification_id: int | None = None
    confidence: float | None = None
    tags: tuple[str, ...] = ()
    note: str = ""
    undoes: int | None = None
    details: str = "{}"

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"action {self.action!r} not in {ACTIONS}")
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ConfigError(f"confidence must be in 0..1, got {self.confidence}")
        if not self.who.strip():
            raise ConfigError("every decision needs a 'who' (a person's name or handle)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = dict(self.__dict__)
        out["tags"] = list(self.tags)
        out["details"] = json.loads(self.details)
        return out
