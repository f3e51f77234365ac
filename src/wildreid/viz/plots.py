"""Static plots written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os

from wildreid.data.stats import DatasetStats
from wildreid.files import atomic_path

__all__ = ["plot_identity_sizes"]


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
