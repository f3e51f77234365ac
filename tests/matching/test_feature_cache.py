"""Local features over a dataset: cache reuse and invalidation, unreadable images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.matching.local_images import photo, unrelated
from wildreid.errors import ImageReadError
from wildreid.matching.extractors import build_extractor
from wildreid.matching.feature_cache import FeatureCache, extract_features


def dataset(root: Path) -> pd.DataFrame:
    rows = []
    for i, image in enumerate([photo(96), unrelated(96), photo(80)]):
        path = f"images/{i}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        image.save(root / path)
        rows.append({"image_id": f"im{i}", "path": path, "bbox": "[0, 0, 60, 50]" if i else ""})
    return pd.DataFrame(rows)


def test_features_are_cached_and_recomputed_only_when_something_changed(tmp_path: Path) -> None:
    metadata = dataset(tmp_path)
    extractor = build_extractor(name="sift", max_keypoints=64)
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(metadata, root=tmp_path, extractor=extractor, cache=cache)
    assert first.extracted == 3 and list(first.features) == ["im0", "im1", "im2"]
    assert first.features["im1"].image_size == (60, 50)  # the bbox crop
    again = extract_features(metadata, root=tmp_path, extractor=extractor, cache=cache)
    assert again.extracted == 0
    for image_id, features in first.features.items():
        np.testing.assert_array_equal(features.descriptors, again.features[image_id].descriptors)
        assert features.image_size == again.features[image_id].image_size
    metadata.loc[1, "bbox"] = "[0, 0, 70, 50]"
    assert (
        extract_features(metadata, root=tmp_path, extractor=extractor, cache=cache).extracted == 1
    )
    other = build_extractor(name="sift", max_keypoints=32)
    assert extract_features(metadata, root=tmp_path, extractor=other, cache=cache).extracted == 3


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    metadata = dataset(tmp_path)
    extractor = build_extractor(name="sift", max_keypoints=64)
    cache = FeatureCache(tmp_path / "cache")
    extract_features(metadata, root=tmp_path, extractor=extractor, cache=cache)
    cache.path_for_key(extractor.key).write_bytes(b"not a database at all" * 100)
    result = extract_features(metadata, root=tmp_path, extractor=extractor, cache=cache)
    assert result.extracted == 3
    assert (
        extract_features(metadata, root=tmp_path, extractor=extractor, cache=cache).extracted == 0
    )


def test_unreadable_image_names_the_row_or_is_skipped(tmp_path: Path) -> None:
    metadata = dataset(tmp_path)
    (tmp_path / "images" / "1.png").write_bytes(b"\x89PNG broken")
    extractor = build_extractor(name="sift")
    with pytest.raises(ImageReadError, match=r"row 2 \(line 3\), image_id 'im1'"):
        extract_features(metadata, root=tmp_path, extractor=extractor)
    result = extract_features(metadata, root=tmp_path, extractor=extractor, skip_bad_images=True)
    assert list(result.features) == ["im0", "im2"] and result.skipped[0][0] == "im1"
