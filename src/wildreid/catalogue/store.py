"""The :class:`CatalogueStore` protocol and :class:`MemoryStore`, its in-memory reference.

A store keeps records; it holds no logic about decisions, merges or indexes (that is the
:class:`~wildreid.catalogue.catalogue.Catalogue`'s). Every write happens inside
:meth:`CatalogueStore.transaction`: either all of a transaction's writes land or none do. The
audit log (:class:`~wildreid.catalogue.records.Event`) is append-only: a store has no way to
change or delete an event. :class:`~wildreid.catalogue.sqlite.SQLiteStore` is the persistent one;
a server database can follow behind the same protocol.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Protocol, runtime_checkable

import numpy as np

from wildreid.catalogue.records import Event, IdentificationRecord, ImageRecord, Individual
from wildreid.errors import DuplicateError, NotFoundError

__all__ = ["CatalogueStore", "MemoryStore"]


@runtime_checkable
class CatalogueStore(Protocol):
    """Where a catalogue's records live.

    Spaces are stored as their JSON text (``EmbeddingSpace.to_json``); vectors as float32 rows.
    Methods that write must be called inside :meth:`transaction`.
    """

    def transaction(self) -> AbstractContextManager[None]:
        """A context in which writes are atomic (rolled back if the body raises)."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def add_individual(self, individual: Individual) -> None:
        """Raises DuplicateError if the id exists."""
        ...

    def update_individual(self, individual: Individual) -> None:
        """Raises NotFoundError if the id does not exist."""
        ...

    def delete_individual(self, individual_id: str) -> None: ...

    def get_individual(self, individual_id: str) -> Individual | None: ...

    def individuals(self) -> list[Individual]:
        """Every individual, merged ones included, by id."""
        ...

    def add_image(self, image: ImageRecord) -> None:
        """Raises DuplicateError if the image id exists."""
        ...

    def update_image(self, image: ImageRecord) -> None: ...

    def get_image(self, image_id: str) -> ImageRecord | None: ...

    def images(
        self, *, individual_id: str | None = None, role: str | None = None
    ) -> list[ImageRecord]:
        """Images (of one individual, of one role), by date then id."""
        ...

    def images_by_content(self, sha256: str) -> list[ImageRecord]: ...

    def put_vectors(self, space: str, image_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store (or replace) the (N, D) float32 vectors of ``image_ids`` in ``space``."""
        ...

    def vectors(self, space: str, image_ids: Sequence[str]) -> np.ndarray:
        """The (N, D) vectors of ``image_ids`` in ``space``; NotFoundError names a missing id."""
        ...

    def vector_ids(self, space: str) -> set[str]:
        """The ids that have a vector in ``space``."""
        ...

    def drop_space(self, space: str) -> None:
        """Delete every vector of ``space``."""
        ...

    def add_identification(self, record: IdentificationRecord) -> int:
        """Store ``record``; return its new id."""
        ...

    def identifications(self, query_image_id: str) -> list[IdentificationRecord]:
        """The identifications of a query, oldest first."""
        ...

    def append_event(self, event: Event) -> int:
        """Append to the audit log; return the event's new id."""
        ...

    def events(
        self, *, query_image_id: str | None = None, individual_id: str | None = None
    ) -> list[Event]:
        """Audit log entries, oldest first (those naming an individual as either party)."""
        ...

    def counts(self) -> dict[str, int]:
        """Number of individuals, images, identifications and events."""
        ...


class MemoryStore:
    """Everything in dictionaries: the reference :class:`CatalogueStore` and a test double.

    A transaction snapshots the state and restores it if the body raises. Thread-safe (one lock).
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._meta: dict[str, str] = {}
        self._individuals: dict[str, Individual] = {}
        self._images: dict[str, ImageRecord] = {}
        self._vectors: dict[str, dict[str, np.ndarray]] = {}
        self._identifications: list[IdentificationRecord] = []
        self._events: list[Event] = []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            state = copy.copy(self.__dict__)
            snapshot = {
                key: copy.copy(value)
                for key, value in state.items()
                if key not in ("_lock", "_depth")
            }
            snapshot["_vectors"] = {k: dict(v) for k, v in self._vectors.items()}
            self._depth = 1
            try:
                yield
            except BaseException:
                self.__dict__.update(snapshot)
                raise
            finally:
                self._depth = 0

    def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def add_individual(self, individual: Individual) -> None:
        if individual.individual_id in self._individuals:
            raise DuplicateError(f"individual {individual.individual_id!r} already exists")
        self._individuals[individual.individual_id] = individual

    def update_individual(self, individual: Individual) -> None:
        if individual.individual_id not in self._individuals:
            raise NotFoundError(f"no individual {individual.individual_id!r}")
        self._individuals[individual.individual_id] = individual

    def delete_individual(self, individual_id: str) -> None:
        self._individuals.pop(individual_id, None)

    def get_individual(self, individual_id: str) -> Individual | None:
        return self._individuals.get(individual_id)

    def individuals(self) -> list[Individual]:
        return [self._individuals[k] for k in sorted(self._individuals)]

    def add_image(self, image: ImageRecord) -> None:
        if image.image_id in self._images:
            raise DuplicateError(f"image id {image.image_id!r} already exists")
        self._images[image.image_id] = image

    def update_image(self, image: ImageRecord) -> None:
        if image.image_id not in self._images:
            raise NotFoundError(f"no image {image.image_id!r}")
        self._images[image.image_id] = image

    def get_image(self, image_id: str) -> ImageRecord | None:
        return self._images.get(image_id)

    def images(
        self, *, individual_id: str | None = None, role: str | None = None
    ) -> list[ImageRecord]:
        found = [
            image
            for image in self._images.values()
            if (individual_id is None or image.individual_id == individual_id)
            and (role is None or image.role == role)
        ]
        return sorted(found, key=lambda i: (i.date, i.image_id))

    def images_by_content(self, sha256: str) -> list[ImageRecord]:
        return sorted(
            (i for i in self._images.values() if i.sha256 == sha256), key=lambda i: i.image_id
        )

    def put_vectors(self, space: str, image_ids: Sequence[str], vectors: np.ndarray) -> None:
        table = self._vectors.setdefault(space, {})
        for image_id, row in zip(image_ids, vectors, strict=True):
            table[image_id] = np.array(row, dtype=np.float32)

    def vectors(self, space: str, image_ids: Sequence[str]) -> np.ndarray:
        table = self._vectors.get(space, {})
        missing = [i for i in image_ids if i not in table]
        if missing:
            raise NotFoundError(f"no vector in the catalogue's space for image {missing[0]!r}")
        if not image_ids:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([table[i] for i in image_ids]).astype(np.float32)

    def vector_ids(self, space: str) -> set[str]:
        return set(self._vectors.get(space, {}))

    def drop_space(self, space: str) -> None:
        self._vectors.pop(space, None)

    def add_identification(self, record: IdentificationRecord) -> int:
        new_id = len(self._identifications) + 1
        self._identifications.append(replace(record, identification_id=new_id))
        return new_id

    def identifications(self, query_image_id: str) -> list[IdentificationRecord]:
        return [r for r in self._identifications if r.query_image_id == query_image_id]

    def append_event(self, event: Event) -> int:
        new_id = len(self._events) + 1
        self._events.append(replace(event, event_id=new_id))
        return new_id

    def events(
        self, *, query_image_id: str | None = None, individual_id: str | None = None
    ) -> list[Event]:
        return [
            e
            for e in self._events
            if (query_image_id is None or e.query_image_id == query_image_id)
            and (individual_id is None or individual_id in (e.individual_id, e.other_id))
        ]

    def counts(self) -> dict[str, int]:
        return {
            "individuals": sum(1 for i in self._individuals.values() if i.merged_into is None),
            "images": sum(1 for i in self._images.values() if i.role == "gallery"),
            "queries": sum(1 for i in self._images.values() if i.role == "query"),
            "identifications": len(self._identifications),
            "decisions": len(self._events),
        }
