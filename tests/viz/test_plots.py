"""Tests for wildreid.viz.plots.plot_cmc."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wildreid.viz.plots import plot_cmc


def test_plot_cmc_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "out" / "cmc.png"
    plot_cmc(np.linspace(0.5, 1.0, 20), path, title="test")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (600, 400)
        # Something is drawn in the curve's colour (#2a7f62).
        pixels = np.asarray(image.convert("RGB")).astype(int)
        near = np.abs(pixels - [0x2A, 0x7F, 0x62]).sum(axis=2) < 30
        assert np.count_nonzero(near) > 100
    assert [p.name for p in path.parent.iterdir()] == ["cmc.png"]  # no temporary file left


def test_plot_cmc_accepts_short_curves(tmp_path: Path) -> None:
    plot_cmc(np.array([0.25, 1.0]), tmp_path / "cmc.png", title="two ranks")
    assert (tmp_path / "cmc.png").stat().st_size > 0


@pytest.mark.parametrize("curve", [np.array([]), np.array([0.5, 1.5]), np.ones((2, 2))])
def test_plot_cmc_rejects_invalid_curves(tmp_path: Path, curve: np.ndarray) -> None:
    with pytest.raises(ValueError, match="cmc must be a non-empty 1-D curve"):
        plot_cmc(curve, tmp_path / "cmc.png", title="bad")
    assert not (tmp_path / "cmc.png").exists()
