"""Which re-ranking settings suit a dataset: one matching pass, every shortlist and pair score.

The library's re-ranker matches each query against its global top-``--shortlist`` gallery
images. This script does that matching once (with cached features), keeps every pair's match
count, homography inliers, fundamental-matrix inliers and summed match confidence, and reports
top-1 / top-5 for each pair score and each shortlist size up to ``--shortlist`` (the shortlist
ordered by the local score, ties by the global one: ``--fusion local``), with the shortlist
recall. That is how the method defaults were chosen (README, "Local-feature matching and
re-ranking"); calibrated fusion needs gallery-side calibration and is measured with
``wildreid evaluate`` itself. Examples::

    D=../shared/datasets
    uv run python benchmarks/rerank_settings.py --metadata $D/LionData/metadata.csv \\
        --split-column md_split --method sift --shortlist 0 --cache-dir cache
    uv run python benchmarks/rerank_settings.py --metadata M.csv --split S.csv \\
        --exclude-same identity+sequence --max-queries 300 --method aliked-lightglue --shortlist 20

Prints a markdown table (and writes it to ``--out`` if given) with the CPU model and load.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from machine import cpu_model

from wildreid.data.schema import load_dataset
from wildreid.data.splits import read_split
from wildreid.evaluation.protocol import (
    evaluate_embeddings,
    evaluate_scores,
    protocol_from_split,
    split_from_column,
)
from wildreid.matching.feature_cache import FeatureCache, extract_features
from wildreid.matching.rerank import Reranker, fuse, rerank_config, shortlist_indices
from wildreid.matching.verification import verify
from wildreid.pipeline import embed_dataset

SCORES = ("matches", "inliers (homography)", "inliers (fundamental)", "confidence")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadata", required=True, type=Path)
    split = parser.add_mutually_exclusive_group(required=True)
    split.add_argument("--split", type=Path)
    split.add_argument("--split-column")
    parser.add_argument("--exclude-same", action="append", default=[])
    parser.add_argument("--method", default="sift")
    parser.add_argument("--shortlist", type=int, default=100, help="0: every gallery image")
    parser.add_argument("--max-queries", type=int)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    metadata, root = load_dataset(args.metadata)
    table = (
        read_split(args.split, metadata=metadata)
        if args.split
        else split_from_column(metadata, args.split_column)
    )
    protocol = protocol_from_split(metadata, table)
    if args.max_queries:
        protocol = protocol.sample_queries(args.max_queries)
    ids = set(protocol.query_ids) | set(protocol.gallery_ids)
    rows = metadata[metadata["image_id"].astype(str).isin(ids)]
    embeddings = embed_dataset(rows, root=root, cache_dir=args.cache_dir).embeddings
    exclude = tuple(args.exclude_same)
    global_result = evaluate_embeddings(metadata, protocol, embeddings, exclude_same=exclude)

    reranker = Reranker(rerank_config(args.method, shortlist=args.shortlist))
    cache = FeatureCache(args.cache_dir) if args.cache_dir else None
    extraction = extract_features(rows, root=root, extractor=reranker.extractor, cache=cache)
    features = extraction.features
    shortlist = shortlist_indices(global_result.scores, args.shortlist)
    local = {name: np.full(shortlist.shape, np.nan) for name in SCORES}
    start = time.perf_counter()
    for q, query_id in enumerate(protocol.query_ids):
        columns = np.flatnonzero(shortlist[q] >= 0)
        pairs = [
            (features[query_id], features[protocol.gallery_ids[shortlist[q, b]]]) for b in columns
        ]
        for b, (first, second), matches in zip(
            columns, pairs, reranker.matcher.match(pairs), strict=True
        ):
            local["matches"][q, b] = len(matches)
            local["confidence"][q, b] = float(matches.scores.sum())
            for name, geometry in (
                ("inliers (homography)", "homography"),
                ("inliers (fundamental)", "fundamental"),
            ):
                local[name][q, b] = verify(matches, first, second, geometry=geometry).n_inliers
    seconds = (time.perf_counter() - start) / len(protocol.query_ids)

    depth = shortlist.shape[1]
    sizes = sorted({s for s in (10, 20, 50, 100, 200, 300, depth) if s <= depth})
    known = global_result.known
    gallery = np.asarray(global_result.gallery_labels, dtype=object)
    queries = np.asarray(global_result.query_labels, dtype=object)
    lines = [
        f"{args.metadata.parent.name}: {len(protocol.query_ids)} queries x "
        f"{len(protocol.gallery_ids)} gallery, {args.method}, mean keypoints "
        f"{np.mean([len(f) for f in features.values()]):.0f}; matching + both verifications "
        f"{seconds:.2f} s per query at shortlist {depth}; CPU {cpu_model()}, "
        f"load average {os.getloadavg()[0]:.1f}",
        "",
        f"global only: top-1 {100 * global_result.metrics['top1']:.1f}%, "
        f"top-5 {100 * global_result.metrics['top5']:.1f}%",
        "",
        "| pair score | " + " | ".join(f"B={s}" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    recall = [
        np.mean([(gallery[r[r >= 0]] == queries[q]).any() for q, r in enumerate(shortlist[:, :s])
                 if known[q]])
        for s in sizes
    ]  # fmt: skip
    lines.append("| shortlist recall | " + " | ".join(f"{100 * r:.1f}%" for r in recall) + " |")
    for name in SCORES:
        cells = []
        for s in sizes:
            scores = fuse(
                global_result.scores, shortlist[:, :s], local[name][:, :s], fusion="local"
            )
            metrics = evaluate_scores(metadata, protocol, scores, exclude_same=exclude).metrics
            cells.append(f"{100 * metrics['top1']:.1f}% / {100 * metrics['top5']:.1f}%")
        lines.append(f"| {name} (top-1 / top-5) | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
