"""Tests for wildreid.evaluation.metrics: hand-computed values, ties, open set, validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from wildreid.errors import ConfigError
from wildreid.evaluation import metrics
from wildreid.evaluation.metrics import (
    baks,
    baus,
    cmc,
    mean_average_precision,
    mean_inverse_negative_penalty,
    new_individual_auroc,
    precision_at_k,
    similarity_from_distance,
    summarize,
    threshold_at_fpr,
    top_k_accuracy,
    tpr_at_fpr,
)

# Closed-set example: 3 queries x 5 gallery items.
GALLERY = ["a", "b", "a", "c", "b"]
QUERIES = ["a", "b", "c"]
SCORES = np.array(
    [
        [0.9, 0.8, 0.1, 0.5, 0.3],
        [0.7, 0.2, 0.6, 0.1, 0.4],
        [0.3, 0.9, 0.2, 0.8, 0.1],
    ]
)
# Ranked gallery columns and hits (x = same identity):
#   q0 "a": cols 0 1 3 4 2 -> labels a b c b a -> hits at ranks 1, 5
#           AP = (1/1 + 2/5) / 2 = 7/10;  INP = |G_q| / R_hard = 2/5
#   q1 "b": cols 0 2 4 1 3 -> labels a a b b c -> hits at ranks 3, 4
#           AP = (1/3 + 2/4) / 2 = 5/12;  INP = 2/4 = 1/2
#   q2 "c": cols 1 3 0 2 4 -> labels b c a a b -> hit at rank 2
#           AP = (1/2) / 1 = 1/2;         INP = 1/2
# First-hit ranks 1, 3, 2 -> CMC = [1/3, 2/3, 1, 1, 1]
# mAP  = (7/10 + 5/12 + 1/2) / 3 = (42 + 25 + 30) / 180 = 97/180
# mINP = (2/5 + 1/2 + 1/2) / 3 = 7/15
# precision@1 = (1 + 0 + 0) / 3 = 1/3
# precision@2 = (1/2 + 0 + 1/2) / 3 = 1/3
# precision@4 = (1/4 + 2/4 + 1/4) / 3 = 1/3;  precision@5 = (2/5 + 2/5 + 1/5) / 3 = 1/3
EXPECTED_CMC = [1 / 3, 2 / 3, 1, 1, 1]
EXPECTED_MAP = 97 / 180
EXPECTED_MINP = 7 / 15

# Open-set example: 7 queries x 4 gallery items; "x" and "unknown" queries are new.
OPEN_GALLERY = ["a", "a", "b", "unknown"]
OPEN_QUERIES = ["a", "a", "b", "x", "x", "unknown", "unknown"]
OPEN_SCORES = np.array(
    [
        [0.9, 0.5, 0.1, 0.0],  # q0 a: top-1 0.9 -> col 0 "a"
        [0.3, 0.2, 0.4, 0.1],  # q1 a: top-1 0.4 -> col 2 "b" (wrong identity)
        [0.1, 0.2, 0.8, 0.3],  # q2 b: top-1 0.8 -> col 2 "b"
        [0.3, 0.1, 0.0, 0.2],  # q3 x: top-1 0.3
        [0.1, 0.2, 0.0, 0.1],  # q4 x: top-1 0.2
        [0.1, 0.2, 0.3, 0.6],  # q5 unknown: top-1 0.6 -> col 3 "unknown"
        [0.2, 0.0, 0.1, 0.1],  # q6 unknown: top-1 0.2
    ]
)
# Known top-1 scores: 0.9, 0.4, 0.8; new top-1 scores: 0.3, 0.2, 0.6, 0.2.


def test_cmc_matches_hand_computation() -> None:
    np.testing.assert_allclose(cmc(SCORES, QUERIES, GALLERY), EXPECTED_CMC)
    np.testing.assert_allclose(cmc(SCORES, QUERIES, GALLERY, max_rank=2), [1 / 3, 2 / 3])
    # Beyond the gallery size every known query has been matched.
    np.testing.assert_allclose(cmc(SCORES, QUERIES, GALLERY, max_rank=7), [*EXPECTED_CMC, 1, 1])


@pytest.mark.parametrize(("k", "expected"), [(1, 1 / 3), (2, 2 / 3), (3, 1.0), (9, 1.0)])
def test_top_k_accuracy_matches_hand_computation(k: int, expected: float) -> None:
    assert top_k_accuracy(SCORES, QUERIES, GALLERY, k=k) == pytest.approx(expected)


@pytest.mark.parametrize(("k", "expected"), [(1, 1 / 3), (2, 1 / 3), (3, 1 / 3), (5, 1 / 3)])
def test_precision_at_k_matches_hand_computation(k: int, expected: float) -> None:
    # k=3: q0 a b c -> 1/3, q1 a a b -> 1/3, q2 b c a -> 1/3.
    assert precision_at_k(SCORES, QUERIES, GALLERY, k=k) == pytest.approx(expected)


def test_precision_at_k_counts_every_hit_in_the_top_k() -> None:
    # One query "a", ranked labels a a b: precision@2 = 2/2, precision@3 = 2/3.
    scores = np.array([[0.9, 0.8, 0.7]])
    assert precision_at_k(scores, ["a"], ["a", "a", "b"], k=2) == pytest.approx(1.0)
    assert precision_at_k(scores, ["a"], ["a", "a", "b"], k=3) == pytest.approx(2 / 3)


def test_mean_average_precision_matches_hand_computation() -> None:
    assert mean_average_precision(SCORES, QUERIES, GALLERY) == pytest.approx(EXPECTED_MAP)


def test_minp_matches_hand_computation() -> None:
    assert mean_inverse_negative_penalty(SCORES, QUERIES, GALLERY) == pytest.approx(EXPECTED_MINP)


def test_ties_are_broken_by_gallery_order() -> None:
    # All scores equal: the ranking is the gallery order.
    scores = np.full((1, 3), 0.5)
    # Ranked labels b a a: first hit at rank 2, AP = (1/2 + 2/3) / 2 = 7/12, INP = 2/3.
    assert top_k_accuracy(scores, ["a"], ["b", "a", "a"], k=1) == 0.0
    np.testing.assert_allclose(cmc(scores, ["a"], ["b", "a", "a"]), [0, 1, 1])
    assert mean_average_precision(scores, ["a"], ["b", "a", "a"]) == pytest.approx(7 / 12)
    assert mean_inverse_negative_penalty(scores, ["a"], ["b", "a", "a"]) == pytest.approx(2 / 3)
    # Same scores, "a" moved to the front: ranked labels a b a, AP = (1 + 2/3) / 2 = 5/6.
    assert top_k_accuracy(scores, ["a"], ["a", "b", "a"], k=1) == 1.0
    assert mean_average_precision(scores, ["a"], ["a", "b", "a"]) == pytest.approx(5 / 6)
    # The open-set prediction uses the same rule: the earlier column "b" wins, so BAKS is 0.
    assert baks(scores, ["a"], ["b", "a", "a"], threshold=0.5) == 0.0
    assert baks(scores, ["a"], ["a", "b", "a"], threshold=0.5) == 1.0


def test_partial_ties_and_repeated_calls_are_deterministic() -> None:
    # Column 1 ranks first; columns 0 and 2 tie and keep gallery order: ranked labels b a a.
    scores = np.array([[0.5, 0.9, 0.5]])
    results = [mean_average_precision(scores, ["a"], ["a", "b", "a"]) for _ in range(5)]
    assert len(set(results)) == 1
    assert results[0] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_queries_absent_from_gallery_are_excluded_from_closed_set_metrics() -> None:
    queries = [*QUERIES, "d", "unknown"]
    scores = np.vstack([SCORES, [[0.9, 0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1, 0.9]]])
    np.testing.assert_allclose(cmc(scores, queries, GALLERY), EXPECTED_CMC)
    assert top_k_accuracy(scores, queries, GALLERY, k=1) == pytest.approx(1 / 3)
    assert precision_at_k(scores, queries, GALLERY, k=2) == pytest.approx(1 / 3)
    assert mean_average_precision(scores, queries, GALLERY) == pytest.approx(EXPECTED_MAP)
    assert mean_inverse_negative_penalty(scores, queries, GALLERY) == pytest.approx(EXPECTED_MINP)


def test_unknown_gallery_items_never_match() -> None:
    # Query "a" ranks the "unknown" item first: first hit at rank 2, AP = 1/2.
    # Query "unknown" is a new individual even though the gallery has an "unknown" item;
    # if "unknown" matched "unknown", top-1 would be 1/2 and mAP (1 + 1/2) / 2 = 3/4.
    scores = np.array([[0.9, 0.1], [0.9, 0.1]])
    queries, gallery = ["a", "unknown"], ["unknown", "a"]
    assert top_k_accuracy(scores, queries, gallery, k=1) == 0.0
    assert mean_average_precision(scores, queries, gallery) == pytest.approx(1 / 2)
    assert summarize(scores, queries, gallery)["n_new_queries"] == 1


def test_blocked_ranking_equals_single_block(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = summarize(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, ks=(1, 2), threshold=0.5)
    monkeypatch.setattr(metrics, "_BLOCK_CELLS", 5)  # 1 query per block (G = 4)
    assert summarize(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, ks=(1, 2), threshold=0.5) == (
        expected
    )


def _naive_closed_set(
    scores: npt.NDArray[Any], queries: list[str], gallery: list[str]
) -> tuple[list[int], float, float]:
    """Loop-based first-hit ranks, mAP and mINP; Python's sort is stable like the tie rule."""
    first_hits, aps, inps = [], [], []
    for row, query in zip(scores, queries, strict=True):
        order = sorted(range(len(gallery)), key=lambda j: -row[j])
        hit_ranks = [r + 1 for r, j in enumerate(order) if gallery[j] == query]
        if not hit_ranks:
            continue
        first_hits.append(hit_ranks[0])
        aps.append(sum((i + 1) / rank for i, rank in enumerate(hit_ranks)) / len(hit_ranks))
        inps.append(len(hit_ranks) / hit_ranks[-1])
    return first_hits, float(np.mean(aps)), float(np.mean(inps))


def test_closed_set_metrics_match_a_naive_loop_with_many_ties() -> None:
    rng = np.random.default_rng(7)
    gallery = [f"id{i}" for i in rng.integers(0, 6, size=40)]
    queries = [f"id{i}" for i in rng.integers(0, 8, size=30)]  # id6, id7 are never in gallery
    scores = rng.integers(0, 4, size=(30, 40))  # integer scores: ties everywhere
    first_hits, expected_map, expected_minp = _naive_closed_set(scores, queries, gallery)
    expected_cmc = [np.mean(np.array(first_hits) <= k) for k in range(1, 41)]
    np.testing.assert_allclose(cmc(scores, queries, gallery), expected_cmc)
    assert mean_average_precision(scores, queries, gallery) == pytest.approx(expected_map)
    assert mean_inverse_negative_penalty(scores, queries, gallery) == pytest.approx(expected_minp)


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        # 0.5: q0 -> a (right), q1 0.4 -> new (wrong), q2 -> b (right): mean(a 1/2, b 1) = 3/4.
        (0.5, 3 / 4),
        # 0.85: q0 -> a (right), q1 -> new, q2 0.8 -> new: mean(a 1/2, b 0) = 1/4.
        (0.85, 1 / 4),
        # -inf: q1 -> b (wrong): mean(a 1/2, b 1) = 3/4.
        (-np.inf, 3 / 4),
    ],
)
def test_baks_matches_hand_computation(threshold: float, expected: float) -> None:
    result = baks(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, threshold=threshold)
    assert result == pytest.approx(expected)


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        # 0.5: x -> q3, q4 new: 1; q5 0.6 -> "unknown" gallery identity (not new): 0;
        # q6 new: 1. Each "unknown" query is its own group: mean(1, 0, 1) = 2/3
        # (grouping the two "unknown" queries together would give mean(1, 1/2) = 3/4).
        (0.5, 2 / 3),
        # 0.25: x -> q3 0.3 accepted, q4 new: 1/2; q5: 0; q6: 1 -> mean = 1/2.
        (0.25, 1 / 2),
        (1.0, 1.0),  # everything is called new
    ],
)
def test_baus_matches_hand_computation(threshold: float, expected: float) -> None:
    result = baus(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, threshold=threshold)
    assert result == pytest.approx(expected)


def test_new_individual_auroc_matches_hand_computation() -> None:
    # P(new top-1 < known top-1) over 3 x 4 pairs: known 0.9 beats all 4 new, 0.8 beats all 4,
    # 0.4 beats 0.3, 0.2, 0.2 but not 0.6 -> 11/12.
    assert new_individual_auroc(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY) == pytest.approx(11 / 12)


@pytest.mark.parametrize(
    ("fpr", "expected"),
    [
        # FPR 0 allows thresholds <= 0.4: new 0.3, 0.2, 0.2 are caught -> 3/4.
        (0.2, 3 / 4),
        # FPR 1/3 (q1 at 0.4 called new) allows thresholds up to 0.8: all 4 new caught.
        (0.5, 1.0),
        (1.0, 1.0),
    ],
)
def test_tpr_at_fpr_matches_hand_computation(fpr: float, expected: float) -> None:
    result = tpr_at_fpr(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, fpr=fpr)
    assert result == pytest.approx(expected)


def test_threshold_at_fpr_realises_the_operating_point() -> None:
    threshold = threshold_at_fpr(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, fpr=0.2)
    # The operating point calls top-1 <= 0.3 new, so the threshold sits just above 0.3.
    assert threshold == pytest.approx(0.3)
    assert threshold > 0.3
    # With it: q3, q4, q6 are called new -> BAUS mean(x 1, q5 0, q6 1) = 2/3; no known query is
    # called new and q1 (0.4) is accepted as "b" -> BAKS mean(a 1/2, b 1) = 3/4.
    inputs = (OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY)
    assert baus(*inputs, threshold=threshold) == pytest.approx(2 / 3)
    assert baks(*inputs, threshold=threshold) == pytest.approx(3 / 4)


def test_threshold_at_fpr_prefers_the_lowest_fpr_among_equal_tprs() -> None:
    # Known top-1 scores 0.9, 0.5, 0.4; new top-1 scores 0.3, 0.95. Thresholds in (0.3, 0.4],
    # (0.4, 0.5] and (0.5, 0.9] all catch only the new 0.3 (TPR 1/2) at FPR 0, 1/3 and 2/3.
    # With fpr=0.7 the first of them wins: the threshold sits just above 0.3.
    scores = np.array([[0.9, 0.0], [0.5, 0.0], [0.4, 0.0], [0.3, 0.0], [0.0, 0.95]])
    queries, gallery = ["a", "a", "a", "x", "y"], ["a", "b"]
    assert tpr_at_fpr(scores, queries, gallery, fpr=0.7) == pytest.approx(1 / 2)
    threshold = threshold_at_fpr(scores, queries, gallery, fpr=0.7)
    assert 0.3 < threshold < 0.4


def test_threshold_at_fpr_is_minus_infinity_when_no_query_may_be_called_new() -> None:
    # Every new query scores above a known query: the only point with FPR <= 0.2 is (0, 0).
    scores = np.array([[0.1, 0.0], [0.9, 0.0], [0.5, 0.0]])
    queries, gallery = ["a", "x", "a"], ["a", "b"]
    assert threshold_at_fpr(scores, queries, gallery, fpr=0.2) == -np.inf
    assert tpr_at_fpr(scores, queries, gallery, fpr=0.2) == 0.0


def test_summarize_reports_every_metric_and_count() -> None:
    summary = summarize(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, threshold=0.5)
    # Known queries: q0 a (hits at ranks 1, 2), q1 a (ranked b a a unknown: hits 2, 3),
    # q2 b (ranked b unknown a a: hit 1). top1 = 2/3; AP = 1, (1/2 + 2/3)/2 = 7/12, 1;
    # INP = 2/2, 2/3, 1/1.
    assert summary == pytest.approx(
        {
            "top1": 2 / 3,
            "top5": 1.0,
            "top10": 1.0,
            "mAP": (1 + 7 / 12 + 1) / 3,
            "mINP": (1 + 2 / 3 + 1) / 3,
            "BAKS": 3 / 4,
            "BAUS": 2 / 3,
            "new_auroc": 11 / 12,
            "n_queries": 7,
            "n_known_queries": 3,
            "n_new_queries": 4,
            "n_gallery": 4,
        }
    )


def test_summarize_omits_open_set_metrics_when_not_applicable() -> None:
    summary = summarize(SCORES, QUERIES, GALLERY, ks=(1, 2))
    assert summary == pytest.approx(
        {
            "top1": 1 / 3,
            "top2": 2 / 3,
            "mAP": EXPECTED_MAP,
            "mINP": EXPECTED_MINP,
            "n_queries": 3,
            "n_known_queries": 3,
            "n_new_queries": 0,
            "n_gallery": 5,
        }
    )
    with_threshold = summarize(SCORES, QUERIES, GALLERY, ks=(1,), threshold=0.85)
    # Only q0 (0.9 -> a) and q2 (0.9 -> b, wrong) pass 0.85: mean(a 1, b 0, c 0) = 1/3.
    assert with_threshold["BAKS"] == pytest.approx(1 / 3)
    assert "BAUS" not in with_threshold
    assert "new_auroc" not in with_threshold


def test_similarity_from_distance_gives_the_same_ranking() -> None:
    distances = 1.0 - SCORES
    scores = similarity_from_distance(distances)
    assert mean_average_precision(scores, QUERIES, GALLERY) == pytest.approx(EXPECTED_MAP)
    # A distance threshold of 0.5 is the score threshold -0.5 (score 0.5).
    open_scores = similarity_from_distance(1.0 - OPEN_SCORES)
    result = baks(open_scores, OPEN_QUERIES, OPEN_GALLERY, threshold=-0.5)
    assert result == pytest.approx(baks(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, threshold=0.5))


def test_inputs_are_not_modified() -> None:
    scores = np.vstack([SCORES, [[0.1, 0.2, 0.3, 0.4, 0.5]]])
    queries = np.array([*QUERIES, "unknown"])
    gallery = np.array(GALLERY)
    before = (scores.copy(), queries.copy(), gallery.copy())
    summarize(scores, queries, gallery, threshold=0.5)
    np.testing.assert_array_equal(scores, before[0])
    np.testing.assert_array_equal(queries, before[1])
    np.testing.assert_array_equal(gallery, before[2])


@pytest.mark.parametrize(
    ("scores", "queries", "gallery", "message"),
    [
        (SCORES[:, :4], QUERIES, GALLERY, r"shape \(3, 4\) but the labels need \(3, 5\)"),
        (SCORES[0], QUERIES, GALLERY, r"shape \(5,\) but the labels need \(3, 5\)"),
        (np.where(SCORES > 0.85, np.nan, SCORES), QUERIES, GALLERY, "2 non-finite value"),
        (np.where(SCORES > 0.85, np.inf, SCORES), QUERIES, GALLERY, "2 non-finite value"),
        (SCORES.astype(str), QUERIES, GALLERY, "real-valued numeric matrix"),
        (SCORES, [1, 2, 3], GALLERY, "query_labels must hold identity strings.*first: 1"),
        (SCORES, QUERIES, ["a", "b", 3, "c", "b"], "gallery_labels must hold identity strings"),
        (SCORES, [QUERIES], GALLERY, "query_labels must be a 1-D sequence"),
        (np.empty((0, 5)), [], GALLERY, "query_labels is empty"),
        (SCORES, ["x", "y", "z"], GALLERY, "none of the 3 query identities occurs in the gallery"),
    ],
)
def test_invalid_inputs_raise_config_error(
    scores: npt.NDArray[Any], queries: list[Any], gallery: list[Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        mean_average_precision(scores, queries, gallery)


@pytest.mark.parametrize("k", [0, -1, True, 1.0])
def test_invalid_k_raises_config_error(k: Any) -> None:
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        top_k_accuracy(SCORES, QUERIES, GALLERY, k=k)
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        precision_at_k(SCORES, QUERIES, GALLERY, k=k)
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        summarize(SCORES, QUERIES, GALLERY, ks=(1, k))


def test_other_invalid_arguments_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="max_rank must be an integer >= 1"):
        cmc(SCORES, QUERIES, GALLERY, max_rank=0)
    with pytest.raises(ConfigError, match="k=6 exceeds the gallery size 5"):
        precision_at_k(SCORES, QUERIES, GALLERY, k=6)
    with pytest.raises(ConfigError, match="threshold is NaN"):
        baks(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, threshold=float("nan"))
    for fpr in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"fpr must be a number in \(0, 1\]"):
            tpr_at_fpr(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, fpr=fpr)


def test_open_set_metrics_need_the_right_kind_of_queries() -> None:
    with pytest.raises(ConfigError, match="both known and new queries, got 3 known and 0 new"):
        new_individual_auroc(SCORES, QUERIES, GALLERY)
    with pytest.raises(ConfigError, match="both known and new queries, got 0 known and 3 new"):
        tpr_at_fpr(SCORES, ["x", "y", "unknown"], GALLERY, fpr=0.1)
    with pytest.raises(ConfigError, match="BAUS needs at least one new"):
        baus(SCORES, QUERIES, GALLERY, threshold=0.5)
    with pytest.raises(ConfigError, match="BAKS needs at least one known"):
        baks(SCORES, ["x", "y", "unknown"], GALLERY, threshold=0.5)


def test_matches_pytorch_metric_learning_on_random_data() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import (
        AccuracyCalculator,
        try_getting_not_lone_labels,
    )
    from pytorch_metric_learning.utils.accuracy_calculator import (
        precision_at_k as pml_precision_at_k,
    )
    from pytorch_metric_learning.utils.inference import CustomKNN

    class Calculator(AccuracyCalculator):  # type: ignore[misc]
        """Adds precision_at_5, built like pml's own precision_at_1 (lone queries dropped)."""

        def calculate_precision_at_5(
            self, knn_labels: Any, query_labels: Any, not_lone_query_mask: Any, **_: Any
        ) -> float:
            knn, labels = try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask)
            return float(
                pml_precision_at_k(
                    knn, labels[:, None], 5, self.avg_of_avgs, False, self.label_comparison_fn
                )
            )

        def requires_knn(self) -> list[str]:
            return [*super().requires_knn(), "precision_at_5"]

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(25, 16))
    gallery_ids = np.repeat(np.arange(20), 10)  # 200 items, identities 0..19
    query_ids = rng.integers(0, 25, size=60)  # identities 20..24 are new
    assert 0 < np.count_nonzero(query_ids >= 20) < 60

    def embed(ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        vectors = centres[ids] + 1.5 * rng.normal(size=(ids.size, 16))
        unit: npt.NDArray[np.float64] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return unit

    query_emb, gallery_emb = embed(query_ids), embed(gallery_ids)
    scores = query_emb @ gallery_emb.T
    query_labels = [f"animal-{i}" for i in query_ids]
    gallery_labels = [f"animal-{i}" for i in gallery_ids]

    calculator = Calculator(
        include=("precision_at_1", "precision_at_5", "mean_average_precision"),
        k=None,  # rank the whole gallery, so AP covers every positive
        avg_of_avgs=False,
        device=torch.device("cpu"),
        knn_func=CustomKNN(CosineSimilarity()),
    )
    expected = calculator.get_accuracy(
        query=query_emb.astype(np.float32),
        query_labels=query_ids,
        reference=gallery_emb.astype(np.float32),
        reference_labels=gallery_ids,
        ref_includes_query=False,
    )
    assert 0.05 < expected["precision_at_1"] < 0.95  # the data are neither trivial nor hopeless
    np.testing.assert_allclose(
        top_k_accuracy(scores, query_labels, gallery_labels, k=1),
        expected["precision_at_1"],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        precision_at_k(scores, query_labels, gallery_labels, k=5),
        expected["precision_at_5"],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        mean_average_precision(scores, query_labels, gallery_labels),
        expected["mean_average_precision"],
        rtol=1e-6,
    )


# Excluded pairs (valid mask) on the closed-set example. Excluding q0's first "a" (col 0) and
# q2's only "c" (col 3):
#   q0 "a": valid cols ranked 1 3 4 2 (then the excluded 0) -> labels b c b a -> hit at rank 4
#           AP = 1/4; INP = 1/4
#   q1 "b": unchanged: hits at ranks 3, 4, AP = 5/12, INP = 1/2
#   q2 "c": no valid "c" left -> a new query, left out of the closed-set metrics
# Known queries q0, q1: CMC = [0, 0, 1/2, 1, 1]; mAP = (1/4 + 5/12) / 2 = 1/3;
# mINP = (1/4 + 1/2) / 2 = 3/8.
VALID = np.ones_like(SCORES, dtype=bool)
VALID[0, 0] = VALID[2, 3] = False


def test_valid_mask_removes_pairs_from_the_ranking() -> None:
    np.testing.assert_allclose(cmc(SCORES, QUERIES, GALLERY, valid=VALID), [0, 0, 0.5, 1, 1])
    assert mean_average_precision(SCORES, QUERIES, GALLERY, valid=VALID) == pytest.approx(1 / 3)
    assert mean_inverse_negative_penalty(SCORES, QUERIES, GALLERY, valid=VALID) == pytest.approx(
        3 / 8
    )
    assert top_k_accuracy(SCORES, QUERIES, GALLERY, k=3, valid=VALID) == 0.5
    # The excluded "a" at col 0 is not a hit: q0's top-2 (b, c) holds no "a", q1's (a, a) no "b".
    assert precision_at_k(SCORES, QUERIES, GALLERY, k=2, valid=VALID) == 0.0


def test_query_whose_positives_are_all_excluded_is_new() -> None:
    summary = summarize(SCORES, QUERIES, GALLERY, threshold=0.85, valid=VALID)
    assert summary["n_known_queries"] == 2
    assert summary["n_new_queries"] == 1
    # q2's top-1 is col 1 "b" at 0.9 >= 0.85, so it is not called new: BAUS 0. Known: q0's
    # top-1 is now col 1 "b" (0.8 < 0.85 -> new, wrong), q1 0.7 -> new (wrong): BAKS 0.
    assert summary["BAUS"] == 0.0
    assert summary["BAKS"] == 0.0
    # new_auroc: new q2 top-1 0.9 vs known 0.8 (q0) and 0.7 (q1): never lower -> 0.
    assert summary["new_auroc"] == 0.0


def test_all_true_valid_mask_changes_nothing() -> None:
    everything = np.ones_like(SCORES, dtype=bool)
    assert summarize(OPEN_SCORES, OPEN_QUERIES, OPEN_GALLERY, threshold=0.5) == summarize(
        OPEN_SCORES,
        OPEN_QUERIES,
        OPEN_GALLERY,
        threshold=0.5,
        valid=np.ones_like(OPEN_SCORES, dtype=bool),
    )
    np.testing.assert_array_equal(
        cmc(SCORES, QUERIES, GALLERY, valid=everything), cmc(SCORES, QUERIES, GALLERY)
    )


def test_excluded_pairs_may_hold_any_score() -> None:
    # An excluded pair scoring higher than everything, or -inf or NaN, changes nothing.
    for value in (5.0, -np.inf, np.nan):
        scores = np.where(VALID, SCORES, value)
        assert mean_average_precision(scores, QUERIES, GALLERY, valid=VALID) == pytest.approx(1 / 3)
        assert threshold_at_fpr(scores, QUERIES, GALLERY, fpr=0.5, valid=VALID) == (
            threshold_at_fpr(SCORES, QUERIES, GALLERY, fpr=0.5, valid=VALID)
        )
    # Without the mask the two NaN cells are an error.
    with pytest.raises(ConfigError, match="2 non-finite value"):
        mean_average_precision(np.where(VALID, SCORES, np.nan), QUERIES, GALLERY)


def test_valid_mask_matches_a_naive_loop_that_drops_the_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(11)
    gallery = [f"id{i}" for i in rng.integers(0, 5, size=30)]
    queries = [f"id{i}" for i in rng.integers(0, 6, size=25)]
    scores = rng.integers(0, 4, size=(25, 30)).astype(np.float64)  # ties everywhere
    valid = rng.random((25, 30)) < 0.6
    valid[:, 0] = True  # every query keeps a gallery item
    first_hits, aps, inps = [], [], []
    for row, keep, query in zip(scores, valid, queries, strict=True):
        kept = np.flatnonzero(keep)
        hits, expected_map, expected_minp = (
            _naive_closed_set(row[kept][None, :], [query], [gallery[j] for j in kept])
            if any(gallery[j] == query for j in kept)
            else ([], np.nan, np.nan)
        )
        if hits:
            first_hits.append(hits[0])
            aps.append(expected_map)
            inps.append(expected_minp)
    expected_cmc = [np.mean(np.array(first_hits) <= k) for k in range(1, 31)]
    np.testing.assert_allclose(cmc(scores, queries, gallery, valid=valid), expected_cmc)
    assert mean_average_precision(scores, queries, gallery, valid=valid) == pytest.approx(
        np.mean(aps)
    )
    assert mean_inverse_negative_penalty(scores, queries, gallery, valid=valid) == pytest.approx(
        np.mean(inps)
    )
    expected = summarize(scores, queries, gallery, valid=valid)
    monkeypatch.setattr(metrics, "_BLOCK_CELLS", 31)  # 1 query per block
    assert summarize(scores, queries, gallery, valid=valid) == expected


@pytest.mark.parametrize(
    ("valid", "message"),
    [
        (VALID.astype(int), r"valid must be a boolean matrix of shape \(3, 5\), got dtype int"),
        (VALID[:, :4], r"valid must be a boolean matrix .* shape \(3, 4\)"),
        (np.zeros_like(VALID), r"3 query row\(s\) have no valid gallery item \(first: row 0\)"),
    ],
)
def test_invalid_valid_mask_raises_config_error(valid: npt.NDArray[Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        summarize(SCORES, QUERIES, GALLERY, valid=valid)
