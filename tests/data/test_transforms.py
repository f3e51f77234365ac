"""Preprocessing: values, geometry of the two crop modes, agreement with torchvision."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from wildreid.data.transforms import (
    Preprocess,
    Resize,
    decode_size,
    fit_box,
    normalize,
    preprocess,
    resize_image,
)
from wildreid.types import EmbeddingSpace

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _stripes(width: int, height: int, *, vertical: bool = True) -> Image.Image:
    """Three equal stripes red | green | blue (left to right, or top to bottom)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    n = width if vertical else height
    for i, colour in enumerate((RED, GREEN, BLUE)):
        part = slice(i * n // 3, (i + 1) * n // 3)
        if vertical:
            pixels[:, part] = colour
        else:
            pixels[part, :] = colour
    return Image.fromarray(pixels)


def _random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_constant_image_gives_hand_computed_values() -> None:
    image = Image.new("RGB", (37, 23), (51, 102, 255))
    out = preprocess(
        image,
        input_size=(8, 12),
        mean=(0.2, 0.5, 0.75),
        std=(0.5, 0.25, 0.125),
        crop_mode="stretch",
    )
    assert out.shape == (3, 8, 12)
    assert out.dtype == torch.float32
    assert out.is_contiguous()
    # 51/255 = 0.2 -> (0.2-0.2)/0.5 = 0; 102/255 = 0.4 -> (0.4-0.5)/0.25 = -0.4; 1 -> 0.25/0.125 = 2
    expected = torch.tensor([0.0, -0.4, 2.0]).view(3, 1, 1).expand(3, 8, 12)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_stretch_keeps_everything_and_center_keeps_the_middle() -> None:
    image = _stripes(60, 20)  # wide: red | green | blue
    stretch = resize_image(image, input_size=(10, 12), crop_mode="stretch")
    center = resize_image(image, input_size=(10, 10), crop_mode="center")
    assert stretch.shape == (3, 10, 12) and stretch.dtype == torch.uint8
    assert tuple(stretch[:, 5, 0].tolist()) == RED
    assert tuple(stretch[:, 5, 6].tolist()) == GREEN
    assert tuple(stretch[:, 5, 11].tolist()) == BLUE
    # the central 20x20 square of a 60x20 image is exactly the green stripe
    assert fit_box(60, 20, input_size=(10, 10), crop_mode="center") == (20, 0, 40, 20)
    assert (center == torch.tensor(GREEN, dtype=torch.uint8).view(3, 1, 1)).all()


def test_center_crops_a_tall_image_top_and_bottom() -> None:
    image = _stripes(20, 90, vertical=False)  # tall: red / green / blue
    assert fit_box(20, 90, input_size=(10, 10), crop_mode="center") == (0, 35, 20, 55)
    out = resize_image(image, input_size=(10, 10), crop_mode="center")
    assert (out == torch.tensor(GREEN, dtype=torch.uint8).view(3, 1, 1)).all()


def test_center_keeps_the_input_aspect_ratio_for_non_square_inputs() -> None:
    # a 100x100 image for a 10 (h) x 20 (w) input: keep the full width, the central 50 rows
    assert fit_box(100, 100, input_size=(10, 20), crop_mode="center") == (0, 25, 100, 75)
    assert fit_box(100, 100, input_size=(10, 20), crop_mode="stretch") == (0, 0, 100, 100)


def test_stretch_equals_torchvision_v2() -> None:
    tv = pytest.importorskip("torchvision.transforms.v2.functional")
    image = _random_image(131, 97)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ours = preprocess(image, input_size=(50, 70), mean=mean, std=std)
    resized = tv.resize(tv.pil_to_tensor(image), [50, 70], antialias=True)
    theirs = tv.normalize(tv.to_dtype(resized, torch.float32, scale=True), list(mean), list(std))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_center_is_close_to_resize_shorter_side_then_center_crop() -> None:
    tv = pytest.importorskip("torchvision.transforms.v2.functional")
    # sizes where timm/torchvision's integer rounding is exact (160x120 -> 80x60, crop at 10):
    # only the filter's edge handling differs (we crop first, then resample)
    coarse = _random_image(8, 6, seed=3).resize((160, 120), Image.Resampling.BICUBIC)
    ours = resize_image(coarse, input_size=(60, 60), crop_mode="center")
    resized = tv.resize(tv.pil_to_tensor(coarse), [60], antialias=True)
    theirs = tv.center_crop(resized, [60, 60])
    difference = (ours.int() - theirs.int()).abs()
    assert difference.float().mean().item() < 0.5  # of 255
    assert difference[:, 2:-2, 2:-2].max().item() <= 1  # identical away from the crop edges


def test_batch_normalize_is_identical_to_per_image_preprocess() -> None:
    images = [_random_image(40, 30, seed=s) for s in range(3)]
    kwargs = {"input_size": (16, 20), "crop_mode": "center"}
    mean, std = (0.1, 0.2, 0.3), (0.3, 0.2, 0.1)
    batch = torch.stack([resize_image(im, **kwargs) for im in images])  # type: ignore[arg-type]
    together = normalize(batch, mean=mean, std=std)
    one_by_one = torch.stack(
        [preprocess(im, mean=mean, std=std, **kwargs) for im in images]  # type: ignore[arg-type]
    )
    assert torch.equal(together, one_by_one)
    assert batch.dtype == torch.uint8  # not modified in place


def test_callables_from_a_space_are_picklable_and_agree() -> None:
    space = EmbeddingSpace(
        model="m", weights_sha256="x", input_size=(12, 16), mean=(0.5,) * 3, std=(0.2,) * 3,
        crop_mode="center",
    )  # fmt: skip
    image = _random_image(33, 21)
    resize = pickle.loads(pickle.dumps(Resize.from_space(space)))
    full = pickle.loads(pickle.dumps(Preprocess.from_space(space)))
    assert resize.target_size == full.target_size == decode_size((12, 16)) == (16, 12)
    expected = preprocess(image, input_size=(12, 16), mean=space.mean, std=space.std,
                          crop_mode="center")  # fmt: skip
    assert torch.equal(full(image), expected)
    assert torch.equal(normalize(resize(image), mean=space.mean, std=space.std), expected)


def test_same_size_is_not_resampled() -> None:
    image = _random_image(20, 10)
    out = resize_image(image, input_size=(10, 20))
    assert torch.equal(out, torch.from_numpy(np.array(image)).permute(2, 0, 1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_size": (0, 5)}, "input_size"),
        ({"input_size": (5, 5), "crop_mode": "squash"}, "crop_mode"),
        ({"input_size": (5, 5), "std": (0.0, 1.0, 1.0)}, "std"),
        ({"input_size": (5, 5), "mean": (0.5, 0.5)}, "mean"),
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"mean": (0.5,) * 3, "std": (0.5,) * 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        preprocess(Image.new("RGB", (8, 8)), **arguments)  # type: ignore[arg-type]


def test_non_rgb_images_are_refused() -> None:
    with pytest.raises(ValueError, match="load_image"):
        resize_image(Image.new("L", (8, 8)), input_size=(4, 4))


def test_normalize_refuses_float_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        normalize(torch.zeros(3, 4, 4), mean=(0.5,) * 3, std=(0.5,) * 3)
