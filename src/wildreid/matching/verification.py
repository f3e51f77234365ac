"""Geometric verification: which matches agree with one camera geometry.

OpenCV's USAC with MAGSAC++ scoring fits either a homography (a plane seen from two viewpoints:
flanks, fins, faces photographed roughly square-on) or a fundamental matrix (any rigid scene, a
weaker constraint) to the matched keypoints; the matches within ``threshold_px`` of the model are
its inliers. Fewer matches than the model needs (4 for a homography, 8 for a fundamental matrix)
verify nothing: such a pair has no inlier.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import cv2
import numpy as np

from wildreid.errors import ConfigError
from wildreid.types import LocalFeatures, Matches

__all__ = ["GEOMETRIES", "Geometry", "verify"]

Geometry = Literal["homography", "fundamental"]
GEOMETRIES: tuple[Geometry, ...] = ("homography", "fundamental")
_MIN_MATCHES = {"homography": 4, "fundamental": 8}


def verify(
    matches: Matches,
    features0: LocalFeatures,
    features1: LocalFeatures,
    *,
    geometry: Geometry = "homography",
    threshold_px: float = 4.0,
    confidence: float = 0.999,
    max_iterations: int = 2000,
) -> Matches:
    """``matches`` with ``inliers`` set by a USAC-MAGSAC fit of ``geometry``.

    Args:
        threshold_px: largest reprojection (homography) or epipolar (fundamental) error of an
            inlier, in pixels of the working images.

    Raises:
        ConfigError: unknown geometry or a non-positive threshold.
    """
    if geometry not in GEOMETRIES:
        raise ConfigError(f"geometry {geometry!r} not in {GEOMETRIES}")
    if threshold_px <= 0:
        raise ConfigError(f"threshold_px must be > 0, got {threshold_px}")
    n = len(matches)
    if n < _MIN_MATCHES[geometry]:
        return replace(matches, inliers=np.zeros(n, dtype=np.bool_))
    points0 = features0.keypoints[matches.pairs[:, 0]].astype(np.float64)
    points1 = features1.keypoints[matches.pairs[:, 1]].astype(np.float64)
    try:
        if geometry == "homography":
            model, mask = cv2.findHomography(
                points0, points1, cv2.USAC_MAGSAC, threshold_px, None, max_iterations, confidence
            )
        else:
            model, mask = cv2.findFundamentalMat(
                points0, points1, cv2.USAC_MAGSAC, threshold_px, confidence, max_iterations
            )
    except cv2.error:  # degenerate configurations (all points on a line, duplicates)
        model, mask = None, None
    if model is None or mask is None:
        return replace(matches, inliers=np.zeros(n, dtype=np.bool_))
    return replace(matches, inliers=mask.reshape(-1).astype(np.bool_))
