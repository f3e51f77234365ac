"""What the shortlist benchmarks share: the dataset options of ``wildreid evaluate``, the local
features of the rows an evaluation actually scored, and its top-k of re-ranked scores."""

from __future__ import annotations

import argparse
import os

import numpy as np

from wildreid.data.schema import load_dataset
from wildreid.evaluation.metrics import top_k_accuracy
from wildreid.evaluation.protocol import EvaluationResult
from wildreid.matching.extractors import LocalExtractor
from wildreid.matching.feature_cache import FeatureCache, extract_features
from wildreid.types import LocalFeatures


def add_dataset_arguments(parser: argparse.ArgumentParser, *, max_queries: int | None) -> None:
    """``--metadata``, ``--split`` / ``--split-column``, ``--exclude-same``, ``--max-queries``."""
    parser.add_argument("--metadata", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--split")
    group.add_argument("--split-column")
    parser.add_argument("--exclude-same", nargs="*", default=[])
    parser.add_argument("--max-queries", type=int, default=max_queries)


def evaluated_features(
    metadata_path: str | os.PathLike[str],
    result: EvaluationResult,
    extractor: LocalExtractor,
    cache_dir: str | os.PathLike[str],
    *,
    n_queries: int | None = None,
) -> dict[str, LocalFeatures]:
    """Features (cached) of the evaluated gallery images and of the first ``n_queries``
    evaluated queries (all of them by default), by image id."""
    metadata, root = load_dataset(metadata_path)
    ids = {*result.query_ids[:n_queries], *result.gallery_ids}
    rows = metadata[metadata["image_id"].astype(str).isin(ids)]
    return extract_features(
        rows, root=root, extractor=extractor, cache=FeatureCache(cache_dir)
    ).features


def top_k(result: EvaluationResult, scores: np.ndarray, k: int, *, n_queries: int) -> float:
    """The evaluation's image-level top-k (:func:`~wildreid.evaluation.metrics.top_k_accuracy`)
    of ``scores`` for its first ``n_queries`` queries, excluded pairs left out."""
    return top_k_accuracy(
        scores,
        result.query_labels[:n_queries],
        result.gallery_labels,
        k=k,
        valid=np.isfinite(np.asarray(result.scores)[:n_queries]),
    )
