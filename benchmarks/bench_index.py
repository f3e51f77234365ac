"""Benchmark the vector indexes: exact search bandwidth and ANN recall / latency / memory.

(a) Exact search of ONE query over N x D float32 unit vectors (default 1e5 and 1e6 x 512) for
    ExactIndex (numpy BLAS) and faiss flat, with the achieved bandwidth (bytes of the matrix /
    latency) next to the measured copy and sum bandwidth of the same array on this machine.
(b) ANN configurations (hnsw M x efSearch, ivf nlist x nprobe) on real embeddings (an .npz with
    arrays ``image_id`` and ``vectors``; queries are held out of the gallery) or on synthetic
    clustered vectors (``--synthetic N``): recall@k against exact search, per-query latency
    (batched and one query at a time), build time, index file size and process RSS delta.

Examples::

    uv run python benchmarks/bench_index.py --exact-sizes 100000 1000000 --no-ann
    uv run python benchmarks/bench_index.py --no-exact --synthetic 100000 --json ann.json
    uv run python benchmarks/bench_index.py --no-exact --npz embeddings.npz
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wildreid.files import atomic_path
from wildreid.index import ExactIndex, FaissIndex, SearchResult, VectorIndex
from wildreid.types import Embeddings, EmbeddingSpace

CHUNK_ROWS = 65536
GB = 1e9


def rss_bytes() -> int:
    """Current resident set size of this process (Linux), 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return max((int(i["num_threads"]) for i in threadpool_info()), default=None)


def space_of(dim: int, name: str) -> EmbeddingSpace:
    return EmbeddingSpace(name, "0" * 64, (224, 224), (0.5,) * 3, (0.5,) * 3, dim=dim)


def normalise_inplace(x: np.ndarray) -> None:
    for start in range(0, len(x), CHUNK_ROWS):
        chunk = x[start : start + CHUNK_ROWS]
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)


def random_unit(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform random unit vectors, generated in chunks (no float64 copy of the whole)."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        out[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    normalise_inplace(out)
    return out


def clustered_unit(
    n: int, centres: np.ndarray, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """``n`` unit vectors around random ``centres`` (noise norm about ``spread``)."""
    dim = centres.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        pick = rng.integers(0, len(centres), size=stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = centres[pick] + noise * np.float32(spread / np.sqrt(dim))
    normalise_inplace(out)
    return out


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def make_embeddings(vectors: np.ndarray, space: EmbeddingSpace) -> Embeddings:
    return Embeddings(vectors, tuple(f"v{i}" for i in range(len(vectors))), space)


# --------------------------------------------------------------------------- (a) exact search


def time_search(
    make: Callable[[], VectorIndex], embeddings: Embeddings, query: np.ndarray, repeats: int
) -> list[float]:
    """Latencies of one-query searches of a fresh index (dropped on return)."""
    index = make()
    index.add(embeddings)
    return timed(lambda: index.search(query, 10), repeats)


def time_copy(vectors: np.ndarray, repeats: int) -> list[float]:
    dst = np.empty_like(vectors)
    return timed(lambda: np.copyto(dst, vectors), repeats)


def bench_exact(n: int, dim: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    space = space_of(dim, "bench-exact")
    t0 = time.perf_counter()
    vectors = random_unit(n, dim, rng)
    print(f"# generated {n} x {dim} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    query = random_unit(1, dim, rng)
    matrix_bytes = vectors.nbytes
    rows: list[dict[str, Any]] = []

    def record(what: str, times: list[float], moved_bytes: float) -> None:
        median = statistics.median(times)
        rows.append(
            {
                "n": n,
                "dim": dim,
                "what": what,
                "latency_ms_median": 1e3 * median,
                "latency_ms_min": 1e3 * min(times),
                "bandwidth_gb_s": moved_bytes / median / GB,
                "matrix_bytes": matrix_bytes,
                "matrix_gb": matrix_bytes / GB,
            }
        )
        print(f"# {what}: {1e3 * median:.2f} ms", file=sys.stderr)

    embeddings = make_embeddings(vectors, space)
    record(
        "ExactIndex.search (1 query)",
        time_search(lambda: ExactIndex(space=space, dim=dim), embeddings, query, repeats),
        matrix_bytes,
    )
    record(
        "faiss flat search (1 query)",
        time_search(lambda: FaissIndex("flat", space=space, dim=dim), embeddings, query, repeats),
        matrix_bytes,
    )
    del embeddings
    gc.collect()
    record("memcpy (np.copyto, read+write)", time_copy(vectors, repeats), 2 * matrix_bytes)
    record(
        "sum (np.sum, read)", timed(lambda: vectors.sum(dtype=np.float32), repeats), matrix_bytes
    )
    return rows


# ------------------------------------------------------------------------------- (b) ANN grid


def load_npz(path: Path, num_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    with np.load(path, allow_pickle=False) as data:
        vectors = np.ascontiguousarray(data["vectors"], dtype=np.float32)
        ids = data["image_id"]
    if len(ids) != len(vectors):
        raise SystemExit(f"{path}: {len(ids)} image ids but {len(vectors)} vectors")
    norms = np.linalg.norm(vectors, axis=1)
    if np.abs(norms - 1).max() > 1e-2:
        print("# vectors were not unit-norm: normalising", file=sys.stderr)
        normalise_inplace(vectors)
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(vectors), dtype=bool)
    held_out[rng.choice(len(vectors), size=min(num_queries, len(vectors) // 10), replace=False)] = 1
    return (
        vectors[~held_out],
        vectors[held_out],
        f"{path.name} ({len(vectors)} x {vectors.shape[1]})",
    )


def synthetic(
    n: int, dim: int, per_cluster: int, spread: float, num_queries: int, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(seed)
    centres = random_unit(max(1, n // per_cluster), dim, rng)
    gallery = clustered_unit(n, centres, spread, rng)
    queries = clustered_unit(num_queries, centres, spread, rng)
    label = f"synthetic {n} x {dim}, {len(centres)} clusters, spread {spread}"
    return gallery, queries, label


def recall(got: SearchResult, truth: SearchResult) -> float:
    hits = sum(len(set(truth.image_ids[r]) & set(got.image_ids[r])) for r in range(len(truth)))
    return hits / int(truth.image_ids.size)


def measure(
    index: VectorIndex, queries: np.ndarray, k: int, truth: SearchResult | None, singles: int
) -> dict[str, Any]:
    start = time.perf_counter()
    batch = index.search(queries, k)
    batch_s = time.perf_counter() - start
    single: list[float] = []
    for q in range(min(singles, len(queries))):
        one = queries[q : q + 1]
        start = time.perf_counter()
        index.search(one, k)
        single.append(time.perf_counter() - start)
    return {
        f"recall@{k}": 1.0 if truth is None else recall(batch, truth),
        "batch_ms_per_query": 1e3 * batch_s / len(queries),
        "single_ms_p50": 1e3 * statistics.median(single),
        "single_ms_p95": 1e3 * float(np.percentile(single, 95)),
        "_result": batch,
    }


def built(
    make: Callable[[], VectorIndex], gallery: np.ndarray, space: EmbeddingSpace, tmp: Path
) -> tuple[VectorIndex, dict[str, Any]]:
    embeddings = make_embeddings(gallery, space)
    gc.collect()
    rss0 = rss_bytes()
    start = time.perf_counter()
    index = make()
    index.add(embeddings)
    build_s = time.perf_counter() - start
    rss_delta = rss_bytes() - rss0
    path = tmp / "index.bin"
    index.save(path)
    size = sum(p.stat().st_size for p in tmp.iterdir())
    for p in tmp.iterdir():
        p.unlink()
    return index, {
        "build_s": build_s,
        "index_bytes": size,
        "index_mb": size / 1e6,
        "rss_delta_bytes": rss_delta,
        "rss_delta_mb": rss_delta / 1e6,
    }


def bench_ann(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    if args.npz:
        gallery, queries, label = load_npz(Path(args.npz), args.queries, args.seed)
    else:
        gallery, queries, label = synthetic(
            args.synthetic, args.dim, args.per_cluster, args.spread, args.queries, args.seed
        )
    dim, k = gallery.shape[1], args.k
    space = space_of(dim, "bench-ann")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        exact, info = built(lambda: ExactIndex(space=space, dim=dim), gallery, space, tmp)
        stats = measure(exact, queries, k, None, args.single_queries)
        truth = stats.pop("_result")
        rows.append({"index": "exact (numpy)", "params": "", **info, **stats})
        del exact
        configs: list[tuple[str, dict[str, int], str, list[int]]] = [("flat", {}, "", [0])]
        configs += [
            ("hnsw", {"m": m, "ef_construction": efc}, "ef_search", args.hnsw_ef_search)
            for m in args.hnsw_m
            for efc in args.hnsw_ef_construction
        ]
        configs += [("ivf", {"nlist": nl}, "nprobe", args.ivf_nprobe) for nl in args.ivf_nlist]
        for kind, params, knob, values in configs:
            print(f"# building {kind} {params}", file=sys.stderr)

            def make(kind: str = kind, params: dict[str, int] = params) -> VectorIndex:
                return FaissIndex(kind, space=space, dim=dim, **params)

            index, info = built(make, gallery, space, tmp)
            assert isinstance(index, FaissIndex)
            for value in values:
                if knob:
                    index.configure_search(**{knob: value})
                stats = measure(index, queries, k, truth, args.single_queries)
                stats.pop("_result")
                shown = ", ".join(f"{key}={val}" for key, val in params.items())
                shown += f", {knob}={value}" if knob else ""
                rows.append(
                    {"index": f"faiss {kind}", "params": shown.strip(", "), **info, **stats}
                )
            del index
            gc.collect()
    return f"{label}, {len(queries)} queries, k={k}", rows


# ------------------------------------------------------------------------------------ output


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = [format(row[key], fmt) if fmt else str(row[key]) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exact-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--no-exact", action="store_true", help="skip part (a)")
    parser.add_argument("--no-ann", action="store_true", help="skip part (b)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--npz", help="real embeddings: arrays image_id, vectors")
    source.add_argument("--synthetic", type=int, default=100_000, help="synthetic gallery size")
    parser.add_argument("--per-cluster", type=int, default=20, help="synthetic images per animal")
    parser.add_argument("--spread", type=float, default=1.0, help="synthetic noise norm")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single-queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hnsw-m", type=int, nargs="*", default=[16, 32])
    parser.add_argument("--hnsw-ef-construction", type=int, nargs="*", default=[40])
    parser.add_argument("--hnsw-ef-search", type=int, nargs="*", default=[16, 32, 64, 128, 256])
    parser.add_argument("--ivf-nlist", type=int, nargs="*", default=[256, 1024])
    parser.add_argument("--ivf-nprobe", type=int, nargs="*", default=[1, 4, 16, 64])
    parser.add_argument(
        "--threads", type=int, help="limit BLAS and faiss OpenMP threads (default: all cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    import faiss

    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        faiss.omp_set_num_threads(args.threads)
    machine = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "cpus": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "blas_threads": blas_threads(),
        "processor": platform.processor() or platform.machine(),
        "load_average_1m_at_start": os.getloadavg()[0],
    }
    print(f"machine: {machine}\n")
    out: dict[str, Any] = {"machine": machine, "args": vars(args)}
    if not args.no_exact:
        exact_rows = [
            r for n in args.exact_sizes for r in bench_exact(n, args.dim, args.repeats, args.seed)
        ]
        out["exact"] = exact_rows
        print(f"## (a) one query, exact search, {args.dim}-d float32 (median of {args.repeats})\n")
        print(
            table(
                exact_rows,
                [
                    ("n", "N", ""),
                    ("what", "operation", ""),
                    ("matrix_gb", "matrix GB", ".3f"),
                    ("latency_ms_median", "median ms", ".2f"),
                    ("latency_ms_min", "min ms", ".2f"),
                    ("bandwidth_gb_s", "GB/s", ".2f"),
                ],
            )
        )
        print()
    if not args.no_ann:
        label, ann_rows = bench_ann(args)
        out["ann"] = {"data": label, "rows": ann_rows}
        print(f"## (b) ANN: {label}\n")
        print(
            table(
                ann_rows,
                [
                    ("index", "index", ""),
                    ("params", "params", ""),
                    (f"recall@{args.k}", f"recall@{args.k}", ".4f"),
                    ("batch_ms_per_query", "batch ms/q", ".3f"),
                    ("single_ms_p50", "1-query p50 ms", ".3f"),
                    ("single_ms_p95", "1-query p95 ms", ".3f"),
                    ("build_s", "build s", ".1f"),
                    ("index_mb", "file MB", ".1f"),
                    ("rss_delta_mb", "RSS delta MB", ".1f"),
                ],
            )
        )
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    out["load_average_1m_at_end"] = os.getloadavg()[0]
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
