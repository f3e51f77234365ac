"""Embeddings .npz files: round trip, files from other tools, and every refusal."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from wildreid.embeddings_file import load_embeddings, save_embeddings
from wildreid.errors import DataError
from wildreid.types import Embeddings, EmbeddingSpace

SPACE = EmbeddingSpace(
    model="m", weights_sha256="ab" * 32, input_size=(8, 6), mean=(0.5,) * 3, std=(0.2,) * 3,
    crop_mode="center", dim=3,
)  # fmt: skip


def _unit(n: int, d: int = 3, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, d))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _write(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as stream:
        np.savez(stream, **arrays)  # type: ignore[arg-type]
    return path


def test_round_trip(tmp_path: Path) -> None:
    embeddings = Embeddings(_unit(4), ("a", "b", "ç", "d d"), SPACE)
    path = tmp_path / "out" / "gallery.emb"
    save_embeddings(embeddings, path)
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["gallery.emb"]
    loaded = load_embeddings(path)
    assert loaded.image_ids == embeddings.image_ids
    np.testing.assert_array_equal(loaded.vectors, embeddings.vectors)
    assert loaded.space == SPACE
    with np.load(path, allow_pickle=False) as raw:
        assert raw["image_id"].dtype.kind == "U"
        assert raw["vectors"].dtype == np.float32
        assert raw["space"].shape == () and raw["space"].dtype.kind == "U"
        assert EmbeddingSpace.from_json(str(raw["space"])) == SPACE


def test_empty_round_trip(tmp_path: Path) -> None:
    empty = Embeddings(np.zeros((0, 3), dtype=np.float32), (), SPACE)
    save_embeddings(empty, tmp_path / "e.npz")
    loaded = load_embeddings(tmp_path / "e.npz")
    assert len(loaded) == 0 and loaded.dim == 3 and loaded.space == SPACE


def test_external_file_gets_a_placeholder_space_float32_and_unit_norm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float64)
    path = _write(tmp_path / "theirs.npz", image_id=np.array([10, 11]), vectors=raw)
    with caplog.at_level(logging.INFO, logger="wildreid.embeddings_file"):
        loaded = load_embeddings(path)
    assert loaded.image_ids == ("10", "11")
    assert loaded.vectors.dtype == np.float32
    np.testing.assert_allclose(loaded.vectors, [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)
    assert loaded.space == EmbeddingSpace(
        model="external:theirs.npz", weights_sha256="unknown", input_size=(1, 1),
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), dim=2,
    )  # fmt: skip
    assert "normalising" in caplog.text and "float64" in caplog.text


def test_normalised_vectors_are_kept_as_they_are(tmp_path: Path) -> None:
    vectors = _unit(3)
    path = _write(tmp_path / "x.npz", image_id=np.array(["a", "b", "c"]), vectors=vectors)
    np.testing.assert_array_equal(load_embeddings(path).vectors, vectors)


def test_byte_string_ids_are_decoded(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.npz", image_id=np.array([b"a", b"b"]), vectors=_unit(2))
    assert load_embeddings(path).image_ids == ("a", "b")


IDS = np.array(["a", "b", "c"])


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"vectors": _unit(3)}, "lacks the array 'image_id'"),
        ({"image_id": IDS}, "lacks the array 'vectors'"),
        ({"image_id": IDS, "vectors": _unit(2)}, "2 vectors but 3 image ids"),
        ({"image_id": np.array(["a", "b", "a"]), "vectors": _unit(3)}, "'a' appears twice"),
        ({"image_id": IDS, "vectors": _unit(3)[:, 0]}, "must be 2-D"),
        ({"image_id": IDS, "vectors": _unit(3, d=0)}, "dimension 0"),
        ({"image_id": np.array(["a", "", "c"]), "vectors": _unit(3)}, "position 1 is empty"),
        ({"image_id": IDS, "vectors": np.array([["x"]] * 3)}, "must be numbers"),
        ({"image_id": IDS, "vectors": _unit(3), "space": np.array("{nope")}, "not a valid"),
        ({"image_id": IDS, "vectors": _unit(3, d=4), "space": np.array(SPACE.to_json())}, "says 3"),
    ],
)
def test_malformed_files_are_refused_naming_the_file(
    tmp_path: Path, arrays: dict[str, np.ndarray], match: str
) -> None:
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match) as caught:
        load_embeddings(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_rows_name_the_first_bad_id(tmp_path: Path, bad: float) -> None:
    vectors = _unit(3)
    vectors[1, 2] = bad
    vectors[2, 0] = bad
    path = _write(tmp_path / "x.npz", image_id=IDS, vectors=vectors)
    with pytest.raises(DataError, match=r"2 vector\(s\) have NaN or infinite values, first .*'b'"):
        load_embeddings(path)


def test_zero_vectors_cannot_be_normalised(tmp_path: Path) -> None:
    vectors = _unit(3)
    vectors[2] = 0
    path = _write(tmp_path / "x.npz", image_id=IDS, vectors=vectors)
    with pytest.raises(DataError, match="'c' is all zeros"):
        load_embeddings(path)


def test_pickled_objects_are_never_loaded(tmp_path: Path) -> None:
    ids = np.array(["a", "b", "c"], dtype=object)
    path = _write(tmp_path / "x.npz", image_id=ids, vectors=_unit(3))
    with pytest.raises(DataError, match="pickled"):
        load_embeddings(path)


def test_other_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_embeddings(tmp_path / "missing.npz")
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        load_embeddings(text)
    npy = tmp_path / "array.npz"
    with npy.open("wb") as stream:
        np.save(stream, _unit(2))
    with pytest.raises(DataError, match=r"single \.npy"):
        load_embeddings(npy)
