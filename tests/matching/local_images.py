"""Photos for the local-feature tests: a textured photo, a warped copy and an unrelated photo."""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
from PIL import Image
from skimage import data

HOMOGRAPHY = np.array([[0.9, 0.1, 10.0], [-0.1, 0.95, 5.0], [2e-4, 1e-4, 1.0]])


@cache
def photo(size: int = 256) -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.BILINEAR)


@cache
def warped(size: int = 256) -> Image.Image:
    """``photo`` seen through :data:`HOMOGRAPHY`."""
    array = np.asarray(photo(size))
    return Image.fromarray(cv2.warpPerspective(array, HOMOGRAPHY, (size, size)))


@cache
def unrelated(size: int = 256) -> Image.Image:
    return Image.fromarray(data.chelsea()).resize((size, size * 3 // 4))


def blank(size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), (128, 128, 128))
