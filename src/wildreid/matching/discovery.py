"""Discovery: cluster photos of animals judged new into candidate individuals.

The graph is the calibrated probability that two photos show the same animal
(:mod:`wildreid.matching.calibration`, or a fusion of several scores); scikit-learn's
average-linkage agglomerative clustering joins photos while the mean ``1 - P(same)`` between
two clusters stays below the cut. :func:`choose_cut` picks the cut on calibration data (photos
of identities the calibration gallery lacks) by adjusted mutual information: AnimalCLEF 2026
participants found that tuning for AMI rather than ARI avoids over-merging.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from wildreid.errors import ConfigError

__all__ = ["choose_cut", "cluster_probabilities", "clustering_metrics"]


def _distances(probability: npt.ArrayLike) -> npt.NDArray[np.float64]:
    p = np.asarray(probability, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ConfigError(f"discovery needs a square probability matrix, got shape {p.shape}")
    if not np.isfinite(p).all():
        row, column = np.argwhere(~np.isfinite(p))[0]
        raise ConfigError(f"the probability of pair ({row}, {column}) is {p[row, column]}")
    d = 1.0 - np.clip((p + p.T) / 2, 0.0, 1.0)
    np.fill_diagonal(d, 0.0)
    return d


def cluster_probabilities(probability: npt.ArrayLike, *, cut: float) -> npt.NDArray[np.intp]:
    """Cluster labels (0..C-1) from pairwise P(same individual), average linkage at ``cut``.

    Shapes:
        probability: (N, N), symmetrised. return: (N,).

    Raises:
        ConfigError: a non-square or non-finite matrix, or ``cut`` outside [0, 1].
    """
    from sklearn.cluster import AgglomerativeClustering

    if not 0 <= cut <= 1:
        raise ConfigError(f"the cut is a distance 1 - P(same) in [0, 1], got {cut}")
    d = _distances(probability)
    if d.shape[0] < 2:
        return np.zeros(d.shape[0], dtype=np.intp)
    model = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=cut
    )
    labels: npt.NDArray[np.intp] = model.fit_predict(d).astype(np.intp)
    return labels


def clustering_metrics(predicted: npt.ArrayLike, truth: Sequence[str]) -> dict[str, float]:
    """ARI, AMI and predicted vs true number of individuals (each ``"unknown"`` its own)."""
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    true = [t if t != "unknown" else f"\x00unknown{i}" for i, t in enumerate(truth)]
    pred = np.asarray(predicted)
    return {
        "ARI": float(adjusted_rand_score(true, pred)),
        "AMI": float(adjusted_mutual_info_score(true, pred)),
        "n_predicted_individuals": float(len(np.unique(pred))),
        "n_true_individuals": float(len(set(true))),
        "n_images": float(len(true)),
    }


def choose_cut(
    probability: npt.ArrayLike,
    truth: Sequence[str],
    *,
    cuts: npt.ArrayLike | None = None,
) -> tuple[float, dict[str, float]]:
    """The cut maximising AMI on labelled calibration photos, and the metrics there.

    Args:
        cuts: candidate cuts; by default 0.02 .. 0.98 and quantiles of the pair distances.

    Raises:
        ConfigError: fewer than two photos.
    """
    d = _distances(probability)
    if d.shape[0] < 2:
        raise ConfigError("choosing a discovery cut needs at least two calibration photos")
    if cuts is None:
        upper = d[np.triu_indices(d.shape[0], 1)]
        grid = np.linspace(0.02, 0.98, 49)
        cuts = np.unique(np.concatenate([grid, np.quantile(upper, np.linspace(0, 0.5, 26))]))
    best: tuple[float, float, dict[str, float]] | None = None
    for cut in np.asarray(cuts, dtype=np.float64):
        if not 0 <= cut <= 1:
            continue
        facts = clustering_metrics(cluster_probabilities(probability, cut=float(cut)), truth)
        if best is None or facts["AMI"] > best[0]:
            best = (facts["AMI"], float(cut), facts)
    assert best is not None
    return best[1], best[2]
