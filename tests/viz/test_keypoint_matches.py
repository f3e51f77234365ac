"""Keypoint-match drawings: layout, colours of inliers and outliers."""

from __future__ import annotations

import numpy as np
from PIL import Image

from wildreid.types import LocalFeatures, Matches
from wildreid.viz.keypoint_matches import render_keypoint_matches
from wildreid.viz.match_grid import CORRECT_RGB, WRONG_RGB


def test_pair_side_by_side_with_inlier_and_outlier_lines() -> None:
    left = Image.new("RGB", (100, 50), (0, 0, 0))
    right = Image.new("RGB", (60, 60), (0, 0, 0))
    # Keypoints in working images half the size of the pictures.
    f0 = LocalFeatures(np.array([[10, 5], [40, 20]]), np.zeros((2, 4)), np.ones(2), (50, 25))
    f1 = LocalFeatures(np.array([[10, 10], [20, 25]]), np.zeros((2, 4)), np.ones(2), (30, 30))
    matches = Matches(np.array([[0, 0], [1, 1]]), np.array([0.9, 0.5]), np.array([True, False]))
    picture = render_keypoint_matches(left, right, f0, f1, matches, height_px=100)
    assert picture.size == (200 + 12 + 100, 100 + 18)
    pixels = np.asarray(picture)
    colours = {tuple(int(c) for c in p) for p in pixels[:100].reshape(-1, 3)}
    assert CORRECT_RGB in colours and WRONG_RGB in colours
    # The inlier line starts at keypoint 0 of the left image: (10, 5) * 4 = (40, 20).
    window = pixels[18:23, 40:46].reshape(-1, 3)
    assert any(tuple(int(c) for c in p) == CORRECT_RGB for p in window)
