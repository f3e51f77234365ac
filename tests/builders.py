"""Builders of tiny test data (images written on the fly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, *, size: tuple[int, int] = (16, 12), value: int = 0) -> Path:
    """Write a small RGB PNG whose pixels depend on ``value`` (so images differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path
