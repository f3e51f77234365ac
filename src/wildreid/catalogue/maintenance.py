"""Catalogue maintenance: consistency check, re-embedding with another model, export.

These are :class:`~wildreid.catalogue.catalogue.Catalogue` methods (``check``, ``reembed``,
``export``); the functions live here to keep the catalogue module to its core.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from wildreid.catalogue.catalogue import CheckReport, Progress, _make_embedder, _space_key
from wildreid.data.schema import UNKNOWN_IDENTITY, write_metadata
from wildreid.errors import ImageReadError, IndexBackendError
from wildreid.files import atomic_path
from wildreid.index.kinds import build_index, load_index
from wildreid.types import Embeddings, EmbeddingSpace

if TYPE_CHECKING:
    from wildreid.catalogue.catalogue import Catalogue

__all__ = ["check", "export", "reembed"]

logger = logging.getLogger(__name__)


def check(cat: Catalogue, *, verify_files: bool = True) -> CheckReport:
    """Check the catalogue's consistency (database, files, vectors, index); a calibration that
    no longer applies (fitted for another model) is noted.

    Args:
        verify_files: also hash every image file (slow on large catalogues).
    """
    problems: list[str] = []
    notes: list[str] = []
    integrity = getattr(cat.store, "integrity_problems", None)
    if integrity is not None:
        problems.extend(integrity())
    images = cat.store.images()
    individuals = {i.individual_id: i for i in cat.store.individuals()}
    have_vectors = cat.store.vector_ids(_space_key(cat._space))
    referenced = set()
    for image in images:
        referenced.add(image.path)
        try:
            path = cat.bundle.file(image.path)
        except ValueError as exc:
            problems.append(f"image {image.image_id}: {exc}")
            continue
        if not path.is_file():
            problems.append(f"image {image.image_id}: file {image.path} is missing")
        elif verify_files:
            from wildreid.files import sha256_file

            if sha256_file(path) != image.sha256:
                problems.append(f"image {image.image_id}: file {image.path} was modified")
        if image.image_id not in have_vectors:
            problems.append(f"image {image.image_id}: no vector in the active space")
        if image.role == "gallery":
            owner = individuals.get(image.individual_id or "")
            if owner is None:
                problems.append(
                    f"image {image.image_id}: individual {image.individual_id!r} is missing"
                )
            elif owner.merged_into is not None:
                problems.append(
                    f"image {image.image_id}: still on {owner.individual_id}, which was "
                    f"merged into {owner.merged_into}"
                )
    on_disk_ids: set[str] | None = None
    if cat.bundle.index_path.exists():
        try:
            on_disk = load_index(cat.bundle.index_path)
            on_disk_ids = set(on_disk.image_ids) if on_disk.space == cat._space else None
        except IndexBackendError as exc:
            problems.append(f"index file: {exc}")
    gallery = {i.image_id for i in images if i.role == "gallery"}
    if set(cat._index.image_ids) != gallery:
        problems.append("the in-memory index differs from the gallery")
    if on_disk_ids is not None and on_disk_ids != gallery:
        notes.append(
            f"the index file is {len(gallery ^ on_disk_ids)} image(s) behind; it is brought "
            "into step on the next open or save"
        )
    orphans = sorted(set(cat.bundle.stored_files()) - referenced)
    if orphans:
        notes.append(
            f"{len(orphans)} stored file(s) are not referenced (left by an interrupted "
            f"enrolment), e.g. {orphans[0]}"
        )
    _, calibration_notes = cat._usable_calibration()
    notes.extend(calibration_notes)
    return CheckReport(tuple(problems), tuple(notes), cat.store.counts())


def reembed(
    cat: Catalogue,
    model: str,
    *,
    weights: str | None = None,
    progress: Progress | None = None,
    batch_size: int = 32,
) -> EmbeddingSpace:
    """Embed every image with another model, then switch to its space in one step.

    Until the switch, identification keeps using the current space and index; a failure
    before the switch leaves the catalogue on the old space.

    Returns:
        The new active space.
    """
    embedder = _make_embedder(model, weights, cat.device, cat.runtime)
    space = embedder.space
    key = _space_key(space)
    images = cat.store.images()
    frame = pd.DataFrame(
        {
            "image_id": [i.image_id for i in images],
            "path": [i.path for i in images],
            "bbox": [i.bbox for i in images],
        }
    )
    done = 0
    for begin in range(0, len(frame), batch_size):
        chunk = frame.iloc[begin : begin + batch_size]
        result = embedder.embed_images(chunk, root=cat.bundle.root)
        if result.skipped:
            image_id, reason = result.skipped[0]
            raise ImageReadError(f"re-embedding stopped at {image_id}: {reason}")
        with cat.store.transaction():
            cat.store.put_vectors(key, list(result.embeddings.image_ids), result.embeddings.vectors)
        done += len(chunk)
        if progress is not None:
            progress(done, len(frame))
    index = build_index("flat", space=space, dim=space.dim)
    gallery_ids = [i.image_id for i in images if i.role == "gallery"]
    if gallery_ids:
        index.add(Embeddings(cat.store.vectors(key, gallery_ids), tuple(gallery_ids), space))
    staged = cat.bundle.staged_index_path(key)
    index.save(staged)
    with cat._lock:
        old_key = _space_key(cat._space)
        with cat.store.transaction():
            cat.store.set_meta("model", model)
            cat.store.set_meta("weights", weights or "")
            cat.store.set_meta("space", space.to_json())
            cat._bump()
            if old_key != key:
                cat.store.drop_space(old_key)
        cat._space, cat._index, cat._embedder = space, index, embedder
        cat._after_write()
        cat._read_gallery()
        cat._sync_index()
        cat._save_index()
        for path in (staged, Path(f"{staged}.json")):
            path.unlink(missing_ok=True)
    logger.info("catalogue %s switched to %s", cat.root, space.describe())
    return space


def export(cat: Catalogue, out_dir: str | os.PathLike[str]) -> Path:
    """Write the gallery as a metadata table with its images, the individuals and the log.

    ``out_dir/metadata.csv`` (wildlife-datasets columns plus ``location`` and
    ``individual_name``) with ``out_dir/images/...`` can be added to another catalogue;
    ``individuals.csv`` and ``decisions.jsonl`` keep the names and the audit log.

    Returns:
        The metadata CSV written.
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {i.individual_id: i.name for i in cat.store.individuals()}
    rows = []
    for image in cat.store.images(role="gallery"):
        target = out / image.path
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(cat.bundle.file(image.path), target)
            except OSError:
                shutil.copyfile(cat.bundle.file(image.path), target)
        rows.append(
            {
                "image_id": image.image_id,
                "identity": image.individual_id or UNKNOWN_IDENTITY,
                "path": image.path,
                "species": image.species,
                "viewpoint": image.viewpoint,
                "date": image.date,
                "encounter": image.encounter,
                "bbox": image.bbox,
                "landmarks": image.landmarks,
                "location": image.location,
                "individual_name": names.get(image.individual_id or "", ""),
            }
        )
    columns = ["image_id", "identity", "path", "species", "viewpoint", "date", "encounter"]
    columns += ["bbox", "landmarks", "location", "individual_name"]
    metadata = out / "metadata.csv"
    write_metadata(pd.DataFrame(rows, columns=columns, dtype=str), metadata)
    individuals = pd.DataFrame(
        [i.__dict__ for i in cat.store.individuals()],
        columns=["individual_id", "name", "species", "notes", "created_at", "merged_into"],
    )
    with atomic_path(out / "individuals.csv") as tmp:
        individuals.to_csv(tmp, index=False)
    with atomic_path(out / "decisions.jsonl") as tmp:
        tmp.write_text(
            "".join(json.dumps(e.to_dict()) + "\n" for e in cat.store.events()),
            encoding="utf-8",
        )
    return metadata
