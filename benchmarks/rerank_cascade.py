"""Would a second matcher improve the first's ranking? A cascade probe, not a product feature.

Runs ``wildreid evaluate``'s pipeline with a first re-ranker (default RootSIFT over its default
shortlist, calibrated fusion), then matches each query's top-B of that fused ranking with a
second re-ranker (default ALIKED + LightGlue) and prints: top-1 / top-5 of the first ranking, of
the top-B ordered by the second matcher's score (``local``) and by the sum of both ranks
(``rank``), the first ranking's recall at B, and how well each score separates same-individual
from different-individual pairs inside those shortlists (ROC AUC; 0.5 is chance).

    uv run python benchmarks/rerank_cascade.py --metadata $D/LionData/metadata.csv \\
        --split-column md_split --cache-dir cache --out runs/cascade-lion
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from evaluated_rows import add_dataset_arguments, evaluated_features, top_k
from sklearn.metrics import roc_auc_score

from wildreid.matching.rerank import Reranker, fuse, rerank_config
from wildreid.pipeline import evaluate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser, max_queries=None)
    parser.add_argument("--first", default="rootsift")
    parser.add_argument("--second", default="aliked-lightglue")
    parser.add_argument("--depth", type=int, default=20, help="B: candidates the second matches")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    run = evaluate_dataset(
        args.metadata,
        out_dir=out / args.first,
        split_path=args.split,
        split_column=args.split_column,
        exclude_same=args.exclude_same,
        rerank=rerank_config(args.first),
        cache_dir=args.cache_dir,
        max_queries=args.max_queries,
    )
    assert run.global_result is not None
    print(f"{args.first}: {time.perf_counter() - started:.0f} s")
    result = run.result  # its query / gallery ids are the evaluated ones, skipped images left out
    first = np.asarray(result.scores, dtype=np.float64)
    second = Reranker(rerank_config(args.second, shortlist=args.depth, fusion="local"))
    started = time.perf_counter()
    features = evaluated_features(args.metadata, result, second.extractor, args.cache_dir)
    print(f"{args.second} extraction: {time.perf_counter() - started:.0f} s")
    matched = second.rerank(
        first,
        [features[i] for i in result.query_ids],
        [features[i] for i in result.gallery_ids],
    )
    queries = np.asarray(result.query_labels, dtype=object)
    gallery = np.asarray(result.gallery_labels, dtype=object)

    def top(scores: np.ndarray, k: int) -> float:
        return top_k(result, scores, k, n_queries=len(queries))

    print(f"global top-1 {top(np.asarray(run.global_result.scores), 1):.1%}")
    print(f"{args.first} top-1 {top(first, 1):.1%} top-5 {top(first, 5):.1%}")
    print(f"{args.first} recall@{args.depth} {top(first, args.depth):.1%}")
    for fusion in ("local", "rank"):
        scores = fuse(first, matched.shortlist, matched.local, fusion=fusion)
        ranked = f"top-1 {top(scores, 1):.1%} top-5 {top(scores, 5):.1%}"
        print(f"then {args.second} ({fusion}): {ranked}")
    q, b = np.nonzero(matched.shortlist >= 0)
    g = matched.shortlist[q, b]
    same = gallery[g] == queries[q]
    print(
        f"in the shortlists: {same.size} pairs, {int(same.sum())} of one individual; ROC AUC "
        f"{args.second} {roc_auc_score(same, matched.local[q, b]):.2f}, "
        f"{args.first} {roc_auc_score(same, first[q, g]):.2f}; median {args.second} score "
        f"same {np.median(matched.local[q, b][same]):.0f}, "
        f"different {np.median(matched.local[q, b][~same]):.0f}"
    )
    print(f"{args.second}: {matched.seconds['rerank'] / len(queries):.2f} s per query")


if __name__ == "__main__":
    main()
