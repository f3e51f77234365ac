"""LightGlue's speed levers on real shortlists: keypoint cap, adaptive depth / width, threads.

Evaluates the dataset globally (``wildreid evaluate``'s pipeline, no re-ranking), extracts the
learned features once (cached), then re-ranks the first ``--use`` queries' top-20 with LightGlue
under each setting ``KEYPOINTS:DEPTH:WIDTH:THREADS`` (the cap takes the strongest of the cached
keypoints; DEPTH / WIDTH are :class:`~wildreid.matching.matchers.MatcherConfig`'s
``depth_confidence`` / ``width_confidence``) and prints, per setting: wall and process CPU
seconds per query, top-1 / top-5 of the shortlist ordered by the homography inliers (ties by
the global order), the ROC AUC of the inlier count for same- vs different-individual pairs, how
often the first candidate agrees with the first setting's, and the same top-1 / top-5 when only
the top-10 of each shortlist is matched (half the pairs, read from the same run)::

    uv run python benchmarks/lightglue_levers.py --metadata $D/FS48FishLight/metadata.csv \\
        --split splits/fs48-gallery-query.csv --exclude-same identity+sequence \\
        --cache-dir cache --out runs/levers-fs48
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from evaluated_rows import add_dataset_arguments, evaluated_features, top_k
from machine import cpu_model
from sklearn.metrics import roc_auc_score

from wildreid.matching.extractors import build_extractor
from wildreid.matching.matchers import MatcherConfig, build_matcher
from wildreid.matching.rerank import Reranker, fuse, rerank_config
from wildreid.pipeline import evaluate_dataset
from wildreid.types import LocalFeatures


def strongest(features: LocalFeatures, cap: int) -> LocalFeatures:
    """The ``cap`` highest-scoring keypoints, in their original order."""
    if len(features) <= cap:
        return features
    keep = np.sort(np.argsort(-features.scores, kind="stable")[:cap])
    return LocalFeatures(
        features.keypoints[keep],
        features.descriptors[keep],
        features.scores[keep],
        features.image_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser, max_queries=300)
    parser.add_argument("--use", type=int, default=60, help="queries of that sample re-ranked")
    parser.add_argument("--method", default="aliked-lightglue")
    parser.add_argument(
        "--settings",
        default="512:0.95:0.99:1,512:0.9:0.95:1,256:0.95:0.99:1,256:0.9:0.95:1,256:0.9:0.95:2",
        help="comma-separated KEYPOINTS:DEPTH:WIDTH:THREADS; the first is the reference",
    )
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    print(f"cpu: {cpu_model()}")
    run = evaluate_dataset(
        args.metadata,
        out_dir=args.out,
        split_path=args.split,
        split_column=args.split_column,
        exclude_same=args.exclude_same,
        cache_dir=args.cache_dir,
        max_queries=args.max_queries,
    )
    result = run.result
    n = min(args.use, len(result.query_ids))
    global_scores = np.asarray(result.scores, dtype=np.float64)[:n]
    query_ids = result.query_ids[:n]
    queries = np.asarray(result.query_labels, dtype=object)[:n]
    gallery = np.asarray(result.gallery_labels, dtype=object)
    config = rerank_config(args.method, shortlist=20, fusion="local")
    extractor = build_extractor(config.extractor_config)
    features = evaluated_features(args.metadata, result, extractor, args.cache_dir, n_queries=n)

    def top(scores: np.ndarray, k: int) -> float:
        return top_k(result, scores, k, n_queries=n)

    print(
        f"{n} queries: global top-1 {top(global_scores, 1):.1%}, "
        f"recall@10 {top(global_scores, 10):.1%}, recall@20 {top(global_scores, 20):.1%}"
    )
    first_choice: np.ndarray | None = None
    for setting in args.settings.split(","):
        cap, depth, width, threads = setting.split(":")
        torch.set_num_threads(int(threads))
        matcher = build_matcher(
            MatcherConfig(
                name=config.matcher_config.name,
                depth_confidence=float(depth),
                width_confidence=float(width),
            )
        )
        reranker = Reranker(config, extractor=extractor, matcher=matcher)
        query_features = [strongest(features[i], int(cap)) for i in query_ids]
        gallery_features = [strongest(features[i], int(cap)) for i in result.gallery_ids]
        wall, cpu = time.perf_counter(), time.process_time()
        ranked = reranker.rerank(global_scores, query_features, gallery_features)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        q, b = np.nonzero(ranked.shortlist >= 0)
        same = gallery[ranked.shortlist[q, b]] == queries[q]
        choice = np.argmax(ranked.scores, axis=1)
        if first_choice is None:
            first_choice = choice
        agreement = f", same first candidate as the reference {(choice == first_choice).mean():.0%}"
        ten = fuse(global_scores, ranked.shortlist[:, :10], ranked.local[:, :10], fusion="local")
        print(
            f"{setting}: {wall / n:.2f} s wall, {cpu / n:.2f} s CPU per query; "
            f"top-1 {top(ranked.scores, 1):.1%} top-5 {top(ranked.scores, 5):.1%}, "
            f"AUC {roc_auc_score(same, ranked.local[q, b]):.3f}{agreement}; "
            f"top-10 only: top-1 {top(ten, 1):.1%} top-5 {top(ten, 5):.1%}",
            flush=True,
        )


if __name__ == "__main__":
    main()
