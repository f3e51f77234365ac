"""``wildreid discover``: group the photos of new animals into candidate individuals.

The workflow over files: read the metadata and split, take or compute the embeddings, fit the
open-set policy on the gallery side (:func:`wildreid.evaluation.protocol.fit_gallery_policy`),
decide known / new / review for every query, choose the clustering cut on the pseudo-new
identities of the calibration carve (never on the queries), and cluster the queries judged new
(:mod:`wildreid.matching.discovery`). Queries judged known are attached to their top identity.
Writes ``clusters.csv`` (``image_id,cluster``: a known identity, or ``new-0001`` ...) and, where the
queries' identities are known, ``metrics.json`` with ARI, AMI and the predicted vs true number of
individuals, for the new-judged queries and for all queries.

Two graphs (``metrics.json``'s ``graph``):

- ``global`` (the default): the calibrated P(same) of the cosine similarity of every pair.
- ``fused`` (with ``rerank``): the same fused policy ``wildreid evaluate --rerank`` fits
  (:func:`~wildreid.evaluation.openset.fit_local_fusion`: the gallery-side carve matched
  locally, a local calibrator, the recalibrated mean of the two probabilities). The known / new
  decisions come from the fused probability of each query's re-ranked shortlist, as in
  ``evaluate``; the clustering graph among the queries judged new, and the graph among the
  pseudo-new calibration photos the cut is chosen on, are the fused probabilities of *every*
  pair among them (each pair matched locally once,
  :meth:`~wildreid.matching.rerank.Reranker.pairwise`). This costs one local match per pair:
  N judged-new queries take N (N - 1) / 2 matches.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from wildreid.data.splits import read_split
from wildreid.embeddings_file import load_embeddings
from wildreid.errors import ConfigError
from wildreid.evaluation.openset import OpenSetPolicy, carve_calibration, fit_local_fusion
from wildreid.evaluation.protocol import (
    fit_gallery_policy,
    gallery_calibration_data,
    protocol_from_split,
)
from wildreid.files import atomic_path
from wildreid.matching.discovery import choose_cut, cluster_probabilities, clustering_metrics
from wildreid.matching.feature_cache import FeatureCache, extract_features
from wildreid.matching.rerank import RerankConfig, Reranker
from wildreid.models.factory import DEFAULT_MODEL
from wildreid.pipeline import Progress, embed_dataset, load_dataset
from wildreid.ranking import top_k
from wildreid.types import Embeddings, LocalFeatures

__all__ = ["MAX_CUT_PHOTOS", "DiscoveryRun", "discover_dataset"]

logger = logging.getLogger(__name__)

MAX_CUT_PHOTOS: Final = 400
"""At most this many pseudo-new calibration photos (whole identities, a fixed random choice)
choose the cut: with a fused graph every pair among them is matched locally."""


@dataclass(frozen=True)
class DiscoveryRun:
    """What :func:`discover_dataset` wrote and measured."""

    clusters_csv: Path
    metrics_json: Path
    metrics: dict[str, Any]


def _unit(embeddings: Embeddings, ids: Sequence[str]) -> npt.NDArray[np.float64]:
    vectors = embeddings.select(list(ids)).vectors.astype(np.float64)
    unit: npt.NDArray[np.float64] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


def _cut_photos(labels: Sequence[str], candidates: Sequence[int], limit: int) -> list[int]:
    """The pseudo-new photos the cut is chosen on: whole identities (fixed random order) while
    they fit in ``limit``."""
    by_identity: dict[str, list[int]] = {}
    for i in candidates:
        by_identity.setdefault(labels[i], []).append(i)
    names = sorted(by_identity)
    chosen: list[int] = []
    for k in np.random.default_rng(0).permutation(len(names)):
        members = by_identity[names[k]]
        if len(chosen) + len(members) <= limit:
            chosen.extend(members)
    return sorted(chosen)


class _Graph:
    """P(same) of the pairs among a set of images: global, or fused with local matching."""

    def __init__(
        self,
        policy: OpenSetPolicy,
        reranker: Reranker | None = None,
        features: dict[str, LocalFeatures] | None = None,
        stage: Callable[[str], Progress | None] | None = None,
    ) -> None:
        self.policy = policy
        self.reranker = reranker
        self.features = features or {}
        self.stage = stage or (lambda _name: None)
        self.pairs_matched = 0
        self.seconds = 0.0

    def __call__(
        self, ids: Sequence[str], vectors: npt.NDArray[np.float64], name: str
    ) -> npt.NDArray[np.float64]:
        cosine = vectors @ vectors.T
        if self.reranker is None:
            return self.policy.calibration.calibrator.probability(cosine)
        start = time.perf_counter()
        local = self.reranker.pairwise(
            [self.features[i] for i in ids], progress=self.stage(f"matching {name}")
        )
        self.pairs_matched += len(ids) * (len(ids) - 1) // 2
        self.seconds += time.perf_counter() - start
        fused: npt.NDArray[np.float64] = self.policy.fuse(cosine, local)
        return fused


def discover_dataset(
    metadata_path: str | os.PathLike[str],
    *,
    split_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    embeddings_path: str | os.PathLike[str] | None = None,
    model: str = DEFAULT_MODEL,
    group_column: str | None = None,
    root: str | os.PathLike[str] | None = None,
    rerank: RerankConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_queries: int | None = None,
    max_cut_photos: int = MAX_CUT_PHOTOS,
    progress: Progress | None = None,
    stage: Callable[[str], Progress | None] | None = None,
) -> DiscoveryRun:
    """Cluster the queries judged new (see the module docstring).

    Args:
        rerank: re-ranking whose local scores are fused into the decisions and the graph
            (``None``: the global graph); its ``fusion`` setting is not used (always the
            calibrated fusion).
        cache_dir: local features (and embeddings) of unchanged images are reused from here.
        max_queries: a deterministic sample of at most this many queries (seed 0), as
            ``wildreid evaluate --max-queries`` takes.
        max_cut_photos: at most this many pseudo-new calibration photos choose the cut.
        stage: given a stage name, a progress callback for it, or None.

    Raises:
        ConfigError: too few calibration photos of pseudo-new identities, or as the steps.
        DataError: unreadable metadata, split or embeddings; too few calibration pairs.
        ImageReadError: an image's local features cannot be extracted.
    """
    metadata, folder = load_dataset(metadata_path, root=root)
    protocol = protocol_from_split(metadata, read_split(split_path, metadata=metadata))
    if max_queries is not None:
        protocol = protocol.sample_queries(max_queries)
    needed = set(protocol.query_ids) | set(protocol.gallery_ids)
    rows = metadata[metadata["image_id"].astype(str).isin(needed)]
    if embeddings_path is not None:
        embeddings = load_embeddings(embeddings_path)
    else:
        embeddings = embed_dataset(
            rows, root=folder, model=model, cache_dir=cache_dir, progress=progress
        ).embeddings
    policy = fit_gallery_policy(metadata, protocol, embeddings, group_column=group_column)
    scores, labels, groups = gallery_calibration_data(
        metadata, protocol, embeddings, group_column=group_column
    )
    query_ids, gallery_ids = list(protocol.query_ids), list(protocol.gallery_ids)
    q_vectors, g_vectors = _unit(embeddings, query_ids), _unit(embeddings, gallery_ids)
    cosine = q_vectors @ g_vectors.T
    facts: dict[str, Any] = {"graph": "global"}
    if rerank is None:
        graph = _Graph(policy)
        probability = policy.probability(cosine)
    else:
        reranker = Reranker(rerank)
        features = extract_features(
            rows,
            root=folder,
            extractor=reranker.extractor,
            cache=FeatureCache(cache_dir) if cache_dir is not None else None,
            progress=(stage or (lambda _name: None))("local features"),
        ).features
        # The fused policy and the decisions exactly as `wildreid evaluate --rerank` makes them.
        policy, _, matched = fit_local_fusion(
            policy, scores, labels, groups, reranker, [features.get(i) for i in gallery_ids],
            gallery_ids,
        )  # fmt: skip
        start = time.perf_counter()
        reranked = reranker.rerank(
            cosine,
            [features[i] for i in query_ids],
            [features[i] for i in gallery_ids],
            progress=(stage or (lambda _name: None))("re-ranking"),
        )
        probability = policy.fuse_shortlist(cosine, reranked.shortlist, reranked.local)
        graph = _Graph(policy, reranker, features, stage)
        extra = policy.calibration.extra
        facts = {
            "graph": "fused",
            "fusion": extra["fusion"],
            "rerank": asdict(rerank),
            **matched,
            "rerank_seconds": time.perf_counter() - start,
            "global_threshold": extra["global_threshold"],
            "fused_mean_calibration_ECE": extra["fused_mean_calibration_ECE"],
            "fused_calibration_ECE": extra["fused_calibration_ECE"],
        }
    # The cut: cluster the pseudo-new calibration identities' photos (gallery side only).
    carve = policy.calibration.extra.get("carve", {})
    cal_query, cal_gallery = carve_calibration(labels, groups, **carve)
    present = {labels[i] for i in np.flatnonzero(cal_gallery)}
    pseudo_new = [int(i) for i in np.flatnonzero(cal_query) if labels[i] not in present]
    pseudo_new = _cut_photos(labels, pseudo_new, max_cut_photos)
    if len(pseudo_new) < 2:
        raise ConfigError(
            f"only {len(pseudo_new)} calibration photo(s) of held-out identities; the gallery "
            "needs more identities to choose a discovery cut"
        )
    cal_ids = [gallery_ids[i] for i in pseudo_new]
    cut, cal_facts = choose_cut(
        graph(cal_ids, _unit(embeddings, cal_ids), "calibration photos"),
        [labels[i] for i in pseudo_new],
    )
    # Decide every query against the gallery on its top candidate.
    top = top_k(probability, 1)[:, 0]
    decisions = policy.decisions(probability[np.arange(len(query_ids)), top])
    identity = dict(
        zip(metadata["image_id"].astype(str), metadata["identity"].astype(str), strict=True)
    )
    new_index = np.flatnonzero(decisions != "known")
    clusters = np.array([identity[gallery_ids[t]] for t in top], dtype=object)
    if new_index.size:
        new_ids = [query_ids[i] for i in new_index]
        found = cluster_probabilities(
            graph(new_ids, q_vectors[new_index], "queries judged new"), cut=cut
        )
        clusters[new_index] = [f"new-{c + 1:04d}" for c in found]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clusters_csv = out / "clusters.csv"
    with atomic_path(clusters_csv) as tmp:
        pd.DataFrame({"image_id": query_ids, "cluster": clusters}).to_csv(tmp, index=False)
    truth = [identity[i] for i in query_ids]
    gallery_identities = {identity[i] for i in gallery_ids}
    if graph.reranker is not None:
        facts["graph_pairs_matched"] = graph.pairs_matched
        facts["graph_seconds"] = graph.seconds
    metrics: dict[str, Any] = {
        **facts,
        "cut": cut,
        "threshold": policy.threshold,
        "n_queries": len(query_ids),
        "n_judged_new": int(new_index.size),
        "n_review": int(np.count_nonzero(decisions == "review")),
        "n_truly_new": sum(t not in gallery_identities or t == "unknown" for t in truth),
        "n_calibration_photos": len(pseudo_new),
        "calibration": cal_facts,
        "all_queries": clustering_metrics(clusters, truth),
    }
    if new_index.size:
        metrics["judged_new"] = clustering_metrics(
            clusters[new_index], [truth[i] for i in new_index]
        )
    metrics_json = out / "metrics.json"
    with atomic_path(metrics_json) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "discovery (%s graph): %d queries judged new, cut %.3f",
        metrics["graph"],
        new_index.size,
        cut,
    )
    return DiscoveryRun(clusters_csv, metrics_json, metrics)
