"""A query image next to its best gallery matches, as one picture.

Layout (one row, left to right, ``GAP_PX`` apart and from the edges): the query in a blue frame
labelled ``query`` and its identity, then each match in a thick frame, green when it shows the
same individual and red otherwise, with its identity and score written under it. Every image is
scaled to the tile height keeping its aspect ratio (at most twice as wide as high; a wider image
is letterboxed). The drawing uses Pillow's bundled font only, so the output is the same on every
machine with the same Pillow version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Final

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BORDER_PX",
    "CORRECT_RGB",
    "GAP_PX",
    "QUERY_RGB",
    "WRONG_RGB",
    "MatchTile",
    "fit_height",
    "pillow_font",
    "placeholder_image",
    "render_match_grid",
]

CORRECT_RGB: Final = (0, 160, 0)
"""Frame colour of a match showing the same individual as the query."""
WRONG_RGB: Final = (210, 0, 0)
"""Frame colour of a match showing another individual."""
QUERY_RGB: Final = (30, 90, 200)
"""Frame colour of the query."""
BORDER_PX: Final = 6
GAP_PX: Final = 10
MAX_ASPECT: Final = 2.0
"""Widest tile, as a multiple of its height."""

_BACKGROUND: Final = (255, 255, 255)
_TEXT: Final = (20, 20, 20)
_PLACEHOLDER: Final = (160, 160, 160)


@dataclass(frozen=True, eq=False)
class MatchTile:
    """One gallery match: its image, identity, similarity score and whether it is correct."""

    image: Image.Image
    identity: str
    score: float
    correct: bool


@cache
def pillow_font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size_px)


def fit_height(image: Image.Image, height_px: int) -> Image.Image:
    """``image`` as RGB scaled to ``height_px`` high, keeping its aspect ratio.

    An image wider than :data:`MAX_ASPECT` times its height is scaled to that width and centred
    on a white band of ``height_px``.

    Raises:
        ValueError: ``height_px < 1``.
    """
    if height_px < 1:
        raise ValueError(f"height_px must be >= 1, got {height_px}")
    rgb = image.convert("RGB")
    width, height = rgb.size
    max_width = round(MAX_ASPECT * height_px)
    scale = min(height_px / height, max_width / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = rgb.resize(size, Image.Resampling.BILINEAR)
    if size[1] == height_px:
        return resized
    band = Image.new("RGB", (size[0], height_px), _BACKGROUND)
    band.paste(resized, (0, (height_px - size[1]) // 2))
    return band


def placeholder_image(height_px: int, text: str = "unreadable") -> Image.Image:
    """A grey square ``height_px`` high with ``text`` in the middle, for a missing image."""
    image = Image.new("RGB", (height_px, height_px), _PLACEHOLDER)
    draw = ImageDraw.Draw(image)
    font = pillow_font(max(8, height_px // 8))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    origin = ((height_px - right - left) / 2, (height_px - bottom - top) / 2)
    draw.text(origin, text, fill=_TEXT, font=font)
    return image


def _fit_text(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    width_px: int,
) -> str:
    """``text`` cut with an ellipsis so that it fits in ``width_px``."""
    if draw.textlength(text, font=font) <= width_px:
        return text
    for end in range(len(text) - 1, 0, -1):
        cut = text[:end] + "…"
        if draw.textlength(cut, font=font) <= width_px:
            return cut
    return "…"


def render_match_grid(
    query: Image.Image,
    matches: Sequence[MatchTile],
    *,
    query_identity: str,
    tile_height_px: int = 128,
) -> Image.Image:
    """Draw the query and its matches in one row (layout in the module docstring).

    Args:
        query: the query image.
        matches: the matches to show, best first (typically the top 5).
        query_identity: written under the query.
        tile_height_px: height every image is scaled to.

    Returns:
        An RGB image; its size depends only on the image sizes, the number of matches and
        ``tile_height_px`` (two text lines are reserved under the frames).

    Raises:
        ValueError: ``tile_height_px < 1``.
    """
    tiles = [
        (fit_height(query, tile_height_px), QUERY_RGB, "query", query_identity),
        *(
            (
                fit_height(match.image, tile_height_px),
                CORRECT_RGB if match.correct else WRONG_RGB,
                match.identity,
                f"{match.score:.3f}",
            )
            for match in matches
        ),
    ]
    font_px = max(10, tile_height_px // 9)
    font = pillow_font(font_px)
    line_px = font_px + 4
    framed_height = tile_height_px + 2 * BORDER_PX
    width = GAP_PX + sum(image.width + 2 * BORDER_PX + GAP_PX for image, *_ in tiles)
    height = GAP_PX + framed_height + 2 * line_px + GAP_PX
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    left = GAP_PX
    for image, colour, first, second in tiles:
        framed_width = image.width + 2 * BORDER_PX
        draw.rectangle(
            (left, GAP_PX, left + framed_width - 1, GAP_PX + framed_height - 1), fill=colour
        )
        canvas.paste(image, (left + BORDER_PX, GAP_PX + BORDER_PX))
        text_top = GAP_PX + framed_height + 2
        for line, text in enumerate((first, second)):
            fitted = _fit_text(draw, text, font, framed_width)
            draw.text((left, text_top + line * line_px), fitted, fill=_TEXT, font=font)
        left += framed_width + GAP_PX
    return canvas
