"""Shortlist re-ranking: shortlists, fusion, recall and the Reranker with test doubles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from tests.matching.local_images import photo, unrelated, warped
from wildreid.errors import ConfigError
from wildreid.matching.extractors import ExtractorConfig
from wildreid.matching.matchers import MatcherConfig
from wildreid.matching.rerank import (
    RerankConfig,
    Reranker,
    fuse,
    rerank_config,
    shortlist_indices,
    shortlist_recall,
)
from wildreid.types import LocalFeatures, Matches

INF = np.inf


def test_shortlist_is_best_first_ties_by_gallery_order_and_skips_excluded() -> None:
    scores = np.array([[0.1, 0.5, 0.5, -INF, 0.9], [-INF, -INF, 0.2, -INF, -INF]])
    np.testing.assert_array_equal(shortlist_indices(scores, 3), [[4, 1, 2], [2, -1, -1]])
    np.testing.assert_array_equal(shortlist_indices(scores, 0)[0], [4, 1, 2, 0, -1])


def test_local_fusion_orders_the_shortlist_by_local_score_above_the_rest() -> None:
    global_scores = np.array([[0.9, 0.8, 0.7, 0.6, -INF]], dtype=np.float32)
    shortlist = np.array([[0, 1, 2]])
    local = np.array([[3.0, 10.0, 3.0]])
    scores = fuse(global_scores, shortlist, local, fusion="local")
    order = np.argsort(-scores[0], kind="stable")
    # 1 (10 matches), then 0 and 2 (3 each, global order), then 3 (not shortlisted), then 4.
    np.testing.assert_array_equal(order, [1, 0, 2, 3, 4])
    assert scores[0, 4] == -INF and scores[0, 3] == pytest.approx(0.6)


def test_rank_fusion_sums_global_and_local_ranks() -> None:
    global_scores = np.array([[0.9, 0.8, 0.7, 0.6]], dtype=np.float32)
    shortlist = np.array([[0, 1, 2, 3]])
    local = np.array([[0.0, 1.0, 2.0, 9.0]])  # local ranks 3, 2, 1, 0
    scores = fuse(global_scores, shortlist, local, fusion="rank")
    # rank sums 3, 3, 3, 3: ties go to the better local rank.
    np.testing.assert_array_equal(np.argsort(-scores[0], kind="stable"), [3, 2, 1, 0])
    local = np.array([[5.0, 0.0, 1.0, 0.0]])  # local ranks 0, 3, 1, 2: sums 0, 4, 3, 5
    scores = fuse(global_scores, shortlist, local, fusion="rank")
    np.testing.assert_array_equal(np.argsort(-scores[0], kind="stable"), [0, 2, 1, 3])


def test_shortlist_recall_counts_known_queries_with_their_individual() -> None:
    shortlist = np.array([[0, 1], [2, -1], [1, 0]])
    recall = shortlist_recall(
        shortlist, ["a", "b", "z"], ["a", "c", "c"], np.array([True, True, False])
    )
    assert recall == 0.5  # a found, b missed; z is new and not counted


class _Extractor:
    config = ExtractorConfig(name="sift")
    key = "{}"
    descriptor_dim = 1

    def extract(self, image: Image.Image) -> LocalFeatures:
        raise AssertionError("not used")


class _CountingMatcher:
    """Matches as many keypoints as the smaller side has (a deterministic test double)."""

    config = MatcherConfig()

    def __init__(self) -> None:
        self.pairs_seen = 0

    def match(self, pairs: Sequence[tuple[LocalFeatures, LocalFeatures]]) -> list[Matches]:
        self.pairs_seen += len(pairs)
        out = []
        for a, b in pairs:
            n = min(len(a), len(b))
            out.append(Matches(np.c_[np.arange(n), np.arange(n)], np.ones(n)))
        return out


def _features(n: int) -> LocalFeatures:
    return LocalFeatures(np.zeros((n, 2)), np.zeros((n, 1)), np.ones(n), (8, 8))


def test_reranker_matches_only_the_shortlist() -> None:
    matcher = _CountingMatcher()
    config = RerankConfig(method="sift", shortlist=2, score="matches", fusion="local")
    reranker = Reranker(config, extractor=_Extractor(), matcher=matcher)
    global_scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.3, 0.4]], dtype=np.float32)
    gallery = [_features(2), _features(7), _features(9)]
    result = reranker.rerank(global_scores, [_features(5), _features(8)], gallery)
    assert matcher.pairs_seen == 4
    np.testing.assert_array_equal(result.shortlist, [[0, 1], [2, 1]])
    np.testing.assert_array_equal(result.local, [[2, 5], [8, 7]])
    assert np.argmax(result.scores[0]) == 1 and np.argmax(result.scores[1]) == 2
    with pytest.raises(ConfigError, match="feature sets"):
        reranker.rerank(global_scores, [_features(1)], gallery)


def test_compare_real_images_with_sift() -> None:
    reranker = Reranker(rerank_config("sift", geometry="homography"))
    same = reranker.compare(photo(), warped())
    other = reranker.compare(photo(), unrelated())
    assert same.matches.n_inliers > 5 * max(1, other.matches.n_inliers)
    assert same.score == same.matches.n_inliers  # default pair score: inliers
    assert set(same.seconds) == {"extract", "match"}


def test_rerank_config_errors() -> None:
    with pytest.raises(ConfigError, match="re-ranking method 'orb'"):
        rerank_config("orb")
    with pytest.raises(ConfigError, match="unknown re-ranking setting"):
        rerank_config("sift", shortlst=5)
    with pytest.raises(ConfigError, match="pair score"):
        rerank_config("sift", score="votes")
    with pytest.raises(ConfigError, match="shortlist"):
        RerankConfig(shortlist=-1)
