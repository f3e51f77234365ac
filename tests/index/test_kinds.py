"""The index-kind registry, build_index and load_index's file sniffing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.index.helpers import clustered, embeddings, make_space
from wildreid.errors import ConfigError, IndexBackendError, UnknownComponentError
from wildreid.index import INDEX_KINDS, ExactIndex, FaissIndex, VectorIndex, build_index, load_index

SPACE = make_space(64)
PARAMS: dict[str, dict[str, int]] = {
    "exact": {},
    "flat": {},
    "hnsw": {"m": 8},
    "ivf": {"nlist": 4, "nprobe": 4},
}


def test_registered_kinds() -> None:
    assert INDEX_KINDS.names() == ["exact", "flat", "hnsw", "ivf"]


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw", "ivf"])
def test_every_kind_builds_searches_saves_and_loads(kind: str, tmp_path: Path) -> None:
    vectors, _ = clustered(200, seed=21)
    index = build_index(kind, space=SPACE, dim=64, **PARAMS[kind])
    assert isinstance(index, VectorIndex)
    assert isinstance(index, ExactIndex if kind == "exact" else FaissIndex)
    index.add(embeddings(np.empty((0, 64), dtype=np.float32), SPACE))  # a no-op, even for ivf
    index.add(embeddings(vectors, SPACE))
    top1 = index.search(vectors[:20], 1)
    assert list(top1.image_ids[:, 0]) == [f"img{i}" for i in range(20)]
    path = tmp_path / f"gallery-{kind}"
    index.save(path)
    loaded = load_index(path)
    assert type(loaded) is type(index)
    np.testing.assert_array_equal(
        loaded.search(vectors, 5).image_ids, index.search(vectors, 5).image_ids
    )


def test_unknown_kind_suggests_close_names() -> None:
    with pytest.raises(UnknownComponentError, match="hnsw"):
        build_index("hsnw", space=SPACE, dim=64)


def test_parameters_are_checked_per_kind() -> None:
    with pytest.raises(ConfigError, match="no parameters"):
        build_index("exact", space=SPACE, dim=64, nlist=4)
    with pytest.raises(ConfigError, match="valid: nlist, nprobe"):
        build_index("ivf", space=SPACE, dim=64, m=4)


def test_load_index_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(IndexBackendError, match="nothing-here"):
        load_index(tmp_path / "nothing-here")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00not an index")
    with pytest.raises(IndexBackendError, match=r"garbage\.bin"):
        load_index(garbage)
    faiss_without_sidecar = tmp_path / "lonely.faiss"
    index = build_index("flat", space=SPACE, dim=64)
    index.add(embeddings(clustered(5)[0], SPACE))
    index.save(faiss_without_sidecar)
    (tmp_path / "lonely.faiss.json").unlink()
    with pytest.raises(IndexBackendError, match=r"lonely\.faiss"):
        load_index(faiss_without_sidecar)


def test_importing_the_index_package_does_not_load_faiss() -> None:
    code = "import sys, wildreid.index; print('faiss' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
