"""Test data for the index tests: seeded clustered unit vectors and a tie-aware comparison."""

from __future__ import annotations

import numpy as np

from wildreid.index import SearchResult
from wildreid.types import Embeddings, EmbeddingSpace


def make_space(dim: int = 64, model: str = "toy") -> EmbeddingSpace:
    """A small embedding space of dimension ``dim``."""
    return EmbeddingSpace(
        model=model,
        weights_sha256="ab" * 32,
        input_size=(32, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        dim=dim,
    )


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, float32."""
    x64: np.ndarray = np.asarray(x, dtype=np.float64)
    norms: np.ndarray = np.linalg.norm(x64, axis=1, keepdims=True)
    out: np.ndarray = (x64 / norms).astype(np.float32)
    return out


def clustered(
    n: int,
    *,
    dim: int = 64,
    clusters: int = 40,
    spread: float = 0.6,
    seed: int = 0,
    centres: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around random centres; returns (vectors, centres).

    The shape of real re-ID embeddings (tight groups per animal), not uniform noise, on which
    approximate indexes behave very differently. Pass the ``centres`` of a gallery to draw
    queries from the same clusters.
    """
    rng = np.random.default_rng(seed)
    if centres is None:
        centres = unit(rng.standard_normal((clusters, dim)))
    clusters, dim = centres.shape
    assignment = rng.integers(0, clusters, size=n)
    noise = rng.standard_normal((n, dim)) * spread / np.sqrt(dim)
    return unit(centres[assignment] + noise), centres


def embeddings(vectors: np.ndarray, space: EmbeddingSpace, prefix: str = "img") -> Embeddings:
    """Embeddings with ids ``prefix0, prefix1, ...``."""
    ids = tuple(f"{prefix}{i}" for i in range(len(vectors)))
    return Embeddings(np.ascontiguousarray(vectors), ids, space)


def brute_force(
    gallery: np.ndarray, ids: list[str] | tuple[str, ...], queries: np.ndarray, k: int
) -> SearchResult:
    """Reference top-k in float64 with a stable sort (ties by gallery row), padded to k."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), "", dtype=object)
    out_scores[:, : top.shape[1]] = top
    out_ids[:, : top.shape[1]] = np.asarray(ids, dtype=object)[order]
    return SearchResult(out_scores, out_ids)


def assert_same_topk(
    got: SearchResult,
    expected: SearchResult,
    gallery: np.ndarray,
    ids: list[str] | tuple[str, ...],
    queries: np.ndarray,
    *,
    atol: float = 1e-5,
) -> None:
    """Tie-aware equality of two top-k results.

    ``got`` is a correct top-k when its score rows equal ``expected``'s, every returned id is
    real, unique in its row and has the returned score against its query. Among tied
    items either may be returned, so ids are not compared position by position.
    """
    np.testing.assert_allclose(got.scores, expected.scores, atol=atol, rtol=0)
    position = {image_id: i for i, image_id in enumerate(ids)}
    for row in range(len(got)):
        real = [str(i) for i in got.image_ids[row] if i != ""]
        assert len(set(real)) == len(real), f"row {row} repeats an id: {real}"
        assert len(real) == int(np.isfinite(expected.scores[row]).sum())
        rows = [position[i] for i in real]
        true_scores = gallery[rows].astype(np.float64) @ queries[row].astype(np.float64)
        np.testing.assert_allclose(got.scores[row, : len(real)], true_scores, atol=atol, rtol=0)


def recall_at(got: SearchResult, expected: SearchResult) -> float:
    """Mean fraction of ``expected``'s real hits that ``got`` also returns."""
    hits = total = 0
    for row in range(len(got)):
        truth = {i for i in expected.image_ids[row] if i != ""}
        hits += len(truth & set(got.image_ids[row]))
        total += len(truth)
    return hits / total
