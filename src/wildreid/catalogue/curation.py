"""Human decisions on a catalogue: verdicts on queries, new individuals, merge, split, rename, undo.

Each operation runs in one store transaction, checks its own result before committing (a merge
that did not move every image raises and changes nothing), appends one event to the audit log
(who, when, what, confidence, tags) and only then updates the vector index.

Effects on the gallery:

- ``same``: the query photo joins the chosen individual (and the index);
- ``new``: a new individual is registered with the query photo as its first image;
- ``different`` / ``cannot_tell``: only logged (the photo stays a query);
- ``undo``: reverts the last not-undone verdict on a query (the photo leaves the individual;
  an individual created by that verdict is removed if the photo was its only image);
- ``merge``: every image of one individual moves to another, which absorbs it (the absorbed id
  is kept, marked ``merged_into``, so old references still resolve);
- ``split``: chosen images move to a new individual;
- ``rename``: only the display name changes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from wildreid.catalogue.records import VERDICTS, Event, ImageRecord, Individual, utc_now
from wildreid.errors import CatalogueError, ConfigError, DuplicateError, NotFoundError
from wildreid.types import Embeddings

if TYPE_CHECKING:
    from wildreid.catalogue.catalogue import Catalogue

__all__ = ["decide_query", "merge", "rename", "split", "undo"]


def _live(catalogue: Catalogue, individual_id: str) -> Individual:
    individual = catalogue.individual(individual_id)
    if individual.merged_into is not None:
        raise CatalogueError(
            f"individual {individual_id!r} was merged into {individual.merged_into!r}; "
            f"use {individual.merged_into!r}"
        )
    return individual


def _new_id(catalogue: Catalogue, wanted: str | None) -> str:
    if wanted:
        if catalogue.store.get_individual(wanted) is not None:
            raise DuplicateError(f"individual {wanted!r} already exists; choose another id")
        return wanted
    while True:
        candidate = f"ind-{secrets.token_hex(4)}"
        if catalogue.store.get_individual(candidate) is None:
            return candidate


def _assign(catalogue: Catalogue, image: ImageRecord, individual_id: str | None) -> ImageRecord:
    from dataclasses import replace

    updated = replace(
        image, individual_id=individual_id, role="gallery" if individual_id else "query"
    )
    catalogue.store.update_image(updated)
    return updated


def _apply_gallery(
    catalogue: Catalogue, added: Sequence[ImageRecord], removed: Sequence[str]
) -> None:
    """After commit: mirror the change in the in-memory gallery and the index."""
    from wildreid.catalogue.catalogue import _space_key

    for image_id in removed:
        catalogue._gallery.pop(image_id, None)
    present = set(catalogue._index.image_ids)
    gone = [i for i in removed if i in present]
    if gone:
        catalogue._index.remove(gone)
    new = [i for i in added if i.image_id not in present]
    for image in added:
        catalogue._gallery[image.image_id] = (
            image.individual_id or "",
            image.species,
            image.location,
            image.date,
        )
    if new:
        ids = [i.image_id for i in new]
        vectors = catalogue.store.vectors(_space_key(catalogue.space), ids)
        catalogue._index.add(Embeddings(np.ascontiguousarray(vectors), tuple(ids), catalogue.space))
    catalogue._after_write()


def decide_query(
    catalogue: Catalogue,
    query_image_id: str,
    verdict: str,
    *,
    who: str,
    individual_id: str | None = None,
    candidate_image_id: str = "",
    new_individual_id: str | None = None,
    name: str = "",
    confidence: float | None = None,
    tags: Sequence[str] = (),
    note: str = "",
    identification_id: int | None = None,
) -> Event:
    """Record a person's verdict on a query (see the module docstring for its effect).

    Raises:
        ConfigError: an unknown verdict, ``same`` without an individual, bad confidence.
        NotFoundError: the query or individual does not exist.
        DuplicateError: ``same`` / ``new`` on a query already placed (undo it first).
    """
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict {verdict!r} not in {VERDICTS}")
    if verdict == "same" and not individual_id:
        raise ConfigError("a 'same' verdict needs the individual the query matches")
    with catalogue._lock:
        image = catalogue.image(query_image_id)
        if verdict in ("same", "new") and image.individual_id is not None:
            raise DuplicateError(
                f"image {query_image_id!r} already belongs to {image.individual_id!r}; undo "
                "that decision first"
            )
        if individual_id:
            _live(catalogue, individual_id)
        if candidate_image_id:
            catalogue.image(candidate_image_id)
        details: dict[str, object] = {}
        added: list[ImageRecord] = []
        event = Event(
            event_id=0,
            at=utc_now(),
            who=who,
            action=verdict,
            query_image_id=query_image_id,
            individual_id=individual_id or "",
            candidate_image_id=candidate_image_id,
            identification_id=identification_id,
            confidence=confidence,
            tags=tuple(t.strip() for t in tags if t.strip()),
            note=note,
        )
        with catalogue.store.transaction():
            if verdict == "new":
                new_id = _new_id(catalogue, new_individual_id)
                catalogue.store.add_individual(
                    Individual(
                        individual_id=new_id,
                        name=name or new_id,
                        species=image.species,
                        created_at=event.at,
                    )
                )
                added.append(_assign(catalogue, image, new_id))
                details = {"assigned": new_id, "created": new_id}
                event = Event(**{**event.__dict__, "individual_id": new_id})
            elif verdict == "same":
                assert individual_id is not None
                added.append(_assign(catalogue, image, individual_id))
                details = {"assigned": individual_id}
            event = Event(**{**event.__dict__, "details": json.dumps(details)})
            event_id = catalogue.store.append_event(event)
            if added:
                catalogue._bump()
        if added:
            _apply_gallery(catalogue, added, [])
        return Event(**{**event.__dict__, "event_id": event_id})


def undo(catalogue: Catalogue, query_image_id: str, *, who: str) -> Event:
    """Revert the last verdict on a query that is not undone yet, and log the undo.

    Raises:
        NotFoundError: the query has no verdict left to undo.
        CatalogueError: the photo was moved since (merge or split); undo is refused.
    """
    with catalogue._lock:
        events = catalogue.store.events(query_image_id=query_image_id)
        undone = {e.undoes for e in events if e.action == "undo"}
        last = next(
            (e for e in reversed(events) if e.action in VERDICTS and e.event_id not in undone),
            None,
        )
        if last is None:
            raise NotFoundError(f"query {query_image_id!r} has no decision to undo")
        details = json.loads(last.details)
        image = catalogue.image(query_image_id)
        assigned = details.get("assigned")
        removed: list[str] = []
        with catalogue.store.transaction():
            if assigned:
                if image.individual_id != assigned:
                    raise CatalogueError(
                        f"image {query_image_id!r} now belongs to {image.individual_id!r} (merged "
                        f"or split since the decision); move it with split instead of undo"
                    )
                _assign(catalogue, image, None)
                removed.append(query_image_id)
                created = details.get("created")
                if created and not catalogue.store.images(individual_id=created):
                    catalogue.store.delete_individual(created)
                catalogue._bump()
            event = Event(
                event_id=0,
                at=utc_now(),
                who=who,
                action="undo",
                query_image_id=query_image_id,
                individual_id=last.individual_id,
                undoes=last.event_id,
                note=f"undo {last.action}",
                details=json.dumps({"undid": last.action, **details}),
            )
            event_id = catalogue.store.append_event(event)
        if removed:
            _apply_gallery(catalogue, [], removed)
        return Event(**{**event.__dict__, "event_id": event_id})


def merge(catalogue: Catalogue, keep: str, absorb: str, *, who: str, note: str = "") -> Event:
    """Move every image of ``absorb`` to ``keep``; ``absorb`` is marked merged into ``keep``.

    The result is verified inside the transaction; if any image stayed behind, nothing changes
    and CatalogueError is raised (a merge never reports success without having merged).

    Raises:
        ConfigError: ``keep == absorb``.
        NotFoundError / CatalogueError: an individual does not exist or was merged already.
    """
    if keep == absorb:
        raise ConfigError(f"cannot merge {keep!r} into itself")
    with catalogue._lock:
        kept = _live(catalogue, keep)
        absorbed = _live(catalogue, absorb)
        moving = catalogue.store.images(individual_id=absorb)
        before = len(catalogue.store.images(individual_id=keep))
        moved: list[ImageRecord] = []
        with catalogue.store.transaction():
            for image in moving:
                moved.append(_assign(catalogue, image, keep))
            from dataclasses import replace

            catalogue.store.update_individual(replace(absorbed, merged_into=kept.individual_id))
            left = catalogue.store.images(individual_id=absorb)
            after = len(catalogue.store.images(individual_id=keep))
            if left or after != before + len(moving):
                raise CatalogueError(
                    f"merge of {absorb!r} into {keep!r} did not move every image "
                    f"({len(left)} left behind); nothing was changed"
                )
            event = Event(
                event_id=0,
                at=utc_now(),
                who=who,
                action="merge",
                individual_id=keep,
                other_id=absorb,
                note=note,
                details=json.dumps({"moved": [i.image_id for i in moving]}),
            )
            event_id = catalogue.store.append_event(event)
            catalogue._bump()
        _apply_gallery(catalogue, moved, [])
        return Event(**{**event.__dict__, "event_id": event_id})


def split(
    catalogue: Catalogue,
    individual_id: str,
    image_ids: Sequence[str],
    *,
    who: str,
    new_individual_id: str | None = None,
    name: str = "",
    note: str = "",
) -> Event:
    """Move ``image_ids`` of an individual to a new individual.

    Raises:
        ConfigError: no images given, or all of them (rename instead), or an image of another
            individual.
    """
    unique = list(dict.fromkeys(image_ids))
    if not unique:
        raise ConfigError("split needs at least one image id to move")
    with catalogue._lock:
        source = _live(catalogue, individual_id)
        owned = {i.image_id: i for i in catalogue.store.images(individual_id=individual_id)}
        foreign = [i for i in unique if i not in owned]
        if foreign:
            raise ConfigError(
                f"image(s) {', '.join(foreign[:5])} do not belong to {individual_id!r}; nothing "
                "was changed"
            )
        if len(unique) == len(owned):
            raise ConfigError(
                f"split would move every image of {individual_id!r}; rename it instead"
            )
        moved: list[ImageRecord] = []
        with catalogue.store.transaction():
            new_id = _new_id(catalogue, new_individual_id)
            catalogue.store.add_individual(
                Individual(
                    individual_id=new_id,
                    name=name or new_id,
                    species=source.species,
                    created_at=utc_now(),
                )
            )
            for image_id in unique:
                moved.append(_assign(catalogue, owned[image_id], new_id))
            event = Event(
                event_id=0,
                at=utc_now(),
                who=who,
                action="split",
                individual_id=new_id,
                other_id=individual_id,
                note=note,
                details=json.dumps({"moved": unique}),
            )
            event_id = catalogue.store.append_event(event)
            catalogue._bump()
        _apply_gallery(catalogue, moved, [])
        return Event(**{**event.__dict__, "event_id": event_id})


def rename(catalogue: Catalogue, individual_id: str, name: str, *, who: str) -> Event:
    """Change an individual's display name (its id stays)."""
    if not name.strip():
        raise ConfigError("a name must not be empty")
    from dataclasses import replace

    with catalogue._lock:
        individual = _live(catalogue, individual_id)
        with catalogue.store.transaction():
            catalogue.store.update_individual(replace(individual, name=name.strip()))
            event = Event(
                event_id=0,
                at=utc_now(),
                who=who,
                action="rename",
                individual_id=individual_id,
                other_id=individual.name,
                details=json.dumps({"old": individual.name, "new": name.strip()}),
            )
            event_id = catalogue.store.append_event(event)
        return Event(**{**event.__dict__, "event_id": event_id})


def find(catalogue: Catalogue, individual_id: str) -> Individual:
    """The individual, following merges to the one that holds its images now."""
    individual = catalogue.individual(individual_id)
    seen = {individual_id}
    while individual.merged_into is not None and individual.merged_into not in seen:
        seen.add(individual.merged_into)
        individual = catalogue.individual(individual.merged_into)
    return individual
