"""Training augmentation: config validation, agreement with inference, flips, picklability."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from wildreid.data.transforms import decode_size, preprocess
from wildreid.errors import ConfigError
from wildreid.training.augment import AugmentConfig, build_train_transform

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
OFF = AugmentConfig(resized_crop_scale=(1.0, 1.0), rotation_deg=0, color_jitter=0, blur_prob=0)


def _random_image(width: int = 37, height: int = 29, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resized_crop_scale", (0.0, 1.0)),
        ("resized_crop_scale", (0.9, 0.8)),
        ("resized_crop_scale", (0.5, 1.2)),
        ("resized_crop_scale", (0.5,)),
        ("resized_crop_ratio", (0.0, 1.0)),
        ("resized_crop_ratio", (2.0, 1.0)),
        ("rotation_deg", -1.0),
        ("rotation_deg", 181.0),
        ("rotation_deg", True),
        ("color_jitter", -0.1),
        ("color_jitter", float("nan")),
        ("hue", 0.6),
        ("blur_prob", 1.5),
        ("blur_sigma", (0.0, 1.0)),
        ("blur_sigma", (2.0, 1.0)),
        ("hflip", "yes"),
        ("random_erasing", -0.1),
        ("random_erasing", "0.5"),
    ],
)
def test_invalid_fields_are_config_errors_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        AugmentConfig(**{field: value})


def test_defaults_are_valid_and_do_not_flip() -> None:
    config = AugmentConfig()
    assert config.hflip is False
    assert config.crops
    assert not OFF.crops


@pytest.mark.parametrize(
    ("input_size", "mean", "std"),
    [((0, 8), MEAN, STD), ((8,), MEAN, STD), ((8, 8), (0.5, 0.5), STD), ((8, 8), MEAN, (1, 0, 1))],
)
def test_invalid_preprocessing_is_a_config_error(input_size: Any, mean: Any, std: Any) -> None:
    with pytest.raises(ConfigError):
        build_train_transform(OFF, input_size=input_size, mean=mean, std=std)


def test_constant_image_with_augmentation_off_equals_inference() -> None:
    transform = build_train_transform(OFF, input_size=(12, 20), mean=MEAN, std=STD)
    image = Image.new("RGB", (31, 17), (200, 100, 50))
    out = transform(image)
    assert out.shape == (3, 12, 20) and out.dtype == torch.float32
    expected = (torch.tensor([200, 100, 50]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out, expected.view(3, 1, 1).expand(3, 12, 20))
    reference = preprocess(image, input_size=(12, 20), mean=MEAN, std=STD)
    torch.testing.assert_close(out, reference, atol=0, rtol=0)


@pytest.mark.parametrize("crop_mode", ["stretch", "center"])
def test_textured_image_with_augmentation_off_equals_inference_geometry(crop_mode: str) -> None:
    transform = build_train_transform(
        OFF, input_size=(10, 16), mean=MEAN, std=STD, crop_mode=crop_mode
    )
    image = _random_image()
    reference = preprocess(image, input_size=(10, 16), mean=MEAN, std=STD, crop_mode=crop_mode)
    torch.testing.assert_close(transform(image), reference, atol=0, rtol=0)


def _asymmetric() -> Image.Image:
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[:, 8:] = 255  # dark left half, bright right half
    return Image.fromarray(pixels)


def _count_flips(config: AugmentConfig, draws: int = 50) -> tuple[int, int]:
    transform = build_train_transform(config, input_size=(16, 16), mean=MEAN, std=STD)
    image = _asymmetric()
    upright = preprocess(image, input_size=(16, 16), mean=MEAN, std=STD)
    flipped = upright.flip(-1)
    same = flips = 0
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(draws):
            out = transform(image)
            same += bool(torch.equal(out, upright))
            flips += bool(torch.equal(out, flipped))
    return same, flips


def test_hflip_off_by_default_never_flips() -> None:
    assert _count_flips(OFF) == (50, 0)


def test_hflip_on_flips_sometimes() -> None:
    same, flips = _count_flips(dataclasses.replace(OFF, hflip=True))
    assert same + flips == 50
    assert 5 < flips < 45


def test_default_augmentation_is_random_from_torch_rng_and_has_the_output_shape() -> None:
    config = AugmentConfig(hflip=True, random_erasing=0.5, blur_prob=0.5, hue=0.05)
    transform = build_train_transform(config, input_size=(12, 8), mean=MEAN, std=STD)
    image = _random_image()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        first = [transform(image) for _ in range(3)]
        torch.manual_seed(1)
        again = [transform(image) for _ in range(3)]
    for a, b in zip(first, again, strict=True):
        assert a.shape == (3, 12, 8) and a.dtype == torch.float32 and a.is_contiguous()
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(first[0], first[1])


def test_random_erasing_sets_a_region_to_the_mean() -> None:
    config = dataclasses.replace(OFF, random_erasing=1.0)
    transform = build_train_transform(config, input_size=(32, 32), mean=MEAN, std=STD)
    image = Image.new("RGB", (32, 32), (255, 255, 255))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = transform(image)
    erased = (out == 0).all(dim=0)
    assert 0 < int(erased.sum()) < 32 * 32


def test_transform_pickles_and_keeps_its_behaviour() -> None:
    config = AugmentConfig(hflip=True, random_erasing=0.5)
    transform = build_train_transform(config, input_size=(12, 8), mean=MEAN, std=STD)
    copy = pickle.loads(pickle.dumps(transform))
    image = _random_image()
    with torch.random.fork_rng():
        torch.manual_seed(3)
        expected = transform(image)
        torch.manual_seed(3)
        actual = copy(image)
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)
    assert copy.input_size == (12, 8)


def test_target_size_leaves_room_for_the_smallest_crop() -> None:
    off = build_train_transform(OFF, input_size=(10, 20), mean=MEAN, std=STD)
    assert off.target_size == decode_size((10, 20)) == (20, 10)
    crops = AugmentConfig(resized_crop_scale=(0.25, 1.0))
    on = build_train_transform(crops, input_size=(10, 20), mean=MEAN, std=STD)
    assert on.target_size == (40, 20)


def test_non_rgb_image_is_refused() -> None:
    transform = build_train_transform(OFF, input_size=(8, 8), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="RGB"):
        transform(Image.new("L", (8, 8)))


def test_importing_the_module_does_not_import_torchvision() -> None:
    code = "import sys, wildreid.training.augment; print('torchvision' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"
