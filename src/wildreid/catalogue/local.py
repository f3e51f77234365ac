"""Local-feature matching over a catalogue's own images: re-ranking and the evidence to show.

:class:`LocalMatching` is a :class:`~wildreid.matching.rerank.Reranker` (extractor + matcher of
one :class:`~wildreid.matching.rerank.RerankConfig`) with a
:class:`~wildreid.matching.feature_cache.FeatureCache` inside the bundle (``DIR/features``):
every image's features are extracted once (bbox crops through the one image loader, see
:func:`~wildreid.matching.feature_cache.extract_features`) and reused by later queries, by the
calibration and by the review UI's drawings. Images are content-addressed in the bundle, so a
cache entry stays valid until the extractor's settings change. Decoded features are also kept in
memory (least recently used first out, up to ``memory_bytes``): reading a feature set back from
the disk cache costs more than matching it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from wildreid.catalogue.bundle import Bundle
from wildreid.catalogue.records import ImageRecord
from wildreid.data.images import load_image
from wildreid.data.schema import parse_bbox
from wildreid.errors import ConfigError
from wildreid.matching.feature_cache import FeatureCache, extract_features
from wildreid.matching.rerank import (
    RERANKERS,
    PairComparison,
    RerankConfig,
    Reranker,
    rerank_config,
)
from wildreid.matching.verification import verify
from wildreid.types import LocalFeatures

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["CATALOGUE_DEFAULTS", "LocalMatching", "resolve_rerank"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

_EXTRACT_CHUNK = 32


CATALOGUE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sift": {"shortlist": 1000},
    "rootsift": {"shortlist": 1000},
}
"""Where a catalogue departs from :data:`~wildreid.matching.rerank.METHOD_DEFAULTS`: SIFT matches
up to 1000 gallery images per query, i.e. every image of a catalogue of up to 1000. Measured on
LionData (README, catalogue section): the global top-100 holds the right lion for only 84% of the
queries, and SIFT over all 585 gallery images doubles the top-1 of SIFT over the top 100 (29.0%
vs 14.2%), for 3.0 s instead of 0.6 s per query (p50, features cached, a 2-core machine at load
~9; about 1 ms per pair on an idle core). 1000 caps the cost for larger catalogues."""


def resolve_rerank(
    rerank: str | RerankConfig | None, *, shortlist: int | None = None
) -> RerankConfig | None:
    """The :class:`RerankConfig` of a method name (its measured defaults), or ``None``.

    Args:
        rerank: a method of :data:`~wildreid.matching.rerank.RERANKERS`, a config, or ``None``
            (global scores only).
        shortlist: gallery images matched per query (0: every image the filters admit);
            default: :data:`CATALOGUE_DEFAULTS`, else the method's
            (:data:`~wildreid.matching.rerank.METHOD_DEFAULTS`).

    Raises:
        ConfigError: an unknown method (the known ones named) or a negative shortlist.
    """
    if rerank is None or rerank == "":
        if shortlist is not None:
            raise ConfigError("a shortlist needs a re-ranking method (e.g. rerank='sift')")
        return None
    if isinstance(rerank, RerankConfig):
        config = rerank
    else:
        if rerank not in RERANKERS:
            raise ConfigError(
                f"re-ranking method {rerank!r} is not one of {', '.join(sorted(RERANKERS))}"
            )
        config = rerank_config(rerank, **CATALOGUE_DEFAULTS.get(rerank, {}))
    if shortlist is not None:
        config = dataclasses.replace(config, shortlist=shortlist)
    return config


class LocalMatching:
    """Local features of a bundle's images, matched with one re-ranking configuration.

    Thread-safe: feature extraction runs one call at a time (the OpenCV or torch extractor is
    shared); matching (batched torch, OpenCV's RANSAC) runs in the caller's thread, so a request
    whose features are cached never waits for another's matching.

    Args:
        memory_bytes: decoded features kept in memory (keypoints + descriptors + scores).
    """

    def __init__(
        self, bundle: Bundle, config: RerankConfig, *, memory_bytes: int = 256 * 1024 * 1024
    ) -> None:
        self.bundle = bundle
        self.config = config
        self.reranker = Reranker(config)
        self.cache = FeatureCache(bundle.features_dir)
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[tuple[str, str, str], LocalFeatures] = OrderedDict()
        self._memory_used = 0
        self._memory_lock = threading.Lock()
        self._extract_lock = threading.Lock()  # one extractor call at a time (OpenCV, torch)

    @property
    def matcher_name(self) -> str:
        """What calibrations of this matching are keyed by: ``method/score``."""
        return f"{self.config.method}/{self.config.score}"

    def describe(self) -> dict[str, Any]:
        """The settings an identification records."""
        config = self.config
        return {
            "method": config.method,
            "score": config.score,
            "shortlist": config.shortlist,
            "fusion": config.fusion,
            "max_keypoints": config.max_keypoints,
            "working_size": config.working_size,
        }

    def features(
        self,
        images: Sequence[ImageRecord],
        *,
        skip_bad_images: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, LocalFeatures]:
        """Features by image id (from the cache, extracting the missing ones).

        Args:
            skip_bad_images: leave out (and log) images that cannot be read instead of failing.

        Raises:
            ImageReadError: a stored image cannot be read any more (run ``catalogue check``)
                and ``skip_bad_images`` is off.
        """
        found: dict[str, LocalFeatures] = {}
        todo: list[ImageRecord] = []
        with self._memory_lock:
            for image in images:
                cached = self._memory.get(_memory_key(image))
                if cached is None:
                    todo.append(image)
                else:
                    self._memory.move_to_end(_memory_key(image))
                    found[image.image_id] = cached
        # In chunks, so that another request's extraction (an interactive query's own photo)
        # waits for one chunk, not for a whole cold shortlist.
        for start in range(0, len(todo), _EXTRACT_CHUNK):
            chunk = todo[start : start + _EXTRACT_CHUNK]
            frame = pd.DataFrame(
                {
                    "image_id": [i.image_id for i in chunk],
                    "path": [i.path for i in chunk],
                    "bbox": [i.bbox for i in chunk],
                }
            )
            with self._extract_lock:
                result = extract_features(
                    frame,
                    root=self.bundle.root,
                    extractor=self.reranker.extractor,
                    cache=self.cache,
                    skip_bad_images=skip_bad_images,
                )
            with self._memory_lock:
                for image in chunk:
                    features = result.features.get(image.image_id)
                    if features is not None:
                        found[image.image_id] = features
                        self._remember(_memory_key(image), features)
            if progress is not None:
                progress(start + len(chunk), len(todo))
        return found

    def _remember(self, key: tuple[str, str, str], features: LocalFeatures) -> None:
        size = features.keypoints.nbytes + features.descriptors.nbytes + features.scores.nbytes
        if size > self.memory_bytes:
            return
        self._memory[key] = features
        self._memory_used += size
        while self._memory_used > self.memory_bytes:
            _, dropped = self._memory.popitem(last=False)
            self._memory_used -= (
                dropped.keypoints.nbytes + dropped.descriptors.nbytes + dropped.scores.nbytes
            )

    def score(
        self, query: LocalFeatures, gallery: Sequence[LocalFeatures]
    ) -> tuple[list[float], list[PairComparison]]:
        """The pair score of the query with each gallery image, and each comparison (matches
        verified by the geometric model, so their inliers can be counted and drawn)."""
        start = time.perf_counter()
        scores, matches = self.reranker.score_pairs([(query, g) for g in gallery])
        config = self.config
        comparisons = []
        for features, value, found in zip(gallery, scores, matches, strict=True):
            if config.score != "inliers":  # ``inliers`` scoring verified them already
                found = verify(
                    found,
                    query,
                    features,
                    geometry=config.geometry,
                    threshold_px=config.threshold_px,
                )
            comparisons.append(PairComparison(query, features, found, value, {}))
        logger.debug(
            "matched 1 x %d pairs in %.1f ms", len(gallery), (time.perf_counter() - start) * 1e3
        )
        return scores, comparisons

    def compare(self, query: ImageRecord, image: ImageRecord) -> PairComparison:
        """The comparison of two stored images (features from the cache)."""
        features = self.features([query, image])
        _, (comparison,) = self.score(features[query.image_id], [features[image.image_id]])
        return comparison

    def load(self, image: ImageRecord) -> Image.Image:
        """The stored image as the extractor saw it (its bbox crop)."""
        box = parse_bbox(image.bbox) if image.bbox else None
        return load_image(
            self.bundle.file(image.path), bbox=None if box is None else box.as_tuple()
        )


def _memory_key(image: ImageRecord) -> tuple[str, str, str]:
    return image.image_id, image.path, image.bbox
