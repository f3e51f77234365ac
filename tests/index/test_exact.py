"""ExactIndex: brute-force reference, tie order, padding, add/remove, persistence, errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.index.helpers import (
    assert_same_topk,
    brute_force,
    clustered,
    embeddings,
    make_space,
    unit,
)
from wildreid.errors import ConfigError, EmbeddingSpaceError, IndexBackendError
from wildreid.index import ExactIndex, VectorIndex
from wildreid.index import flat as flat_module
from wildreid.types import Embeddings

SPACE = make_space(64)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    gallery, centres = clustered(1500, seed=1)
    queries, _ = clustered(60, seed=2, centres=centres)
    return gallery, queries


def filled(vectors: np.ndarray, prefix: str = "img") -> ExactIndex:
    index = ExactIndex(space=SPACE, dim=64)
    index.add(embeddings(vectors, SPACE, prefix))
    return index


def test_is_a_vector_index() -> None:
    assert isinstance(ExactIndex(space=SPACE, dim=64), VectorIndex)


@pytest.mark.parametrize("k", [1, 10, 37])
def test_matches_brute_force(data: tuple[np.ndarray, np.ndarray], k: int) -> None:
    gallery, queries = data
    index = filled(gallery)
    got = index.search(queries, k)
    expected = brute_force(gallery, index.image_ids, queries, k)
    assert got.scores.dtype == np.float32 and got.scores.shape == (60, k)
    np.testing.assert_array_equal(got.image_ids, expected.image_ids)  # no near-ties in this data
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5, rtol=0)
    assert (np.diff(got.scores, axis=1) <= 0).all()
    for row in (0, 31, 59):  # one query at a time takes another code path
        single = index.search(queries[row : row + 1], k)
        np.testing.assert_array_equal(single.image_ids[0], got.image_ids[row])
        np.testing.assert_allclose(single.scores[0], got.scores[row], atol=1e-6, rtol=0)


def test_blocked_search_equals_one_block(
    data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    gallery, queries = data
    index = filled(gallery)
    whole = index.search(queries, 15)
    monkeypatch.setattr(flat_module, "_QUERY_CHUNK", 7)
    monkeypatch.setattr(flat_module, "_MIN_BLOCK_ROWS", 100)
    monkeypatch.setattr(flat_module, "_BLOCK_ELEMENTS", 700)  # 100-row blocks: 15 merges
    blocked = index.search(queries, 15)
    np.testing.assert_array_equal(blocked.image_ids, whole.image_ids)
    np.testing.assert_allclose(blocked.scores, whole.scores, atol=1e-6, rtol=0)


@pytest.mark.parametrize("block_rows", [4, 5, 1000])
def test_ties_ordered_by_insertion(monkeypatch: pytest.MonkeyPatch, block_rows: int) -> None:
    monkeypatch.setattr(flat_module, "_MIN_BLOCK_ROWS", block_rows)
    monkeypatch.setattr(flat_module, "_BLOCK_ELEMENTS", 1)
    base = unit(np.random.default_rng(3).standard_normal((4, 64)))
    gallery = np.repeat(base, 3, axis=0)  # rows 0-2 equal, 3-5 equal, ...
    index = filled(gallery, "t")
    got = index.search(np.ascontiguousarray(base[[1, 0]]), 5)
    assert list(got.image_ids[0][:3]) == ["t3", "t4", "t5"]
    assert list(got.image_ids[1][:3]) == ["t0", "t1", "t2"]
    expected = brute_force(gallery, index.image_ids, base[[1, 0]], 5)
    np.testing.assert_array_equal(got.image_ids, expected.image_ids)  # stable, so equal


@pytest.mark.parametrize("block_rows", [3, 7, 100])
def test_all_scores_tied_keeps_first_k(monkeypatch: pytest.MonkeyPatch, block_rows: int) -> None:
    monkeypatch.setattr(flat_module, "_MIN_BLOCK_ROWS", block_rows)
    monkeypatch.setattr(flat_module, "_BLOCK_ELEMENTS", 1)
    vector = unit(np.ones((1, 64)))
    index = filled(np.repeat(vector, 10, axis=0), "s")
    assert list(index.search(vector, 4).image_ids[0]) == ["s0", "s1", "s2", "s3"]


def test_pads_when_fewer_than_k() -> None:
    gallery, _ = clustered(3, seed=4)
    index = filled(gallery)
    got = index.search(gallery[:2], 5)
    assert got.scores.shape == (2, 5)
    assert list(got.image_ids[0][3:]) == ["", ""]
    assert np.isneginf(got.scores[:, 3:]).all()
    assert np.isfinite(got.scores[:, :3]).all()
    assert got.valid().sum() == 6
    empty = ExactIndex(space=SPACE, dim=64).search(gallery, 2)
    assert (empty.image_ids == "").all() and np.isneginf(empty.scores).all()


def test_accepts_embeddings_as_queries(data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    index = filled(gallery)
    by_array = index.search(queries, 5)
    by_embeddings = index.search(embeddings(queries, SPACE, "q"), 5)
    np.testing.assert_array_equal(by_array.image_ids, by_embeddings.image_ids)


def test_add_remove_search_consistency(data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    index = filled(gallery[:1000])
    index.add(embeddings(gallery[1000:], SPACE, "late"))
    assert len(index) == 1500
    removed = [f"img{i}" for i in range(0, 1000, 3)] + ["late7"]
    assert index.remove([*removed, "img0"]) == len(removed)  # repeated id counted once
    assert len(index) == 1500 - len(removed)
    assert not set(removed) & set(index.image_ids)
    got = index.search(queries, 50)
    assert not set(removed) & set(got.image_ids.ravel())
    keep = np.array(
        [
            i not in set(removed)
            for i in (*[f"img{j}" for j in range(1000)], *[f"late{j}" for j in range(500)])
        ]
    )
    expected = brute_force(gallery[keep], index.image_ids, queries, 50)
    assert_same_topk(got, expected, gallery[keep], index.image_ids, queries)
    # re-adding a removed id works and makes it findable again
    index.add(Embeddings(gallery[:1].copy(), ("img0",), SPACE))
    assert index.search(gallery[:1], 1).image_ids[0, 0] == "img0"


def test_remove_unknown_removes_nothing() -> None:
    index = filled(clustered(10, seed=5)[0])
    with pytest.raises(ConfigError, match="'nope'"):
        index.remove(["img1", "nope"])
    assert len(index) == 10 and "img1" in index.image_ids


def test_add_refuses_duplicates_and_names_them() -> None:
    vectors = clustered(5, seed=6)[0]
    index = filled(vectors)
    with pytest.raises(ConfigError, match="img2"):
        index.add(Embeddings(vectors[2:3].copy(), ("img2",), SPACE))
    assert len(index) == 5


def test_add_refuses_other_space_naming_both() -> None:
    other = make_space(64, model="other-model")
    index = ExactIndex(space=SPACE, dim=64)
    with pytest.raises(EmbeddingSpaceError) as err:
        index.add(embeddings(clustered(3)[0], other))
    assert "toy" in str(err.value) and "other-model" in str(err.value)
    with pytest.raises(EmbeddingSpaceError, match="other-model"):
        filled(clustered(3)[0]).search(embeddings(clustered(2)[0], other), 1)


def test_dimension_mismatch_names_both() -> None:
    space32 = replace(SPACE, dim=0)
    index = ExactIndex(space=space32, dim=64)
    vectors32 = unit(np.ones((2, 32)))
    with pytest.raises(EmbeddingSpaceError) as err:
        index.add(embeddings(vectors32, space32))
    assert "32" in str(err.value) and "64" in str(err.value) and "toy" in str(err.value)
    with pytest.raises(EmbeddingSpaceError, match="32"):
        index.search(vectors32, 1)
    with pytest.raises(EmbeddingSpaceError):
        ExactIndex(space=SPACE, dim=32)


def test_refuses_unnormalised_and_bad_queries() -> None:
    index = ExactIndex(space=SPACE, dim=64)
    with pytest.raises(ConfigError, match="norm"):
        index.add(embeddings(np.ones((2, 64), dtype=np.float32), SPACE))
    with pytest.raises(ConfigError, match="reserved"):
        index.add(Embeddings(unit(np.ones((1, 64))), ("",), SPACE))
    with pytest.raises(ConfigError, match="float32"):
        index.search(np.ones((1, 64)), 1)
    with pytest.raises(ConfigError, match="k must"):
        index.search(unit(np.ones((1, 64))), 0)
    assert len(index) == 0


def test_save_load_round_trip(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    index = filled(gallery)
    index.remove(["img5"])
    path = tmp_path / "sub" / "gallery.npz"
    index.save(path)
    loaded = ExactIndex.load(path)
    assert loaded.space == SPACE and loaded.image_ids == index.image_ids
    before, after = index.search(queries, 10), loaded.search(queries, 10)
    np.testing.assert_array_equal(after.image_ids, before.image_ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert [p.name for p in path.parent.iterdir()] == ["gallery.npz"]  # no temp files left


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    with pytest.raises(IndexBackendError, match=r"missing\.npz"):
        ExactIndex.load(missing)
    corrupt = tmp_path / "corrupt.npz"
    filled(clustered(20)[0]).save(corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    with pytest.raises(IndexBackendError, match=r"corrupt\.npz"):
        ExactIndex.load(corrupt)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    with pytest.raises(IndexBackendError, match=r"plain\.npy"):
        ExactIndex.load(plain)
    other = tmp_path / "other.npz"
    np.savez(other, vectors=np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(IndexBackendError, match=r"other\.npz"):
        ExactIndex.load(other)


def test_vectors_view_is_read_only() -> None:
    index = filled(clustered(4)[0])
    with pytest.raises(ValueError, match="read-only"):
        index.vectors[0, 0] = 1.0
