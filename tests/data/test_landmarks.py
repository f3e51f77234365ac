"""Heatmaps from landmarks, the shared geometric augmentation, NLA, MLA and bad landmark data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from wildreid.data.landmarks import (
    LandmarkAugment,
    LandmarkInput,
    check_inside,
    landmark_points,
    landmark_table,
    mask_landmarks,
    noisy_landmarks,
    render_heatmaps,
)
from wildreid.errors import MetadataError

NAMES = ("tip", "left", "right")


def test_heatmap_is_a_smoothed_disk_of_the_radius_and_zero_when_invisible() -> None:
    points = np.array([[50.0, 40.0, 1.0], [10.0, 10.0, 0.0]], np.float32)
    maps = render_heatmaps(points, (100, 100), radius_frac=0.1)  # radius 10 px
    assert maps.shape == (2, 100, 100) and maps.dtype == np.float32
    assert maps[1].max() == 0.0
    blob = maps[0]
    assert blob.max() == pytest.approx(1.0)
    assert blob[40, 50] > 0.95 and blob[40, 54] > 0.95  # equal intensity well inside the disk
    assert blob[40, 66] < 0.02 and blob[58, 50] < 0.02  # nothing well outside it
    assert 0.2 < blob[40, 59] < 0.8  # a smooth edge at the radius
    ys, xs = np.nonzero(blob > 0.5)
    assert xs.mean() == pytest.approx(49.5, abs=0.6) and ys.mean() == pytest.approx(39.5, abs=0.6)


def test_radius_scales_with_the_image_size() -> None:
    point = np.array([[50.0, 50.0, 1.0]], np.float32)
    small = (render_heatmaps(point, (100, 100), radius_frac=0.05)[0] > 0.5).sum()
    large = (render_heatmaps(point, (100, 100), radius_frac=0.2)[0] > 0.5).sum()
    assert large / small == pytest.approx(16, rel=0.25)


def _dot_image(x: int, y: int, size: int = 64) -> Image.Image:
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[y - 2 : y + 3, x - 2 : x + 3] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("seed", range(4))
def test_augmentation_moves_image_and_landmarks_together(seed: int) -> None:
    torch.manual_seed(seed)
    transform = LandmarkInput(
        input_size=(64, 64),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        radius_frac=0.03,
        augment=LandmarkAugment(rotation_deg=360, zoom=0.2, translate=0.1),
    )
    points = np.array([[32.5, 20.5, 1.0]], np.float32)
    out = transform(_dot_image(32, 20), points)
    assert out.shape == (4, 64, 64)
    image, heat = out[0].numpy(), out[3].numpy()
    if heat.max() == 0:  # the point left the image: so did the dot
        assert image.max() < 0.5
        return
    iy, ix = np.unravel_index(np.argmax(image), image.shape)
    hy, hx = np.unravel_index(np.argmax(heat), heat.shape)
    assert abs(int(iy) - int(hy)) <= 2 and abs(int(ix) - int(hx)) <= 2


def test_inference_input_is_resized_rgb_then_heatmaps() -> None:
    transform = LandmarkInput(input_size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    out = transform(_dot_image(32, 32), np.array([[32.0, 32.0, 1.0], [0, 0, 0]], np.float32))
    assert out.shape == (5, 32, 32)
    assert out[4].abs().max() == 0  # invisible: all zero
    hy, hx = np.unravel_index(int(out[3].argmax()), (32, 32))
    assert (hy, hx) in {(15, 15), (15, 16), (16, 15), (16, 16)}  # halved coordinates
    assert float(out[:3].min()) == pytest.approx(-1.0)  # normalised


def test_nla_shifts_by_at_most_the_radius() -> None:
    rng = np.random.default_rng(0)
    points = np.tile(np.array([[20.0, 30.0, 1.0]], np.float32), (500, 1))
    moved = noisy_landmarks(points, 5.0, rng)
    shift = np.hypot(moved[:, 0] - 20, moved[:, 1] - 30)
    assert shift.max() <= 5.0 + 1e-4 and shift.mean() > 2.0
    np.testing.assert_array_equal(moved[:, 2], points[:, 2])


def test_mla_blanks_with_probability_p_keeping_the_minimum() -> None:
    rng = np.random.default_rng(0)
    points = np.array([[1, 1, 1], [2, 2, 1], [3, 3, 1]], np.float32)
    visible = [
        int(mask_landmarks(points, prob=0.5, min_visible=2, rng=rng)[:, 2].sum())
        for _ in range(400)
    ]
    assert min(visible) == 2 and max(visible) == 3
    assert 0.6 < visible.count(2) / 400 < 0.95  # P(at least one dropped) = 7/8
    none = mask_landmarks(points, prob=1.0, min_visible=0, rng=rng)
    assert none[:, 2].sum() == 0


def _rows(cells: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"image_id": [f"img{i}" for i in range(len(cells))], "landmarks": cells},
        index=range(len(cells)),
    )


def test_landmark_table_orders_by_model_names_and_marks_invisible() -> None:
    rows = _rows(
        [
            '{"left": [1, 2, 2], "tip": [3, 4, 2], "right": [5, 6, 1]}',
            '{"tip": [7, 8, 2], "left": [1, 1, 2], "right": [2, 2, 2]}',
            "",
        ]
    )
    table = landmark_table(rows, NAMES)
    assert table.shape == (3, 3, 3)
    np.testing.assert_array_equal(table[0], [[3, 4, 1], [1, 2, 1], [5, 6, 0]])
    assert table[2].sum() == 0  # unlabelled row: zero heatmaps


def test_missing_landmark_column_is_a_clear_error() -> None:
    with pytest.raises(MetadataError, match=r"no landmarks column.*tip, left, right"):
        landmark_table(pd.DataFrame({"image_id": ["a"]}), NAMES)


def test_unknown_landmark_name_names_row_and_landmark() -> None:
    rows = _rows(
        ['{"tip": [1, 1, 2], "left": [1, 1, 2], "right": [1, 1, 2]}', '{"eye": [1, 1, 2]}']
    )
    with pytest.raises(MetadataError, match=r"row 1 \(image_id 'img1'\): landmark 'eye'"):
        landmark_table(rows, NAMES)


def test_a_model_landmark_absent_from_the_data_is_an_error() -> None:
    rows = _rows(['{"tip": [1, 1, 2], "left": [1, 1, 2]}'])
    with pytest.raises(MetadataError, match="no metadata row has landmark 'right'"):
        landmark_table(rows, NAMES)


def test_landmark_outside_the_image_names_row_and_landmark() -> None:
    points = np.array([[5, 5, 1], [120, 5, 1], [500, 500, 0]], np.float32)
    with pytest.raises(MetadataError, match=r"row 7: landmark 'left' at \(120, 5\) lies outside"):
        check_inside(points, (100, 100), where="row 7", names=NAMES)
    # inside a bbox crop the points shift, and what the crop cut away is invisible
    shifted = landmark_points(points, bbox=(100, 0, 50, 50), size=(50, 50), where="r", names=NAMES)
    np.testing.assert_array_equal(shifted[:, 2], [0, 1, 0])
    assert shifted[1, 0] == 20
