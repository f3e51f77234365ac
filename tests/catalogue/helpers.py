"""A tiny random-weights model saved as a checkpoint, and tiny galleries, for catalogue tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

TINY_BASE = "timm/test_efficientnet"


def save_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """A random-weights test EfficientNet with a 32 x 32 input, saved as a wildreid checkpoint.

    A checkpoint file (not ``weights="random"``) so that every load gives the same weights and
    the catalogue's embedding space stays the same across opens.
    """
    import torch

    from wildreid.models.factory import load_model, save_checkpoint

    torch.manual_seed(seed)
    model = load_model(TINY_BASE, weights="random")
    card = dataclasses.replace(model.card, input_size=(32, 32), crop_mode="stretch")
    return save_checkpoint(path, net=model.module, card=card)


def write_photo(path: Path, *, seed: int, size: tuple[int, int] = (40, 32)) -> Path:
    """A small random JPEG-free PNG photo; the same seed gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def write_gallery(folder: Path, *, individuals: int = 3, per_individual: int = 2) -> Path:
    """Photos of ``individuals`` animals with date, location and species; returns the CSV."""
    rows = []
    for i in range(individuals):
        for j in range(per_individual):
            seed = 100 * i + j
            path = f"photos/ind{i}/{j}.png"
            write_photo(folder / path, seed=seed)
            rows.append(
                {
                    "image_id": f"g{i}-{j}",
                    "identity": f"ind{i}",
                    "path": path,
                    "species": "lion",
                    "date": f"2024-0{j + 1}-1{i}",
                    "location": "north" if i % 2 == 0 else "south",
                    "encounter": f"e{i}-{j}",
                    "viewpoint": "left",
                }
            )
    metadata = folder / "metadata.csv"
    pd.DataFrame(rows).to_csv(metadata, index=False)
    return metadata
