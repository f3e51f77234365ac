"""Summary statistics of a metadata table (what ``wildreid data stats`` prints)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from wildreid.data.schema import UNKNOWN_IDENTITY

__all__ = ["DatasetStats", "dataset_stats"]


@dataclass(frozen=True)
class DatasetStats:
    """Counts describing a dataset.

    Attributes:
        images_per_identity: for each known identity, its number of images (sorted by identity).
        species, viewpoints: image counts per value (empty cells counted as ``""``); empty when
            the column is absent.
        splits: image counts per split value, when a split was given.
    """

    n_images: int
    n_identities: int
    n_unknown_images: int
    images_per_identity: dict[str, int]
    species: dict[str, int] = field(default_factory=dict)
    viewpoints: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    n_with_bbox: int = 0
    n_with_landmarks: int = 0

    @property
    def identity_size_summary(self) -> dict[str, float]:
        """Min, median, mean and max images per known identity (zeros when there is none)."""
        sizes = np.fromiter(self.images_per_identity.values(), dtype=np.int64)
        if sizes.size == 0:
            return {"min": 0, "median": 0, "mean": 0, "max": 0}
        return {
            "min": int(sizes.min()),
            "median": float(np.median(sizes)),
            "mean": float(sizes.mean()),
            "max": int(sizes.max()),
        }

    @property
    def identity_size_histogram(self) -> dict[int, int]:
        """Number of identities having each count of images, by ascending count."""
        return dict(sorted(Counter(self.images_per_identity.values()).items()))


def _value_counts(frame: pd.DataFrame, column: str) -> dict[str, int]:
    if column not in frame.columns:
        return {}
    return {str(k): int(v) for k, v in frame[column].value_counts(sort=True).items()}


def _non_empty(frame: pd.DataFrame, column: str) -> int:
    if column not in frame.columns:
        return 0
    return int((frame[column].str.strip() != "").sum())


def dataset_stats(metadata: pd.DataFrame, *, split: pd.DataFrame | None = None) -> DatasetStats:
    """Compute :class:`DatasetStats` of a metadata table (string cells, as read from CSV).

    Args:
        split: optional ``image_id,split`` table; its values are counted over the metadata rows.
    """
    known = metadata[metadata["identity"] != UNKNOWN_IDENTITY]
    per_identity = known.groupby("identity", sort=True).size()
    splits: dict[str, int] = {}
    if split is not None:
        joined = metadata[["image_id"]].merge(split, on="image_id", how="inner")
        splits = _value_counts(joined, "split")
    return DatasetStats(
        n_images=len(metadata),
        n_identities=len(per_identity),
        n_unknown_images=len(metadata) - len(known),
        images_per_identity={str(k): int(v) for k, v in per_identity.items()},
        species=_value_counts(metadata, "species"),
        viewpoints=_value_counts(metadata, "viewpoint"),
        splits=splits,
        n_with_bbox=_non_empty(metadata, "bbox"),
        n_with_landmarks=_non_empty(metadata, "landmarks"),
    )
