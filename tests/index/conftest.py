"""Index test setup: faiss runs single-threaded, so HNSW graphs (built in parallel otherwise) are
deterministic and the tests do not fight other processes for the cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_faiss() -> Iterator[None]:
    from wildreid.index import faiss_backend

    faiss = faiss_backend.faiss
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
