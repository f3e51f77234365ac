"""Identity aggregation of image hits and the known / new / review decision."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wildreid.errors import ConfigError, EmbeddingSpaceError
from wildreid.index import ExactIndex, SearchResult
from wildreid.matching.identification import decide, identify, rank_identities
from wildreid.types import Candidate, Embeddings, EmbeddingSpace

GALLERY = {
    "a1": "ayo",
    "a2": "ayo",
    "a3": "ayo",
    "b1": "bisa",
    "b2": "bisa",
    "c1": "chui",
    "u1": "unknown",
}
# one query's hits, best first, as an index would return them (float32 scores)
HITS = [("u1", 0.95), ("b1", 0.90), ("a1", 0.88), ("a2", 0.86), ("a3", 0.60), ("b2", 0.50)]
HITS += [("c1", 0.40)]


def result(*rows: list[tuple[str, float]], k: int | None = None) -> SearchResult:
    k = k or max(len(r) for r in rows)
    padded = SearchResult.empty(len(rows), k)
    for i, row in enumerate(rows):
        for j, (image_id, score) in enumerate(row):
            padded.image_ids[i, j] = image_id
            padded.scores[i, j] = score
    return padded


def f32(x: float) -> float:
    return float(np.float32(x))


def summary(candidates: list[Candidate]) -> list[tuple[str, str, float]]:
    return [(c.identity, c.image_id, c.score) for c in candidates]


def test_max_aggregation_skips_unknown() -> None:
    [ranked] = rank_identities(result(HITS), GALLERY, aggregation="max")
    assert summary(ranked) == [
        ("bisa", "b1", f32(0.90)),
        ("ayo", "a1", f32(0.88)),
        ("chui", "c1", f32(0.40)),
    ]


@pytest.mark.parametrize(
    ("topk", "ayo", "bisa"),
    [
        (1, [0.88], [0.90]),
        (2, [0.88, 0.86], [0.90, 0.50]),
        (3, [0.88, 0.86, 0.60], [0.90, 0.50]),  # bisa has 2 hits: mean of those 2
        (5, [0.88, 0.86, 0.60], [0.90, 0.50]),
    ],
)
def test_topk_mean_by_hand(topk: int, ayo: list[float], bisa: list[float]) -> None:
    [ranked] = rank_identities(result(HITS), GALLERY, aggregation="topk_mean", topk=topk)
    expected = {
        "ayo": sum(map(f32, ayo)) / len(ayo),
        "bisa": sum(map(f32, bisa)) / len(bisa),
        "chui": f32(0.40),
    }
    order = sorted(expected, key=lambda name: -expected[name])
    assert [c.identity for c in ranked] == order
    for candidate in ranked:
        assert candidate.score == pytest.approx(expected[candidate.identity], abs=1e-7)
    assert {c.identity: c.image_id for c in ranked} == {"ayo": "a1", "bisa": "b1", "chui": "c1"}


def test_topk_mean_reorders_identities() -> None:
    [by_max] = rank_identities(result(HITS), GALLERY, aggregation="max")
    [by_mean] = rank_identities(result(HITS), GALLERY, aggregation="topk_mean", topk=2)
    assert [c.identity for c in by_max][:2] == ["bisa", "ayo"]
    assert [c.identity for c in by_mean][:2] == ["ayo", "bisa"]  # 0.87 > 0.70


def test_ties_broken_by_identity_then_image_name() -> None:
    hits = [("b1", 0.5), ("a2", 0.5), ("a1", 0.5), ("c1", 0.5)]
    [ranked] = rank_identities(result(hits), GALLERY)
    assert summary(ranked) == [("ayo", "a1", 0.5), ("bisa", "b1", 0.5), ("chui", "c1", 0.5)]
    [reversed_order] = rank_identities(result(hits[::-1]), GALLERY)
    assert summary(reversed_order) == summary(ranked)


def test_max_candidates_padding_and_rows() -> None:
    rows = rank_identities(result(HITS, [("c1", 0.7)], [], k=9), GALLERY, max_candidates=2)
    assert [[c.identity for c in row] for row in rows] == [["bisa", "ayo"], ["chui"], []]


def test_only_unknown_hits_give_no_candidate() -> None:
    assert rank_identities(result([("u1", 0.99)]), GALLERY) == [[]]


def test_option_and_mapping_errors() -> None:
    with pytest.raises(ConfigError, match="'ghost'"):
        rank_identities(result([("ghost", 0.9)]), GALLERY)
    with pytest.raises(ConfigError, match="aggregation"):
        rank_identities(result(HITS), GALLERY, aggregation="mean")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="topk"):
        rank_identities(result(HITS), GALLERY, aggregation="topk_mean", topk=0)
    with pytest.raises(ConfigError, match="max_candidates"):
        rank_identities(result(HITS), GALLERY, max_candidates=0)


def top(score: float) -> list[Candidate]:
    return [Candidate("ayo", "a1", score)]


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.75, "known"),  # t + m, inclusive
        (math.nextafter(0.75, 0.0), "review"),
        (0.5, "review"),
        (0.25, "review"),  # t - m is still review
        (math.nextafter(0.25, 0.0), "new"),
    ],
)
def test_decision_boundaries_with_margin(score: float, expected: str) -> None:
    assert decide(top(score), threshold=0.5, review_margin=0.25) == expected


def test_decision_without_margin_or_threshold() -> None:
    assert decide(top(0.5), threshold=0.5) == "known"
    assert decide(top(math.nextafter(0.5, 0.0)), threshold=0.5) == "new"
    assert decide(top(-0.9)) == "known"
    assert decide([]) == "new"
    assert decide([], threshold=0.1) == "new"
    with pytest.raises(ConfigError, match="needs a threshold"):
        decide(top(0.5), review_margin=0.1)
    with pytest.raises(ConfigError, match=">= 0"):
        decide(top(0.5), threshold=0.5, review_margin=-0.1)


SPACE = EmbeddingSpace("toy", "cd" * 32, (8, 8), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), dim=4)


def unit_rows(rows: list[list[float]]) -> np.ndarray:
    x: np.ndarray = np.asarray(rows, dtype=np.float64)
    norms: np.ndarray = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / norms).astype(np.float32)
    return out


def test_identify_end_to_end() -> None:
    index = ExactIndex(space=SPACE, dim=4)
    gallery = unit_rows([[1, 0, 0, 0], [1, 0.2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    index.add(Embeddings(gallery, ("a1", "a2", "b1", "c1", "u1"), SPACE))
    queries = Embeddings(
        unit_rows([[1, 0.1, 0, 0], [0, 0, 0, 1], [0.6, 0.8, 0, 0]]), ("q1", "q2", "q3"), SPACE
    )
    result_ = identify(index, queries, GALLERY, k_images=5, threshold=0.9, review_margin=0.05)
    assert [r.query_id for r in result_] == ["q1", "q2", "q3"]
    q1, q2, q3 = result_
    # q1 is closer to a2 (cos 0.9952) than to a1 (0.9950): a2 supports "ayo"
    assert (q1.candidates[0].identity, q1.candidates[0].image_id) == ("ayo", "a2")
    assert q1.candidates[0].score == pytest.approx(float(queries.vectors[0] @ gallery[1]), abs=1e-6)
    assert q1.decision == "known"
    assert q1.threshold == 0.9
    # q2 equals the unknown animal's image, which is never proposed: best named score is 0
    assert "unknown" not in {c.identity for c in q2.candidates}
    assert q2.candidates[0].score == pytest.approx(0.0, abs=1e-6) and q2.decision == "new"
    # q3: cos to b1 = 0.8, to a2 = 0.745; 0.8 < 0.9 - 0.05 -> new
    assert [c.identity for c in q3.candidates] == ["bisa", "ayo", "chui"]
    assert q3.decision == "new"
    relaxed = identify(index, queries, GALLERY, k_images=5, threshold=0.8, review_margin=0.05)
    assert [r.decision for r in relaxed] == ["known", "new", "review"]
    plain = identify(index, queries, GALLERY, k_images=2)
    assert [r.decision for r in plain] == ["known", "known", "known"]
    assert [len(r.candidates) for r in plain] == [1, 1, 2]  # only k_images=2 hits aggregated


def test_identify_refuses_queries_of_another_space() -> None:
    index = ExactIndex(space=SPACE, dim=4)
    other = EmbeddingSpace("other", "ef" * 32, (8, 8), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), dim=4)
    queries = Embeddings(unit_rows([[1, 0, 0, 0]]), ("q",), other)
    with pytest.raises(EmbeddingSpaceError, match="other"):
        identify(index, queries, GALLERY)
