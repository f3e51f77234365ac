"""Re-rank a global shortlist with local features.

For each query the global scores (cosine similarities of the embeddings) pick the ``shortlist``
best gallery images; only those pairs are matched with local features, and the final ranking of
the shortlist comes from the local score or a fusion of both. Gallery items outside the shortlist
keep their global order below every shortlisted item. ``shortlist=0`` matches every pair (the
WildlifeDatasets protocol: the gallery image with most matches wins), for small galleries.

Methods (:data:`RERANKERS`) pair an extractor with a matcher:

========================  ===========================  ====================
method                    extractor                    matcher
========================  ===========================  ====================
``sift``                  OpenCV SIFT                  mutual NN + ratio test
``rootsift``              RootSIFT                     mutual NN + ratio test
``aliked-lightglue``      ALIKED-N16                   LightGlue (ALIKED)
``disk-lightglue``        DISK                         LightGlue (DISK)
========================  ===========================  ====================

Pair scores (``score``): ``matches`` (how many), ``inliers`` (how many agree with one
homography or fundamental matrix, :mod:`~wildreid.matching.verification`), or ``confidence``
(the sum of the match confidences). Fusion (``fusion``): ``local`` orders the shortlist by the
local score (ties by the global one); ``rank`` orders it by the sum of the global and local
ranks (ties by the local rank), parameter-free. ``calibrated`` (the default: as good as or
better than ``local`` on the shared datasets, and it yields probabilities for open-set
decisions; see the README) turns both scores into P(same individual) with calibrators fitted on
gallery-side pairs and averages them (:func:`wildreid.matching.fusion.fuse_shortlist`); the
calibrators come from the caller (``wildreid evaluate`` fits them, see
:func:`wildreid.pipeline.evaluate_dataset`), so :meth:`Reranker.rerank` alone orders a
``calibrated`` shortlist as ``local`` does until the caller replaces its scores (and a caller
that cannot calibrate keeps that order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from wildreid.errors import ConfigError
from wildreid.matching.extractors import ExtractorConfig, LocalExtractor, build_extractor
from wildreid.matching.matchers import MatcherConfig, PairMatcher, build_matcher
from wildreid.matching.verification import Geometry, verify
from wildreid.models.runtimes import check_runtime
from wildreid.types import LocalFeatures, Matches

__all__ = [
    "FUSIONS",
    "PAIR_SCORES",
    "RERANKERS",
    "PairComparison",
    "PairScore",
    "RerankConfig",
    "RerankResult",
    "Reranker",
    "pair_score",
    "rerank_config",
    "shortlist_indices",
    "shortlist_recall",
]

logger = logging.getLogger(__name__)

PairScore = Literal["matches", "inliers", "confidence"]
PAIR_SCORES: tuple[PairScore, ...] = ("matches", "inliers", "confidence")
Fusion = Literal["calibrated", "local", "rank"]
FUSIONS: tuple[Fusion, ...] = ("calibrated", "local", "rank")

RERANKERS: dict[str, tuple[str, str]] = {
    "sift": ("sift", "mnn"),
    "rootsift": ("rootsift", "mnn"),
    "aliked-lightglue": ("aliked", "lightglue-aliked"),
    "disk-lightglue": ("disk", "lightglue-disk"),
}
"""Re-ranking method -> (extractor name, matcher name)."""

_PAIRS_PER_CALL = 256


@dataclass(frozen=True)
class RerankConfig:
    """A re-ranking method and its settings (defaults chosen from measurements, see README).

    Attributes:
        method: a key of :data:`RERANKERS`.
        shortlist: how many global candidates per query are matched (0: every gallery image).
        score: the pair score (see the module docstring).
        fusion: how the local score re-orders the shortlist.
        geometry: the model fitted for ``inliers``.
        threshold_px: inlier threshold in pixels of the working images.
        max_keypoints: keypoint cap per image.
        working_size: long side the images are shrunk to.
        ratio: Lowe's ratio (mutual-NN matchers).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        runtime: runtime of the learned extractors' dense network (``auto``, ``torch``,
            ``onnxruntime``, ``openvino``; see :mod:`wildreid.matching.extractors`). LightGlue
            runs in torch whatever it says: its adaptive depth and width were measured faster
            than a fixed-depth compiled graph (docs/benchmarks.md).
    """

    method: str = "aliked-lightglue"
    shortlist: int = 20
    score: PairScore = "inliers"
    fusion: Fusion = "calibrated"
    geometry: Geometry = "homography"
    threshold_px: float = 4.0
    max_keypoints: int = 512
    working_size: int = 512
    ratio: float = 0.8
    device: str = "cpu"
    runtime: str = "auto"

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        if self.method not in RERANKERS:
            raise ConfigError(
                f"re-ranking method {self.method!r} not in {', '.join(sorted(RERANKERS))}"
            )
        if self.shortlist < 0:
            raise ConfigError(f"shortlist must be >= 0 (0: all pairs), got {self.shortlist}")
        if self.score not in PAIR_SCORES:
            raise ConfigError(f"pair score {self.score!r} not in {PAIR_SCORES}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion {self.fusion!r} not in {FUSIONS}")

    @property
    def extractor_config(self) -> ExtractorConfig:
        """The extractor's settings."""
        return ExtractorConfig(
            name=RERANKERS[self.method][0],
            max_keypoints=self.max_keypoints,
            working_size=self.working_size,
            device=self.device,
            runtime=self.runtime,
        )

    @property
    def matcher_config(self) -> MatcherConfig:
        """The matcher's settings."""
        return MatcherConfig(name=RERANKERS[self.method][1], ratio=self.ratio, device=self.device)


METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "sift": {"shortlist": 300},
    "rootsift": {"shortlist": 300},
    "aliked-lightglue": {"shortlist": 20},
    "disk-lightglue": {"shortlist": 20},
}
"""Settings each method starts from (measured per method, see the README's results)."""


def rerank_config(method: str, **overrides: Any) -> RerankConfig:
    """The :class:`RerankConfig` of ``method`` with its defaults, then ``overrides``.

    Raises:
        ConfigError: unknown method or an invalid setting.
    """
    if method not in RERANKERS:
        raise ConfigError(f"re-ranking method {method!r} not in {', '.join(sorted(RERANKERS))}")
    unknown = set(overrides) - set(RerankConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown re-ranking setting(s): {', '.join(sorted(unknown))}")
    return RerankConfig(method=method, **{**METHOD_DEFAULTS[method], **overrides})


def pair_score(
    matches: Matches,
    features0: LocalFeatures,
    features1: LocalFeatures,
    *,
    score: PairScore,
    geometry: Geometry = "homography",
    threshold_px: float = 4.0,
) -> tuple[float, Matches]:
    """The pair's score and its matches (with inliers set when ``score == "inliers"``)."""
    if score == "matches":
        return float(len(matches)), matches
    if score == "confidence":
        return float(matches.scores.sum(dtype=np.float64)), matches
    verified = verify(matches, features0, features1, geometry=geometry, threshold_px=threshold_px)
    return float(verified.n_inliers), verified


def shortlist_indices(scores: npt.NDArray[np.floating], size: int) -> npt.NDArray[np.intp]:
    """(Q, B) the ``size`` best gallery indices per query (ties by gallery order); ``-1`` where a
    query has fewer than ``size`` comparable (finite-score) items. ``size`` 0 means all."""
    n_gallery = scores.shape[1]
    depth = n_gallery if size == 0 else min(size, n_gallery)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    comparable = np.isfinite(np.take_along_axis(scores, order, axis=1))
    return np.where(comparable, order, -1)


def shortlist_recall(
    shortlist: npt.NDArray[np.intp],
    query_labels: Sequence[str],
    gallery_labels: Sequence[str],
    known: npt.NDArray[np.bool_],
) -> float:
    """Fraction of the known queries whose shortlist holds an image of their individual: the
    best top-1 a re-ranker of that shortlist can reach."""
    if not known.any():
        return 0.0
    gallery = np.array(gallery_labels, dtype=object)
    hits = [
        bool((gallery[row[row >= 0]] == query_labels[q]).any())
        for q, row in enumerate(shortlist)
        if known[q]
    ]
    return float(np.mean(hits))


@dataclass(frozen=True, eq=False)
class RerankResult:
    """Re-ranked scores with what they came from.

    Shapes:
        scores: (Q, G) float32: shortlisted items score ``2 + (B - position) / B`` in their
            re-ranked order, the others keep their global score (at most 1 for cosines), and
            non-comparable pairs keep ``-inf``.
        shortlist: (Q, B) gallery indices in global order, ``-1`` padding.
        local: (Q, B) float64 local pair scores of the shortlist (``nan`` at padding).
    """

    scores: np.ndarray
    shortlist: np.ndarray
    local: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PairComparison:
    """Two images compared with local features.

    Attributes:
        matches: the matches, with ``inliers`` set by the geometric verification.
        score: the pair score of the re-ranking configuration.
        seconds: ``extract`` (both images) and ``match`` (matching and verification) wall time.
    """

    features0: LocalFeatures
    features1: LocalFeatures
    matches: Matches
    score: float
    seconds: dict[str, float]


class Reranker:
    """Extract, match and re-rank with one :class:`RerankConfig`.

    Args:
        config: method and settings.
        extractor: use this extractor instead of building ``config``'s (tests, plugins).
        matcher: use this matcher instead of building ``config``'s.
    """

    def __init__(
        self,
        config: RerankConfig = RerankConfig(),
        *,
        extractor: LocalExtractor | None = None,
        matcher: PairMatcher | None = None,
    ) -> None:
        self.config = config
        self.extractor = extractor or build_extractor(config.extractor_config)
        self.matcher = matcher or build_matcher(config.matcher_config)

    def score_pairs(
        self, pairs: Sequence[tuple[LocalFeatures, LocalFeatures]]
    ) -> tuple[list[float], list[Matches]]:
        """Local score and matches of each pair."""
        config = self.config
        scores: list[float] = []
        kept: list[Matches] = []
        for start in range(0, len(pairs), _PAIRS_PER_CALL):
            chunk = pairs[start : start + _PAIRS_PER_CALL]
            for (a, b), matches in zip(chunk, self.matcher.match(chunk), strict=True):
                value, matches = pair_score(
                    matches,
                    a,
                    b,
                    score=config.score,
                    geometry=config.geometry,
                    threshold_px=config.threshold_px,
                )
                scores.append(value)
                kept.append(matches)
        return scores, kept

    def compare(self, image0: Image.Image, image1: Image.Image) -> PairComparison:
        """Extract, match and verify two images (the matches are always verified, so the
        inliers can be shown whatever the pair score)."""
        start = time.perf_counter()
        features0 = self.extractor.extract(image0)
        features1 = self.extractor.extract(image1)
        extracted = time.perf_counter()
        (matches,) = self.matcher.match([(features0, features1)])
        config = self.config
        verified = verify(
            matches,
            features0,
            features1,
            geometry=config.geometry,
            threshold_px=config.threshold_px,
        )
        score, _ = pair_score(
            verified,
            features0,
            features1,
            score=config.score,
            geometry=config.geometry,
            threshold_px=config.threshold_px,
        )
        done = time.perf_counter()
        return PairComparison(
            features0,
            features1,
            verified,
            score,
            {"extract": extracted - start, "match": done - extracted},
        )

    def pairwise(
        self,
        features: Sequence[LocalFeatures],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Local score of every pair among ``features`` (each unordered pair matched once, in
        the matcher's batches), e.g. for a discovery graph.

        Shapes:
            return: (N, N) float64, symmetric, NaN on the diagonal.
        """
        n = len(features)
        scores = np.full((n, n), np.nan)
        rows, columns = np.triu_indices(n, 1)
        chunk = _PAIRS_PER_CALL * 4
        start = time.perf_counter()
        for first in range(0, rows.size, chunk):
            i, j = rows[first : first + chunk], columns[first : first + chunk]
            values, _ = self.score_pairs(
                [(features[a], features[b]) for a, b in zip(i, j, strict=True)]
            )
            scores[i, j] = scores[j, i] = values
            if progress is not None:
                progress(min(first + chunk, rows.size), rows.size)
        logger.info(
            "matched %d pairs among %d images with %s in %.1f s",
            rows.size,
            n,
            self.config.method,
            time.perf_counter() - start,
        )
        return scores

    def rerank(
        self,
        global_scores: npt.NDArray[np.floating],
        query_features: Sequence[LocalFeatures],
        gallery_features: Sequence[LocalFeatures],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> RerankResult:
        """Re-rank every query's shortlist.

        Args:
            global_scores: (Q, G) global similarities; ``-inf`` marks pairs not to compare.
            query_features: Q features, in the rows' order.
            gallery_features: G features, in the columns' order.
            progress: called with (queries done, Q).

        Raises:
            ConfigError: the feature counts do not fit the score matrix.
        """
        n_queries, n_gallery = global_scores.shape
        if len(query_features) != n_queries or len(gallery_features) != n_gallery:
            raise ConfigError(
                f"scores are {n_queries} x {n_gallery} but there are {len(query_features)} "
                f"query and {len(gallery_features)} gallery feature sets"
            )
        start = time.perf_counter()
        shortlist = shortlist_indices(global_scores, self.config.shortlist)
        local = np.full(shortlist.shape, np.nan)
        step = max(1, _PAIRS_PER_CALL // max(1, shortlist.shape[1]))
        for first in range(0, n_queries, step):
            rows = range(first, min(first + step, n_queries))
            cells = [(q, b) for q in rows for b in np.flatnonzero(shortlist[q] >= 0)]
            pairs = [(query_features[q], gallery_features[shortlist[q, b]]) for q, b in cells]
            values, _ = self.score_pairs(pairs)
            for (q, b), value in zip(cells, values, strict=True):
                local[q, b] = value
            if progress is not None:
                progress(rows.stop, n_queries)
        scores = fuse(global_scores, shortlist, local, fusion=self.config.fusion)
        seconds = time.perf_counter() - start
        logger.info(
            "re-ranked %d queries x %d candidates with %s in %.1f s (%.3f s per query)",
            n_queries,
            shortlist.shape[1],
            self.config.method,
            seconds,
            seconds / max(1, n_queries),
        )
        return RerankResult(scores, shortlist, local, {"rerank": seconds})


def fuse(
    global_scores: npt.NDArray[np.floating],
    shortlist: npt.NDArray[np.intp],
    local: npt.NDArray[np.floating],
    *,
    fusion: Fusion,
) -> npt.NDArray[np.float32]:
    """(Q, G) scores ordering each shortlist by ``fusion`` above the rest (see
    :class:`RerankResult`)."""
    scores = np.array(global_scores, dtype=np.float32)
    depth = shortlist.shape[1]
    for q in range(shortlist.shape[0]):
        members = np.flatnonzero(shortlist[q] >= 0)  # positions in global order
        if members.size == 0:
            continue
        values = local[q, members]
        # Local rank: by local score, ties by global position (lexsort's last key is primary).
        local_order = np.lexsort((members, -values))
        if fusion in ("local", "calibrated"):  # calibrated: replaced by the caller
            order = local_order
        else:
            local_rank = np.empty(members.size, dtype=np.intp)
            local_rank[local_order] = np.arange(members.size)
            order = np.lexsort((local_rank, members + local_rank))
        ranked = shortlist[q, members[order]]
        scores[q, ranked] = 2 + (depth - np.arange(members.size)) / depth
    return scores
