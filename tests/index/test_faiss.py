"""FaissIndex kinds against the exact index: results, recall, add/remove, persistence, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.index.helpers import (
    assert_same_topk,
    clustered,
    embeddings,
    make_space,
    recall_at,
    unit,
)
from wildreid.errors import ConfigError, EmbeddingSpaceError, IndexBackendError
from wildreid.index import ExactIndex, FaissIndex, VectorIndex
from wildreid.index.protocol import sidecar_path
from wildreid.types import Embeddings

SPACE = make_space(64)
PARAMS: dict[str, dict[str, int]] = {
    "flat": {},
    "hnsw": {"m": 16, "ef_construction": 80, "ef_search": 64},
    "ivf": {"nlist": 32, "nprobe": 8},
}
KINDS = list(PARAMS)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    # ~20 images per "animal"; loose enough that weak ANN settings visibly lose recall
    gallery, centres = clustered(2000, clusters=100, spread=1.0, seed=11)
    queries, _ = clustered(100, seed=12, centres=centres, spread=1.0)
    return gallery, queries


@pytest.fixture(scope="module")
def exact(data: tuple[np.ndarray, np.ndarray]) -> ExactIndex:
    index = ExactIndex(space=SPACE, dim=64)
    index.add(embeddings(data[0], SPACE))
    return index


def build(kind: str, vectors: np.ndarray, prefix: str = "img") -> FaissIndex:
    index = FaissIndex(kind, space=SPACE, dim=64, **PARAMS[kind])
    index.add(embeddings(vectors, SPACE, prefix))
    return index


@pytest.fixture(scope="module", params=KINDS)
def built(request: pytest.FixtureRequest, data: tuple[np.ndarray, np.ndarray]) -> FaissIndex:
    return build(request.param, data[0])


def test_is_a_vector_index(built: FaissIndex) -> None:
    assert isinstance(built, VectorIndex)
    assert len(built) == 2000 and built.image_ids[:2] == ("img0", "img1")


def test_flat_identical_to_exact(data: tuple[np.ndarray, np.ndarray], exact: ExactIndex) -> None:
    gallery, queries = data
    got = build("flat", gallery).search(queries, 10)
    expected = exact.search(queries, 10)
    np.testing.assert_array_equal(got.image_ids, expected.image_ids)
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall(
    kind: str, data: tuple[np.ndarray, np.ndarray], exact: ExactIndex
) -> None:
    gallery, queries = data
    got = build(kind, gallery).search(queries, 10)
    expected = exact.search(queries, 10)
    assert recall_at(got, expected) >= 0.95
    assert got.scores.dtype == np.float32 and (np.diff(got.scores, axis=1) <= 0).all()
    # every returned score is the true similarity of the returned image
    position = {f"img{i}": i for i in range(len(gallery))}
    for row in range(len(queries)):
        rows = [position[i] for i in got.image_ids[row]]
        np.testing.assert_allclose(got.scores[row], gallery[rows] @ queries[row], atol=1e-5)


def test_ivf_full_probe_is_exact(data: tuple[np.ndarray, np.ndarray], exact: ExactIndex) -> None:
    gallery, queries = data
    index = build("ivf", gallery)
    index.configure_search(nprobe=32)
    got, expected = index.search(queries, 10), exact.search(queries, 10)
    assert_same_topk(got, expected, gallery, exact.image_ids, queries)


@pytest.mark.parametrize("kind", KINDS)
def test_add_remove_search_consistency(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    index = build(kind, gallery[:1500])
    index.add(embeddings(gallery[1500:], SPACE, "late"))
    removed = [f"img{i}" for i in range(0, 1500, 4)] + ["late3", "late4"]
    assert index.remove(removed) == len(removed)
    assert len(index) == 2000 - len(removed)
    assert not set(removed) & set(index.image_ids)
    got = index.search(np.concatenate([queries, gallery[:8]]), 50)
    assert not set(removed) & set(got.image_ids.ravel())
    # the survivors still come back under their own ids (catches id renumbering after removal)
    survivors = [i for i in range(1500) if i % 4][:200]
    if kind == "ivf":  # probe every cell: a miss must then be a wrong id, not approximation
        index.configure_search(nprobe=32)
    top1 = index.search(np.ascontiguousarray(gallery[survivors]), 1)
    assert list(top1.image_ids[:, 0]) == [f"img{i}" for i in survivors]
    # re-adding a removed id works
    index.add(Embeddings(gallery[:1].copy(), ("img0",), SPACE))
    assert index.search(gallery[:1], 1).image_ids[0, 0] == "img0"
    assert len(index) == 2001 - len(removed)


@pytest.mark.parametrize("kind", KINDS)
def test_remove_unknown_removes_nothing(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    index = build(kind, data[0][:400])
    with pytest.raises(ConfigError, match="'ghost'"):
        index.remove(["img1", "ghost"])
    assert len(index) == 400
    assert index.search(data[0][1:2], 1).image_ids[0, 0] == "img1"


@pytest.mark.parametrize("kind", KINDS)
def test_pads_when_fewer_than_k(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    index = FaissIndex(kind, space=SPACE, dim=64, **PARAMS[kind])
    empty = index.search(data[1][:2], 4)
    assert (empty.image_ids == "").all() and np.isneginf(empty.scores).all()
    index.add(embeddings(data[0][:40], SPACE))
    if kind == "ivf":
        index.configure_search(nprobe=32)
    got = index.search(data[1][:3], 45)
    assert got.scores.shape == (3, 45)
    assert (got.image_ids[:, 40:] == "").all() and np.isneginf(got.scores[:, 40:]).all()
    assert got.valid()[:, :40].all()


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(
    kind: str, tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    gallery, queries = data
    index = build(kind, gallery)
    index.remove(["img3", "img7"])
    path = tmp_path / f"gallery.{kind}.faiss"
    index.save(path)
    loaded = FaissIndex.load(path)
    assert (loaded.kind, loaded.params, loaded.space) == (kind, index.params, SPACE)
    assert loaded.image_ids == index.image_ids
    before, after = index.search(queries, 10), loaded.search(queries, 10)
    np.testing.assert_array_equal(after.image_ids, before.image_ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    loaded.remove(["img4"])  # a loaded index stays fully usable
    loaded.add(embeddings(gallery[:1], SPACE, "again"))
    assert "img4" not in loaded.image_ids and loaded.image_ids[-1] == "again0"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".json"]


def test_corrupt_or_mismatched_files(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    path = tmp_path / "g.faiss"
    with pytest.raises(IndexBackendError, match=r"g\.faiss"):
        FaissIndex.load(path)  # nothing there
    build("flat", data[0][:50]).save(path)
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(IndexBackendError, match=r"g\.faiss.*SHA-256"):
        FaissIndex.load(path)
    path.write_bytes(payload)
    FaissIndex.load(path)  # intact again
    sidecar_path(path).write_text("{not json", encoding="utf-8")
    with pytest.raises(IndexBackendError, match=r"g\.faiss"):
        FaissIndex.load(path)
    sidecar_path(path).unlink()
    with pytest.raises(IndexBackendError, match=r"g\.faiss\.json"):
        FaissIndex.load(path)


def test_sidecar_contradicting_index_is_refused(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    path = tmp_path / "g.faiss"
    build("flat", data[0][:50]).save(path)
    meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    meta["image_ids"], meta["labels"] = meta["image_ids"][:-1], meta["labels"][:-1]
    sidecar_path(path).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(IndexBackendError, match="does not match its sidecar"):
        FaissIndex.load(path)
    meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    meta["kind"], meta["params"] = "hnsw", {}
    sidecar_path(path).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(IndexBackendError, match="does not match its sidecar"):
        FaissIndex.load(path)


@pytest.mark.parametrize("kind", KINDS)
def test_space_and_dimension_errors_name_both(kind: str) -> None:
    index = FaissIndex(kind, space=SPACE, dim=64, **PARAMS[kind])
    other = make_space(64, model="other-model")
    with pytest.raises(EmbeddingSpaceError) as err:
        index.add(embeddings(clustered(200)[0], other))
    assert "toy" in str(err.value) and "other-model" in str(err.value)
    with pytest.raises(EmbeddingSpaceError, match="dimension 32"):
        index.search(unit(np.ones((1, 32))), 1)
    with pytest.raises(EmbeddingSpaceError):
        FaissIndex(kind, space=SPACE, dim=32, **PARAMS[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_ids_refused(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    index = build(kind, data[0][:200])
    with pytest.raises(ConfigError, match="img5"):
        index.add(Embeddings(data[0][5:6].copy(), ("img5",), SPACE))
    assert len(index) == 200


def test_ivf_needs_enough_vectors_to_train(data: tuple[np.ndarray, np.ndarray]) -> None:
    index = FaissIndex("ivf", space=SPACE, dim=64, nlist=32)
    with pytest.raises(ConfigError, match="at least 32 vectors"):
        index.add(embeddings(data[0][:31], SPACE))
    assert len(index) == 0
    index.add(embeddings(data[0][:32], SPACE))  # enough (a warning is logged)
    index.add(embeddings(data[0][32:33], SPACE, "one"))  # later adds reuse the centroids
    assert len(index) == 33


def test_parameter_errors() -> None:
    with pytest.raises(ConfigError, match="nlist"):
        FaissIndex("hnsw", space=SPACE, dim=64, nlist=3)
    with pytest.raises(ConfigError, match="ef_search"):
        FaissIndex("hnsw", space=SPACE, dim=64, ef_search=0)
    with pytest.raises(ConfigError, match="unknown faiss index kind"):
        FaissIndex("lsh", space=SPACE, dim=64)
    with pytest.raises(ConfigError, match="nprobe applies to ivf"):
        FaissIndex("hnsw", space=SPACE, dim=64).configure_search(nprobe=4)
    with pytest.raises(ConfigError, match="ef_search applies to hnsw"):
        FaissIndex("flat", space=SPACE, dim=64).configure_search(ef_search=4)


@pytest.mark.parametrize(
    ("kind", "weak", "strong"),
    [
        ("hnsw", {"m": 8, "ef_construction": 40, "ef_search": 1}, {"ef_search": 64}),
        ("ivf", {"nlist": 32, "nprobe": 1}, {"nprobe": 8}),
    ],
)
def test_search_parameters_trade_recall(
    kind: str,
    weak: dict[str, int],
    strong: dict[str, int],
    data: tuple[np.ndarray, np.ndarray],
    exact: ExactIndex,
) -> None:
    """The recall check above can fail: weak settings on the same data stay below 0.95."""
    gallery, queries = data
    index = FaissIndex(kind, space=SPACE, dim=64, **weak)
    index.add(embeddings(gallery, SPACE))
    expected = exact.search(queries, 10)
    weak_recall = recall_at(index.search(queries, 10), expected)
    index.configure_search(**strong)
    strong_recall = recall_at(index.search(queries, 10), expected)
    assert weak_recall < 0.95 < strong_recall
    assert index.params == type(index.params)(**{**weak, **strong})
