"""SearchResult validation and the shared query checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.index.helpers import make_space, unit
from wildreid.errors import ConfigError
from wildreid.index import PAD_ID, SearchResult
from wildreid.index.protocol import query_matrix, sidecar_path

SPACE = make_space(8)


def test_search_result_validates_shapes_and_dtypes() -> None:
    ids = np.array([["a", "b"]], dtype=object)
    SearchResult(np.zeros((1, 2), dtype=np.float32), ids)
    with pytest.raises(ConfigError, match="float32"):
        SearchResult(np.zeros((1, 2)), ids)
    with pytest.raises(ConfigError, match="object array"):
        SearchResult(np.zeros((1, 2), dtype=np.float32), np.array([["a", "b"]]))
    with pytest.raises(ConfigError, match="shape"):
        SearchResult(np.zeros((1, 3), dtype=np.float32), ids)


def test_padding_helpers() -> None:
    result = SearchResult(
        np.array([[0.9, -np.inf]], dtype=np.float32), np.array([["a", PAD_ID]], dtype=object)
    )
    assert result.k == 2 and len(result) == 1
    np.testing.assert_array_equal(result.valid(), [[True, False]])
    [(image_id, score)] = result.row(0)
    assert image_id == "a" and score == pytest.approx(0.9)
    empty = SearchResult.empty(3, 4)
    assert empty.scores.shape == (3, 4) and not empty.valid().any()


def test_query_matrix_checks() -> None:
    good = unit(np.ones((2, 8)))
    assert query_matrix(good, SPACE, 8, 1, what="t") is good
    with pytest.raises(ConfigError, match="k must"):
        query_matrix(good, SPACE, 8, True, what="t")
    with pytest.raises(ConfigError, match=r"\(Q, D\)"):
        query_matrix(good[0], SPACE, 8, 1, what="t")
    with pytest.raises(ConfigError, match="NaN"):
        query_matrix(np.full((1, 8), np.nan, dtype=np.float32), SPACE, 8, 1, what="t")
    with pytest.raises(ConfigError, match="vector 1 has L2 norm 2"):
        query_matrix(np.vstack([good[0], 2 * good[1]]), SPACE, 8, 1, what="t")


def test_sidecar_path() -> None:
    assert sidecar_path(Path("a/b.faiss")) == Path("a/b.faiss.json")
