"""EmbeddingCache: reuse, invalidation by fingerprint and space, corrupt files, direct API."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.builders import write_png
from tests.models.test_embedder import CPU, SPACE, tiny_model, write_dataset
from wildreid.models.cache import CacheRow, EmbeddingCache
from wildreid.models.embedder import Embedder, EmbedResult
from wildreid.types import EmbeddingSpace


def run(root: Path, metadata: pd.DataFrame, cache: EmbeddingCache, **config: object) -> EmbedResult:
    embedder = Embedder(tiny_model(), config=dataclasses.replace(CPU, **config), cache=cache)
    return embedder.embed_images(metadata, root=root)


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, pd.DataFrame, EmbeddingCache]:
    root = tmp_path / "data"
    return root, write_dataset(root), EmbeddingCache(tmp_path / "cache")


def test_second_run_computes_nothing(data: tuple[Path, pd.DataFrame, EmbeddingCache]) -> None:
    root, metadata, cache = data
    first = run(root, metadata, cache)
    second = run(root, metadata, cache)
    assert (first.n_cached, first.n_computed) == (0, 10)
    assert (second.n_cached, second.n_computed) == (10, 0)
    np.testing.assert_array_equal(second.embeddings.vectors, first.embeddings.vectors)
    assert second.embeddings.image_ids == first.embeddings.image_ids
    assert second.embeddings.space == first.embeddings.space


def test_touched_or_rewritten_files_are_embedded_again(
    data: tuple[Path, pd.DataFrame, EmbeddingCache],
) -> None:
    root, metadata, cache = data
    first = run(root, metadata, cache)
    image = root / metadata.loc[3, "path"]
    info = image.stat()
    os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    touched = run(root, metadata, cache)
    assert (touched.n_cached, touched.n_computed) == (9, 1)
    np.testing.assert_allclose(touched.embeddings.vectors, first.embeddings.vectors, atol=1e-6)

    write_png(image, size=(30, 20), value=99)  # new content
    rewritten = run(root, metadata, cache)
    assert (rewritten.n_cached, rewritten.n_computed) == (9, 1)
    changed = np.flatnonzero(
        ~np.isclose(rewritten.embeddings.vectors, first.embeddings.vectors, atol=1e-6).all(axis=1)
    )
    assert changed.tolist() == [3]


def test_changed_bbox_is_embedded_again(data: tuple[Path, pd.DataFrame, EmbeddingCache]) -> None:
    root, metadata, cache = data
    run(root, metadata, cache)
    edited = metadata.copy()
    edited.loc[5, "bbox"] = "[0, 0, 12, 10]"
    result = run(root, edited, cache)
    assert (result.n_cached, result.n_computed) == (9, 1)


def test_other_space_does_not_reuse_vectors(
    data: tuple[Path, pd.DataFrame, EmbeddingCache],
) -> None:
    root, metadata, cache = data
    run(root, metadata, cache)
    other = dataclasses.replace(SPACE, weights_sha256="1" * 64)
    embedder = Embedder(tiny_model(other), config=CPU, cache=cache)
    result = embedder.embed_images(metadata, root=root)
    assert (result.n_cached, result.n_computed) == (0, 10)
    assert len(list(cache.directory.glob("*.sqlite"))) == 2


def test_corrupt_cache_is_ignored_with_a_warning_and_rebuilt(
    data: tuple[Path, pd.DataFrame, EmbeddingCache], caplog: pytest.LogCaptureFixture
) -> None:
    root, metadata, cache = data
    first = run(root, metadata, cache)
    (file,) = cache.directory.glob("*.sqlite")
    file.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="wildreid.fingerprint_cache"):
        rebuilt = run(root, metadata, cache)
    assert (rebuilt.n_cached, rebuilt.n_computed) == (0, 10)
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(rebuilt.embeddings.vectors, first.embeddings.vectors)
    assert run(root, metadata, cache).n_cached == 10


def test_skipped_images_are_not_cached(data: tuple[Path, pd.DataFrame, EmbeddingCache]) -> None:
    root, metadata, cache = data
    (root / metadata.loc[1, "path"]).write_bytes(b"broken")
    first = run(root, metadata, cache, skip_bad_images=True)
    second = run(root, metadata, cache, skip_bad_images=True)
    assert (first.n_computed, len(first.skipped)) == (9, 1)
    assert (second.n_cached, second.n_computed, len(second.skipped)) == (9, 0, 1)


def _space(dim: int = 4) -> EmbeddingSpace:
    return dataclasses.replace(SPACE, dim=dim)


def _rows(tmp_path: Path, n: int = 3) -> list[CacheRow]:
    paths = [write_png(tmp_path / f"{i}.png", value=i) for i in range(n)]
    return [CacheRow.of(f"id{i}", path, "") for i, path in enumerate(paths)]


def test_lookup_and_store_round_trip(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    rows = _rows(tmp_path)
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert cache.lookup(_space(), rows) == ({}, rows)  # nothing stored, no file created
    assert not cache.directory.exists()
    assert cache.store(_space(), rows[:2], vectors[:2]) == 2
    found, missing = cache.lookup(_space(), rows)
    assert sorted(found) == ["id0", "id1"] and missing == [rows[2]]
    np.testing.assert_array_equal(found["id1"], vectors[1])
    assert found["id1"].dtype == np.float32
    digest = hashlib.sha256(_space().to_json().encode()).hexdigest()[:16]
    assert cache.path_for(_space()) == tmp_path / "cache" / f"{digest}.sqlite"


def test_rows_without_a_file_are_never_stored(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    row = CacheRow.of("ghost", tmp_path / "missing.png")
    assert row.size == -1
    assert cache.store(_space(), [row], np.ones((1, 4), dtype=np.float32)) == 0
    assert cache.lookup(_space(), [row]) == ({}, [row])


def test_a_file_of_another_space_is_not_used(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    rows = _rows(tmp_path, n=1)
    undeclared = _space(dim=0)
    cache.store(undeclared, rows, np.ones((1, 4), dtype=np.float32))
    assert len(cache.lookup(undeclared, rows)[0]) == 1
    path = cache.path_for(undeclared)
    declared = _space(dim=8)
    path.replace(cache.path_for(declared))  # same file, now claimed for another space
    found, missing = cache.lookup(declared, rows)
    assert found == {} and missing == rows


def test_foreign_sqlite_file_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    path = cache.path_for(_space())
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE other (x INTEGER)")
    db.close()
    rows = _rows(tmp_path, n=2)
    with caplog.at_level(logging.WARNING, logger="wildreid.fingerprint_cache"):
        assert cache.lookup(_space(), rows) == ({}, rows)
    assert "rebuilding" in caplog.text
    assert cache.store(_space(), rows, np.ones((2, 4), dtype=np.float32)) == 2
    assert len(cache.lookup(_space(), rows)[0]) == 2


def test_store_refuses_mismatched_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 rows"):
        EmbeddingCache(tmp_path).store(_space(), _rows(tmp_path, 2), np.ones((3, 4), np.float32))


def test_concurrent_writers_and_readers_never_see_a_broken_file(tmp_path: Path) -> None:
    rows = _rows(tmp_path, n=8)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        cache = EmbeddingCache(tmp_path / "cache")  # one instance (connection) per thread
        try:
            for i in range(offset, len(rows), 2):
                cache.store(_space(), [rows[i]], np.full((1, 4), i, dtype=np.float32))
                found, _ = cache.lookup(_space(), rows)
                assert rows[i].image_id in found
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    found, missing = EmbeddingCache(tmp_path / "cache").lookup(_space(), rows)
    assert missing == [] and [found[r.image_id][0] for r in rows] == list(range(8))
