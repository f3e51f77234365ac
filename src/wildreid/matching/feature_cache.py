"""Local features of a dataset, extracted once and kept on disk.

:func:`extract_features` runs an extractor over metadata rows (bbox crops through the one image
loader) and, with a :class:`FeatureCache`, extracts only the images whose file, bbox or extractor
settings changed: the cache is a :class:`~wildreid.fingerprint_cache.FingerprintCache` (the same
fingerprints, invalidation and recovery as the embedding cache) keyed by the extractor's
:attr:`~wildreid.matching.extractors.LocalExtractor.key`.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wildreid.data.dataset import BadImage, bbox_tuple
from wildreid.data.images import load_image
from wildreid.errors import ImageReadError
from wildreid.fingerprint_cache import CacheRow, FingerprintCache
from wildreid.matching.extractors import LocalExtractor
from wildreid.types import LocalFeatures

__all__ = ["ExtractionResult", "FeatureCache", "extract_features"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class FeatureCache(FingerprintCache):
    """Local features on disk, one SQLite file per extractor setting.

    Args:
        directory: the cache folder (created on the first store).
        timeout_s: how long to wait for another process's write lock before giving up.
    """

    def __init__(self, directory: str | os.PathLike[str], *, timeout_s: float = 30.0) -> None:
        super().__init__(directory, timeout_s=timeout_s, what="feature")

    def lookup(
        self, key: str, rows: Sequence[CacheRow]
    ) -> tuple[dict[str, LocalFeatures], list[CacheRow]]:
        """Cached features by image id, and the rows to extract (an unreadable entry is one)."""
        stored, missing = self.lookup_bytes(key, rows)
        found: dict[str, LocalFeatures] = {}
        for row in rows:
            blob = stored.get(row.image_id)
            if blob is None:
                continue
            try:
                found[row.image_id] = _decode(blob)
            except (ValueError, KeyError, OSError) as exc:
                logger.warning("feature cache entry of %s unreadable (%s)", row.image_id, exc)
                missing.append(row)
        return found, missing

    def store(self, key: str, rows: Sequence[CacheRow], features: Sequence[LocalFeatures]) -> int:
        """Save the features of ``rows``; failures are logged, never raised."""
        return self.store_bytes(key, rows, [_encode(f) for f in features])


def _encode(features: LocalFeatures) -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        keypoints=features.keypoints,
        descriptors=features.descriptors,
        scores=features.scores,
        image_size=np.array(features.image_size, dtype=np.int64),
    )
    return buffer.getvalue()


def _decode(blob: bytes) -> LocalFeatures:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        size = data["image_size"]
        return LocalFeatures(
            data["keypoints"], data["descriptors"], data["scores"], (int(size[0]), int(size[1]))
        )


@dataclass(frozen=True)
class ExtractionResult:
    """Features by image id, the images skipped as unreadable and the time it took.

    Attributes:
        features: one entry per readable row.
        skipped: ``(image_id, reason)`` of each unreadable image (with ``skip_bad_images``).
        extracted: how many images were extracted (the rest came from the cache).
        seconds: wall time of the extraction (decoding included).
    """

    features: dict[str, LocalFeatures]
    skipped: tuple[tuple[str, str], ...]
    extracted: int
    seconds: float


def extract_features(
    metadata: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    extractor: LocalExtractor,
    cache: FeatureCache | None = None,
    skip_bad_images: bool = False,
    progress: Progress | None = None,
) -> ExtractionResult:
    """Local features of every metadata row (``image_id``, ``path``, optional ``bbox``).

    Raises:
        ImageReadError: an image cannot be read and ``skip_bad_images`` is off; the message names
            the row, line, image id and file.
        MetadataError: a bbox cell is malformed (names the row).
    """
    start = time.perf_counter()
    root = Path(root)
    frame = metadata.reset_index(drop=True)
    ids = frame["image_id"].astype(str).tolist()
    paths = frame["path"].astype(str).tolist()
    cells = (
        frame["bbox"].fillna("").astype(str).tolist()
        if "bbox" in frame.columns
        else [""] * len(ids)
    )
    rows = [CacheRow.of(i, root / p, b) for i, p, b in zip(ids, paths, cells, strict=True)]
    key = extractor.key
    found: dict[str, LocalFeatures] = {}
    todo = list(range(len(rows)))
    if cache is not None:
        found, missing = cache.lookup(key, rows)
        wanted = {row.image_id for row in missing}
        todo = [i for i in todo if ids[i] in wanted]
    skipped: list[tuple[str, str]] = []
    new_rows: list[CacheRow] = []
    new_features: list[LocalFeatures] = []
    for done, index in enumerate(todo, start=1):
        try:
            image = load_image(root / paths[index], bbox=bbox_tuple(cells[index], index))
        except ImageReadError as exc:
            record = BadImage(index, ids[index], str(root / paths[index]), str(exc))
            if not skip_bad_images:
                raise record.error() from exc
            logger.warning("skipping %s", record.error())
            skipped.append((ids[index], str(exc)))
            continue
        features = extractor.extract(image)
        found[ids[index]] = features
        new_rows.append(rows[index])
        new_features.append(features)
        if cache is not None and len(new_rows) >= 256:
            cache.store(key, new_rows, new_features)
            new_rows, new_features = [], []
        if progress is not None:
            progress(done, len(todo))
    if cache is not None and new_rows:
        cache.store(key, new_rows, new_features)
    ordered = {i: found[i] for i in ids if i in found}
    seconds = time.perf_counter() - start
    logger.info(
        "local features: %d image(s) extracted, %d from the cache, %d skipped in %.1f s",
        len(todo) - len(skipped),
        len(rows) - len(todo),
        len(skipped),
        seconds,
    )
    return ExtractionResult(ordered, tuple(skipped), len(todo) - len(skipped), seconds)
