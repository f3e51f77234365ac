"""The one tie-aware top-k and the one image-id repeat check."""

from __future__ import annotations

import numpy as np
import pytest

from wildreid.ids import first_repeat
from wildreid.ranking import top_k


def _reference(scores: np.ndarray, k: int, key: np.ndarray | None = None) -> np.ndarray:
    if key is None:
        key = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    rows = [np.lexsort((key[r], -scores[r]))[:k] for r in range(scores.shape[0])]
    return np.array(rows, dtype=np.intp).reshape(scores.shape[0], min(k, scores.shape[1]))


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 20])
def test_top_k_matches_a_full_stable_sort_with_many_ties(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 3, size=(40, 8)).astype(np.float32)
    scores[0] = -np.inf
    scores[1, :4] = -np.inf
    np.testing.assert_array_equal(top_k(scores, k), _reference(scores, k))


def test_top_k_ties_by_the_given_key() -> None:
    scores = np.array([[1.0, 2.0, 2.0, 2.0]])
    key = np.array([[0, 9, 3, 5]])
    np.testing.assert_array_equal(top_k(scores, 2, key=key), [[2, 3]])
    np.testing.assert_array_equal(top_k(scores, 2), [[1, 2]])


def test_top_k_hand_computed() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.3, 0.7]])
    np.testing.assert_array_equal(top_k(scores, 2), [[1, 2], [2, 0]])
    assert top_k(np.empty((0, 3)), 2).shape == (0, 2)


def test_first_repeat() -> None:
    assert first_repeat(["a", "b", "c"]) is None
    assert first_repeat(["a", "b", "c", "b", "a"]) == (1, 3)
    assert first_repeat([]) is None
