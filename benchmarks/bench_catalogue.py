"""Catalogue speed: identify latency by stage at several catalogue sizes, and bulk enrolment.

(a) identify: one photo at a time through ``Catalogue.identify`` (decode, embed, search, re-rank
    with ``--rerank METHOD`` (features of the real gallery photos extracted first), decision,
    and the whole call including storing the query and its identification) against
    catalogues of ``--sizes`` gallery images. The gallery is real photos embedded with the model
    plus synthetic unit vectors (5 per synthetic individual) filled in through the store, so the
    search and the database work at full size. p50 / p95 over ``--queries`` photos per size; the
    last size is also measured with a location filter (which searches the whole index).
(b) enrolment: ``Catalogue.enrol`` (hash + copy + embed + commit + index) against
    ``Embedder.embed_images`` (what ``wildreid embed`` runs) on the same images, best of rounds.

Example::

    nice -n 5 uv run python benchmarks/bench_catalogue.py \
        --metadata ../shared/datasets/LionData/metadata.csv --sizes 1000,10000,100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import cpu_model

from wildreid.catalogue import Catalogue, Filters, ImageRecord, Individual
from wildreid.catalogue.catalogue import _space_key
from wildreid.data.schema import read_metadata
from wildreid.matching.rerank import RerankConfig

STAGES = ("decode", "embed", "search", "rerank", "decision")


def fill_synthetic(cat: Catalogue, total: int, *, seed: int = 0, batch: int = 5000) -> None:
    """Add synthetic gallery images (vectors only, no files) until the gallery holds ``total``."""
    have = cat.store.counts()["images"]
    rng = np.random.default_rng(seed + have)
    dim = cat.space.dim
    key = _space_key(cat.space)
    while have < total:
        n = min(batch, total - have)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"syn{have + i}" for i in range(n)]
        with cat.store.transaction():
            for i, image_id in enumerate(ids):
                individual = f"synind{(have + i) // 5}"
                if (have + i) % 5 == 0:
                    cat.store.add_individual(Individual(individual, individual))
                cat.store.add_image(
                    ImageRecord(
                        image_id,
                        f"sha-{image_id}",
                        f"images/none/{image_id}.png",
                        individual,
                        "gallery",
                        location="north" if i % 2 else "south",
                        date="2024-01-01",
                    )
                )
            cat.store.put_vectors(key, ids, vectors)
            cat._bump()
        have += n
    cat._refresh()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_identify(
    cat: Catalogue,
    photos: list[Path],
    *,
    filters: Filters = Filters(),
    rerank: RerankConfig | None = None,
) -> dict[str, tuple[float, float]]:
    cat.identify(photos[0], filters=filters, rerank=rerank)  # warm-up (model load, allocations)
    stages: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    for photo in photos:
        start = time.perf_counter()
        result = cat.identify(photo, filters=filters, rerank=rerank)
        stages["total"].append((time.perf_counter() - start) * 1e3)
        for stage in STAGES:
            stages[stage].append(result.timings_ms[stage])
    return {s: (percentile(v, 50), percentile(v, 95)) for s, v in stages.items()}


def bench_enrol(frame: pd.DataFrame, root: Path, model: str, rounds: int) -> tuple[float, float]:
    from wildreid.models.embedder import Embedder, EmbedderConfig
    from wildreid.models.factory import load_model

    embedder = Embedder(load_model(model, device="cpu"), config=EmbedderConfig(device="cpu"))
    embedder.embed_images(frame.iloc[:32], root=root)  # warm-up
    embed_best = enrol_best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        embedder.embed_images(frame, root=root)
        embed_best = max(embed_best, len(frame) / (time.perf_counter() - start))
        with tempfile.TemporaryDirectory() as tmp:
            cat = Catalogue.create(Path(tmp) / "cat", model=model)
            cat.embedder().embed_images(frame.iloc[:32], root=root)  # same warm-up
            start = time.perf_counter()
            result = cat.enrol(frame, root=root)
            seconds = time.perf_counter() - start
            cat.close()
        enrol_best = max(enrol_best, len(result.added) / seconds)
    return embed_best, enrol_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", type=Path, required=True)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--gallery-split", default="train", help="md_split rows enrolled")
    parser.add_argument("--enrol-rounds", type=int, default=2)
    parser.add_argument("--skip-enrol", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch and faiss threads (0: all)")
    parser.add_argument(
        "--rerank", default=None, help="re-rank every query's shortlist (sift, rootsift, ...)"
    )
    parser.add_argument("--shortlist", type=int, default=None, help="images re-ranked per query")
    args = parser.parse_args()
    if args.threads:
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    rerank = None
    if args.rerank:
        from wildreid.catalogue.local import resolve_rerank

        rerank = resolve_rerank(args.rerank, shortlist=args.shortlist)
    print(
        f"cpu: {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"threads {args.threads or 'all'}"
    )
    frame = read_metadata(args.metadata)
    root = args.metadata.parent
    split = frame["md_split"] if "md_split" in frame.columns else pd.Series("train", frame.index)
    gallery = frame[split == args.gallery_split]
    queries = frame[split != args.gallery_split].head(args.queries)
    if queries.empty:
        queries = gallery.head(args.queries)
    photos = [root / p for p in queries["path"]]

    if not args.skip_enrol:
        embed_rate, enrol_rate = bench_enrol(gallery, root, args.model, args.enrol_rounds)
        print(
            f"\nenrolment of {len(gallery)} images: wildreid embed {embed_rate:.1f} images/s, "
            f"catalogue enrol {enrol_rate:.1f} images/s, ratio {enrol_rate / embed_rate:.2f}"
        )

    work = Path(tempfile.mkdtemp(prefix="bench-catalogue-"))
    try:
        cat = Catalogue.create(work / "cat", model=args.model)
        cat.enrol(gallery, root=root)
        if rerank is not None:  # the features of every real gallery photo, as after calibrating
            start = time.perf_counter()
            records = cat.store.images(role="gallery")
            cat.local_matching(rerank).features(records)
            print(
                f"\n{args.rerank} features of {len(records)} gallery photos extracted in "
                f"{time.perf_counter() - start:.1f} s"
            )
        print(
            f"\nidentify latency in ms, p50 / p95 over {len(photos)} photos ({args.model}, "
            f"re-rank {f'{rerank.method}, shortlist {rerank.shortlist}' if rerank else 'none'})"
        )
        header = "| gallery images | " + " | ".join((*STAGES, "total")) + " |"
        print(header)
        print("|" + "---|" * (len(STAGES) + 2))
        for size in sizes:
            fill_synthetic(cat, size)
            row = bench_identify(cat, photos, rerank=rerank)
            cells = " | ".join(f"{p50:.1f} / {p95:.1f}" for p50, p95 in row.values())
            print(f"| {cat.index_size} | {cells} |", flush=True)
        filtered = bench_identify(cat, photos, filters=Filters(location="north"), rerank=rerank)
        cells = " | ".join(f"{p50:.1f} / {p95:.1f}" for p50, p95 in filtered.values())
        print(f"| {cat.index_size}, location filter | {cells} |")
        cat.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
