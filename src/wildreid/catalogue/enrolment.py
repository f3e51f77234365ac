"""Enrolment: photos of known individuals join the catalogue (metadata tables and uploads).

These are :class:`~wildreid.catalogue.catalogue.Catalogue` methods (``enrol``, ``enrol_file``).
Order of work per chunk, for crash safety: embed (from the source files), copy the files into the
bundle by content, then one store transaction (individuals, images, vectors), then the index. A
crash before the commit leaves at most unreferenced files (``check`` notes them); after it, the
chunk is durable and the index is repaired on the next open if it missed it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from wildreid.catalogue.catalogue import EnrolResult, Progress, _cell, _hash_only, _space_key
from wildreid.catalogue.records import ImageRecord, Individual, utc_now
from wildreid.data.images import load_image
from wildreid.data.schema import UNKNOWN_IDENTITY, Problem, validate_metadata
from wildreid.errors import DuplicateError, MetadataError
from wildreid.types import Embeddings

if TYPE_CHECKING:
    from wildreid.catalogue.catalogue import Catalogue

__all__ = ["enrol", "enrol_file"]


def enrol(
    cat: Catalogue,
    metadata: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    chunk_size: int = 256,
    progress: Progress | None = None,
    on_committed: Callable[[Sequence[str]], None] | None = None,
) -> EnrolResult:
    """Add the photos of known individuals from a metadata table (wildlife-datasets format).

    Rows are checked first (nothing is added if the table has problems). Rows whose
    identity is ``unknown`` are skipped (identify them instead); a photo already in the
    catalogue (same bytes and bbox) is reported as a duplicate, not added again; unreadable
    images are skipped with their reason. Rows are committed in chunks of ``chunk_size``:
    ``on_committed`` is called with each chunk's image ids once they are durable.

    Raises:
        MetadataError: the table is invalid (every problem listed).
        DuplicateError: an image id is already used by another photo in the catalogue.
    """
    start = time.perf_counter()
    root = Path(root)
    problems = validate_metadata(metadata, root=root, check_files=True)
    if problems:
        raise MetadataError(
            f"{len(problems)} problem(s) in the metadata; first: {problems[0]}; nothing was added",
            tuple(str(p) for p in problems),
        )
    frame = metadata.reset_index(drop=True)
    skipped: list[tuple[str, str]] = []
    duplicates: list[tuple[str, str]] = []
    added: list[str] = []
    rows: list[int] = []
    for position, row in frame.iterrows():
        image_id = str(row["image_id"])
        if str(row["identity"]) == UNKNOWN_IDENTITY:
            skipped.append((image_id, "identity is 'unknown'; identify it instead"))
            continue
        existing = cat.store.get_image(image_id)
        if existing is not None:
            sha, _ = _hash_only(root / str(row["path"]))
            if existing.sha256 == sha and existing.bbox == _cell(row, "bbox"):
                duplicates.append((image_id, existing.image_id))
                continue
            problem = Problem(
                f"image id {image_id!r} is already used for another photo in the "
                "catalogue; give this photo another id",
                int(str(position)) + 1,
                "image_id",
            )
            raise DuplicateError(f"{problem}; nothing was added")
        rows.append(int(str(position)))
    total = len(rows)
    for begin in range(0, total, chunk_size):
        chunk = frame.iloc[rows[begin : begin + chunk_size]]
        done, dups, bad = _enrol_chunk(cat, chunk, root)
        added.extend(done)
        duplicates.extend(dups)
        skipped.extend(bad)
        if on_committed is not None and done:
            on_committed(done)
        if progress is not None:
            progress(min(begin + chunk_size, total), total)
    with cat._lock:
        cat._save_index()
    return EnrolResult(tuple(added), tuple(duplicates), tuple(skipped), time.perf_counter() - start)


def _enrol_chunk(
    cat: Catalogue, chunk: pd.DataFrame, root: Path
) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    embedded = cat.embedder().embed_images(chunk, root=root)
    skipped = list(embedded.skipped)
    found = embedded.embeddings
    vectors = dict(zip(found.image_ids, found.vectors, strict=True))
    records: list[ImageRecord] = []
    now = utc_now()
    for _, row in chunk.iterrows():
        image_id = str(row["image_id"])
        if image_id not in vectors:
            continue
        source = root / str(row["path"])
        try:
            sha, relative = cat.bundle.add_file(source)
        except OSError as exc:
            skipped.append((image_id, f"{source}: {exc}"))
            continue
        records.append(
            ImageRecord(
                image_id=image_id,
                sha256=sha,
                path=relative,
                individual_id=str(row["identity"]),
                role="gallery",
                species=_cell(row, "species"),
                date=_cell(row, "date"),
                location=_cell(row, "location"),
                viewpoint=_cell(row, "viewpoint"),
                encounter=_cell(row, "encounter"),
                bbox=_cell(row, "bbox"),
                landmarks=_cell(row, "landmarks"),
                original_name=Path(str(row["path"])).name,
                added_at=now,
            )
        )
    with cat._lock:
        # Duplicates are decided under the lock, so concurrent enrolments of one photo add
        # it once.
        fresh, duplicates = _without_duplicates(cat, records)
        if not fresh:
            return [], duplicates, skipped
        ids = [r.image_id for r in fresh]
        matrix = np.stack([vectors[i] for i in ids]).astype(np.float32)
        with cat.store.transaction():
            for record in fresh:
                assert record.individual_id is not None
                if cat.store.get_individual(record.individual_id) is None:
                    cat.store.add_individual(
                        Individual(
                            individual_id=record.individual_id,
                            name=record.individual_id,
                            species=record.species,
                            created_at=now,
                        )
                    )
                cat.store.add_image(record)
            cat.store.put_vectors(_space_key(cat._space), ids, matrix)
            cat._bump()
        cat._generation = cat._pending_generation
        for record in fresh:
            cat._gallery[record.image_id] = (
                record.individual_id or "",
                record.species,
                record.location,
                record.date,
            )
        cat._index.add(Embeddings(np.ascontiguousarray(matrix), tuple(ids), cat._space))
    return ids, duplicates, skipped


def _without_duplicates(
    cat: Catalogue, records: list[ImageRecord]
) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    fresh: list[ImageRecord] = []
    duplicates: list[tuple[str, str]] = []
    seen: dict[tuple[str, str], str] = {}
    for record in records:
        key = (record.sha256, record.bbox)
        twin = seen.get(key) or next(
            (
                i.image_id
                for i in cat.store.images_by_content(record.sha256)
                if i.bbox == record.bbox and i.role == "gallery"
            ),
            None,
        )
        if twin is None and cat.store.get_image(record.image_id) is not None:
            raise DuplicateError(
                f"image id {record.image_id!r} is already used for another photo in the "
                "catalogue; give this photo another id"
            )
        if twin is not None:
            duplicates.append((record.image_id, twin))
            continue
        seen[key] = record.image_id
        fresh.append(record)
    return fresh, duplicates


def enrol_file(
    cat: Catalogue,
    source: bytes,
    *,
    individual_id: str,
    filename: str = "",
    species: str = "",
    location: str = "",
    date: str = "",
    viewpoint: str = "",
    bbox: str = "",
) -> EnrolResult:
    """Add one uploaded photo of a known individual (created if new); see :meth:`enrol`.

    Its image id is ``e-`` and the first 16 hex digits of the photo's SHA-256, so the same
    photo sent twice (even concurrently) is one image.
    """
    suffix = Path(filename).suffix.lower()[:8] if filename else ""
    image_id = f"e-{hashlib.sha256(source).hexdigest()[:16]}"
    with cat._staging() as staging:
        tmp = staging / f"{image_id}{suffix}"
        tmp.write_bytes(source)
        load_image(tmp, max_pixels=cat.max_pixels)  # refuse bad uploads with their reason
        row = {
            "image_id": image_id,
            "identity": individual_id,
            "path": tmp.name,
            "species": species,
            "location": location,
            "date": date,
            "viewpoint": viewpoint,
            "bbox": bbox,
        }
        return enrol(cat, pd.DataFrame([row], dtype=str), root=staging)
