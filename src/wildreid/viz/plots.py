"""Static plots written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
import pandas as pd

from wildreid.data.stats import DatasetStats
from wildreid.files import atomic_path

__all__ = ["plot_cmc", "plot_identity_sizes", "plot_reliability", "plot_training_size"]


def plot_identity_sizes(stats: DatasetStats, path: str | os.PathLike[str], *, title: str) -> None:
    """Write a bar chart: how many identities have 1, 2, 3, ... images."""
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    histogram = stats.identity_size_histogram
    figure = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.bar(list(histogram), list(histogram.values()), width=0.8, color="#2a7f62")
    axes.set_xlabel("images per identity")
    axes.set_ylabel("identities")
    summary = stats.identity_size_summary
    axes.set_title(
        f"{title}: {stats.n_identities} identities, {stats.n_images} images "
        f"(median {summary['median']:g} per identity)",
        fontsize=10,
    )
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def plot_cmc(cmc: npt.ArrayLike, path: str | os.PathLike[str], *, title: str) -> None:
    """Write the CMC curve: rank (from 1) on x, accuracy (0 to 1) on y, marked at 1, 5 and 10.

    Shapes:
        cmc: (R,) accuracy at ranks 1..R.

    Raises:
        ValueError: ``cmc`` is not a non-empty 1-D curve of values in [0, 1].
    """
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    curve = np.asarray(cmc, dtype=np.float64)
    if curve.ndim != 1 or curve.size == 0 or not np.all((curve >= 0) & (curve <= 1)):
        raise ValueError(f"cmc must be a non-empty 1-D curve of values in [0, 1], got {curve!r}")
    ranks = np.arange(1, curve.size + 1)
    marked = [rank for rank in (1, 5, 10) if rank <= curve.size]
    figure = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.plot(ranks, curve, color="#2a7f62", linewidth=2)
    axes.plot(marked, curve[[r - 1 for r in marked]], "o", color="#2a7f62")
    for rank in marked:
        axes.annotate(
            f"{100 * curve[rank - 1]:.1f}%",
            (rank, curve[rank - 1]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
        )
    axes.set_xlim(0.5, curve.size + 0.5)
    axes.set_ylim(0, 1.02)
    axes.set_xticks(sorted({1, *marked, *range(5, curve.size + 1, 5)}))
    axes.set_xlabel("rank")
    axes.set_ylabel("accuracy (correct individual within rank)")
    axes.grid(True, alpha=0.3)
    axes.set_title(title, fontsize=10)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


_STUDY_STYLES = {
    "zero-shot": ("#9a9a9a", "--", "zero-shot global"),
    "fine-tuned": ("#2a7f62", "-", "fine-tuned global"),
    "local": ("#c4622d", ":", "local matching (no training)"),
    "fusion": ("#3b5ba5", "-", "fine-tuned + local (fusion)"),
}

_METRIC_LABELS = {"top1": "top-1", "top5": "top-5"}


def plot_training_size(
    results: pd.DataFrame, path: str | os.PathLike[str], *, title: str, metric: str = "top1"
) -> None:
    """Write ``metric`` (a fraction) against training images per identity, one line per method.

    Args:
        results: rows with ``images_per_identity``, ``method`` and ``metric`` columns (the
            training-size study's ``results.csv``).

    Raises:
        ValueError: ``results`` lacks a needed column or has no rows.
    """
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    missing = {"images_per_identity", "method", metric} - set(results.columns)
    if missing or results.empty:
        raise ValueError(f"results need rows and the columns {sorted(missing) or metric}")
    figure = Figure(figsize=(6.5, 4.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for method in [*_STUDY_STYLES, *sorted(set(results["method"]) - set(_STUDY_STYLES))]:
        rows = results[results["method"] == method].sort_values("images_per_identity")
        if rows.empty:
            continue
        color, style, label = _STUDY_STYLES.get(method, ("#555555", "-", method))
        x = rows["images_per_identity"].to_numpy(dtype=np.float64)
        y = 100 * rows[metric].to_numpy(dtype=np.float64)
        axes.plot(x, y, style, color=color, marker="o", linewidth=2, label=label)
    axes.set_xlabel("training images per identity (mean)")
    axes.set_ylabel(f"{_METRIC_LABELS.get(metric, metric)} (%)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(title, fontsize=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: str | os.PathLike[str],
    *,
    title: str,
) -> None:
    """Write a reliability diagram: per bin, mean predicted probability vs observed frequency.

    Args:
        curves: name -> (mean probability, observed frequency, count) per bin, as
            :func:`wildreid.matching.calibration.reliability_curve` returns.
    """
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    figure = Figure(figsize=(5, 5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle="--", label="perfect")
    for name, (mean_p, frequency, counts) in curves.items():
        filled = counts > 0
        axes.plot(mean_p[filled], frequency[filled], "o-", label=name)
    axes.set_xlabel("predicted P(same individual)")
    axes.set_ylabel("observed fraction of same-individual pairs")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left")
    axes.set_title(title, fontsize=10)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
