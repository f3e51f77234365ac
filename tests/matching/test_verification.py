"""Geometric verification with USAC-MAGSAC on hand-made correspondences."""

from __future__ import annotations

import numpy as np
import pytest

from wildreid.errors import ConfigError
from wildreid.matching.verification import verify
from wildreid.types import LocalFeatures, Matches


def correspondences(n_true: int, n_false: int) -> tuple[LocalFeatures, LocalFeatures, Matches]:
    rng = np.random.default_rng(1)
    h = np.array([[1.1, 0.05, 3.0], [-0.02, 0.9, 7.0], [1e-4, 0.0, 1.0]])
    points0 = rng.uniform(0, 200, size=(n_true + n_false, 2))
    homogeneous = np.c_[points0, np.ones(len(points0))] @ h.T
    points1 = homogeneous[:, :2] / homogeneous[:, 2:]
    points1[n_true:] = rng.uniform(0, 200, size=(n_false, 2))  # wrong matches
    desc = np.zeros((len(points0), 4), np.float32)
    f0 = LocalFeatures(points0, desc, np.ones(len(points0)), (200, 200))
    f1 = LocalFeatures(points1, desc, np.ones(len(points0)), (240, 200))
    index = np.arange(len(points0))
    return f0, f1, Matches(np.c_[index, index], np.ones(len(index)))


@pytest.mark.parametrize("geometry", ["homography", "fundamental"])
def test_true_matches_are_inliers_wrong_ones_mostly_not(geometry: str) -> None:
    f0, f1, matches = correspondences(40, 20)
    verified = verify(matches, f0, f1, geometry=geometry)  # type: ignore[arg-type]
    assert verified.inliers is not None
    assert verified.inliers[:40].mean() >= 0.95
    limit = 0.1 if geometry == "homography" else 0.5  # a fundamental matrix is looser
    assert verified.inliers[40:].mean() <= limit


def test_too_few_matches_have_no_inlier() -> None:
    f0, f1, matches = correspondences(5, 0)
    assert verify(matches, f0, f1, geometry="fundamental").n_inliers == 0
    assert verify(matches, f0, f1, geometry="homography").n_inliers == 5
    empty = Matches.empty()
    assert verify(empty, f0, f1).n_inliers == 0


def test_bad_settings() -> None:
    f0, f1, matches = correspondences(10, 0)
    with pytest.raises(ConfigError, match="geometry"):
        verify(matches, f0, f1, geometry="affine")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="threshold_px"):
        verify(matches, f0, f1, threshold_px=0)
