"""Tests for wildreid.viz.match_grid: frame colours, text, size and determinism."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wildreid.viz.match_grid import (
    BORDER_PX,
    GAP_PX,
    MatchTile,
    fit_height,
    placeholder_image,
    render_match_grid,
)

TILE_PX = 64
FRAMED_PX = TILE_PX + 2 * BORDER_PX


def _solid(value: int, size: tuple[int, int] = (TILE_PX, TILE_PX)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def _grid() -> Image.Image:
    matches = [
        MatchTile(_solid(200), "ayo", 0.91, correct=True),
        MatchTile(_solid(200), "bisa", 0.52, correct=False),
        MatchTile(_solid(200), "ayo", 0.40, correct=True),
    ]
    return render_match_grid(_solid(200), matches, query_identity="ayo", tile_height_px=TILE_PX)


def _frame_pixel(grid: Image.Image, tile: int) -> tuple[int, int, int]:
    """A pixel inside the frame (top-left corner area) of tile ``tile`` (0 = the query)."""
    left = GAP_PX + tile * (FRAMED_PX + GAP_PX)
    pixel = grid.getpixel((left + BORDER_PX // 2, GAP_PX + BORDER_PX // 2))
    assert isinstance(pixel, tuple)
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


def _is_green(rgb: tuple[int, int, int]) -> bool:
    return rgb[1] >= 120 and rgb[0] <= 60 and rgb[2] <= 60


def _is_red(rgb: tuple[int, int, int]) -> bool:
    return rgb[0] >= 150 and rgb[1] <= 60 and rgb[2] <= 60


def test_frames_are_green_for_the_same_individual_and_red_otherwise() -> None:
    grid = _grid()
    query = _frame_pixel(grid, 0)
    assert query[2] >= 150 and query[2] > query[0] + 50, query  # blue
    assert _is_green(_frame_pixel(grid, 1)), _frame_pixel(grid, 1)
    assert _is_red(_frame_pixel(grid, 2)), _frame_pixel(grid, 2)
    assert _is_green(_frame_pixel(grid, 3)), _frame_pixel(grid, 3)
    # The frame surrounds the image: the bottom-right frame corner has the colour too, and the
    # image itself (grey 200) is inside.
    right = GAP_PX + 2 * (FRAMED_PX + GAP_PX) + FRAMED_PX - 2
    bottom = GAP_PX + FRAMED_PX - 2
    assert _is_red(grid.getpixel((right, bottom)))  # type: ignore[arg-type]
    centre = GAP_PX + 2 * (FRAMED_PX + GAP_PX) + FRAMED_PX // 2
    assert grid.getpixel((centre, GAP_PX + FRAMED_PX // 2)) == (200, 200, 200)


def test_text_is_written_under_each_tile() -> None:
    pixels = np.asarray(_grid())
    text_band = pixels[GAP_PX + FRAMED_PX :]
    for tile in range(4):
        left = GAP_PX + tile * (FRAMED_PX + GAP_PX)
        region = text_band[:, left : left + FRAMED_PX]
        dark = np.count_nonzero(region.max(axis=2) < 100)
        assert dark > 20, f"tile {tile} has no text under it"
    # Different identities and scores give different text.
    first = text_band[:, GAP_PX + (FRAMED_PX + GAP_PX) :][:, :FRAMED_PX]
    second = text_band[:, GAP_PX + 2 * (FRAMED_PX + GAP_PX) :][:, :FRAMED_PX]
    assert not np.array_equal(first, second)


def test_size_is_deterministic() -> None:
    first, second = _grid(), _grid()
    assert first.size == second.size
    assert first.size[0] == GAP_PX + 4 * (FRAMED_PX + GAP_PX)
    assert first.size[1] > GAP_PX + FRAMED_PX  # room for the text
    assert first.tobytes() == second.tobytes()


def test_images_are_scaled_to_the_tile_height_keeping_aspect() -> None:
    assert fit_height(_solid(10, (200, 100)), 50).size == (100, 50)
    assert fit_height(_solid(10, (30, 120)), 60).size == (15, 60)
    # Wider than twice the height: scaled to 2x wide and letterboxed.
    wide = fit_height(_solid(10, (400, 50)), 40)
    assert wide.size == (80, 40)
    assert wide.getpixel((40, 0)) == (255, 255, 255)
    assert wide.getpixel((40, 20)) == (10, 10, 10)
    grid = render_match_grid(_solid(200, (128, 64)), [], query_identity="x", tile_height_px=TILE_PX)
    assert grid.size[0] == GAP_PX + 128 + 2 * BORDER_PX + GAP_PX
    with pytest.raises(ValueError, match="height_px must be >= 1"):
        fit_height(_solid(10), 0)


def test_long_identities_are_cut_to_the_tile_width() -> None:
    long_name = "a-very-long-identity-name-" * 5
    grid = render_match_grid(
        _solid(200),
        [MatchTile(_solid(200), long_name, 0.5, correct=False)],
        query_identity=long_name,
        tile_height_px=TILE_PX,
    )
    assert grid.size[0] == GAP_PX + 2 * (FRAMED_PX + GAP_PX)
    # No text is drawn in the gaps between and after the tiles.
    pixels = np.asarray(grid)
    gap = pixels[:, GAP_PX + FRAMED_PX + 1 : GAP_PX + FRAMED_PX + GAP_PX - 1]
    assert (gap == 255).all()


def test_placeholder_is_grey_with_text() -> None:
    tile = placeholder_image(64)
    pixels = np.asarray(tile)
    assert tile.size == (64, 64)
    assert tuple(pixels[2, 2]) == (160, 160, 160)
    assert np.count_nonzero(pixels.max(axis=2) < 100) > 10
