"""``wildreid discover``: group the photos of new animals into candidate individuals.

The workflow over files: read the metadata and split, take or compute the embeddings, fit the
open-set policy on the gallery side (:func:`wildreid.evaluation.protocol.fit_gallery_policy`),
decide known / new / review for every query, choose the clustering cut on the pseudo-new
identities of the calibration carve (never on the queries), and cluster the queries judged new
(:mod:`wildreid.matching.discovery`). Queries judged known are attached to their top identity.
Writes ``clusters.csv`` (``image_id,cluster``: a known identity, or ``new-0001`` ...) and, where the
queries' identities are known, ``metrics.json`` with ARI, AMI and the predicted vs true number of
individuals, for the new-judged queries and for all queries.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wildreid.data.splits import read_split
from wildreid.embeddings_file import load_embeddings
from wildreid.errors import ConfigError
from wildreid.evaluation.openset import carve_calibration
from wildreid.evaluation.protocol import (
    fit_gallery_policy,
    gallery_calibration_data,
    protocol_from_split,
)
from wildreid.files import atomic_path
from wildreid.matching.discovery import choose_cut, cluster_probabilities, clustering_metrics
from wildreid.models.factory import DEFAULT_MODEL
from wildreid.pipeline import Progress, embed_dataset, load_dataset
from wildreid.types import Embeddings

__all__ = ["DiscoveryRun", "discover_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoveryRun:
    """What :func:`discover_dataset` wrote and measured."""

    clusters_csv: Path
    metrics_json: Path
    metrics: dict[str, Any]


def _unit(embeddings: Embeddings, ids: list[str]) -> np.ndarray:
    vectors = embeddings.select(ids).vectors.astype(np.float64)
    unit: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


def discover_dataset(
    metadata_path: str | os.PathLike[str],
    *,
    split_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    embeddings_path: str | os.PathLike[str] | None = None,
    model: str = DEFAULT_MODEL,
    group_column: str | None = None,
    root: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> DiscoveryRun:
    """Cluster the queries judged new (see the module docstring).

    Raises:
        ConfigError: too few calibration photos of pseudo-new identities, or as the steps.
        DataError: unreadable metadata, split or embeddings; too few calibration pairs.
    """
    metadata, folder = load_dataset(metadata_path, root=root)
    protocol = protocol_from_split(metadata, read_split(split_path, metadata=metadata))
    if embeddings_path is not None:
        embeddings = load_embeddings(embeddings_path)
    else:
        needed = set(protocol.query_ids) | set(protocol.gallery_ids)
        rows = metadata[metadata["image_id"].astype(str).isin(needed)]
        embeddings = embed_dataset(rows, root=folder, model=model, progress=progress).embeddings
    policy = fit_gallery_policy(metadata, protocol, embeddings, group_column=group_column)
    calibrator = policy.calibration.calibrator
    # The cut: cluster the pseudo-new calibration identities' photos (gallery side only).
    _, labels, groups = gallery_calibration_data(
        metadata, protocol, embeddings, group_column=group_column
    )
    carve = policy.calibration.extra.get("carve", {})
    cal_query, cal_gallery = carve_calibration(labels, groups, **carve)
    present = {labels[i] for i in np.flatnonzero(cal_gallery)}
    pseudo_new = [i for i in np.flatnonzero(cal_query) if labels[i] not in present]
    if len(pseudo_new) < 2:
        raise ConfigError(
            f"only {len(pseudo_new)} calibration photo(s) of held-out identities; the gallery "
            "needs more identities to choose a discovery cut"
        )
    cal_ids = [protocol.gallery_ids[i] for i in pseudo_new]
    cal_vectors = _unit(embeddings, cal_ids)
    cut, cal_facts = choose_cut(
        calibrator.probability(cal_vectors @ cal_vectors.T), [labels[i] for i in pseudo_new]
    )
    # Decide every query against the gallery.
    query_ids, gallery_ids = list(protocol.query_ids), list(protocol.gallery_ids)
    q_vectors, g_vectors = _unit(embeddings, query_ids), _unit(embeddings, gallery_ids)
    cosine = q_vectors @ g_vectors.T
    top = cosine.argmax(axis=1)
    top_p = calibrator.probability(cosine[np.arange(len(query_ids)), top])
    decisions = policy.decisions(top_p)
    identity = dict(
        zip(metadata["image_id"].astype(str), metadata["identity"].astype(str), strict=True)
    )
    new_index = np.flatnonzero(decisions != "known")
    clusters = np.array([identity[gallery_ids[t]] for t in top], dtype=object)
    if new_index.size:
        new_vectors = q_vectors[new_index]
        found = cluster_probabilities(calibrator.probability(new_vectors @ new_vectors.T), cut=cut)
        clusters[new_index] = [f"new-{c + 1:04d}" for c in found]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clusters_csv = out / "clusters.csv"
    with atomic_path(clusters_csv) as tmp:
        pd.DataFrame({"image_id": query_ids, "cluster": clusters}).to_csv(tmp, index=False)
    truth = [identity[i] for i in query_ids]
    gallery_identities = {identity[i] for i in gallery_ids}
    metrics: dict[str, Any] = {
        "cut": cut,
        "threshold": policy.threshold,
        "n_queries": len(query_ids),
        "n_judged_new": int(new_index.size),
        "n_truly_new": sum(t not in gallery_identities or t == "unknown" for t in truth),
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
    logger.info("discovery: %d queries judged new, cut %.3f", new_index.size, cut)
    return DiscoveryRun(clusters_csv, metrics_json, metrics)
