"""Two images side by side with their matched keypoints joined by lines.

Both images are scaled to ``height_px`` (aspect kept) and placed left and right with a gap.
Inliers of the geometric model are drawn as green lines, other matches as thin red lines (at most
``max_lines`` lines, the most confident first); unmatched keypoints as small grey dots. A caption
under the pair gives the counts. Keypoints are in pixels of the working images the extractor saw
(``LocalFeatures.image_size``) and are scaled from there.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image, ImageDraw

from wildreid.types import LocalFeatures, Matches
from wildreid.viz.match_grid import CORRECT_RGB, WRONG_RGB, pillow_font

__all__ = ["render_keypoint_matches"]

_GAP_PX: Final = 12
_CAPTION_PX: Final = 18
_DOT_RGB: Final = (170, 170, 170)
_BACKGROUND: Final = (255, 255, 255)


def _scaled(image: Image.Image, height_px: int) -> tuple[Image.Image, float]:
    width, height = image.size
    scale = height_px / height
    return image.convert("RGB").resize(
        (max(1, round(width * scale)), height_px), Image.Resampling.BILINEAR
    ), scale


def render_keypoint_matches(
    image0: Image.Image,
    image1: Image.Image,
    features0: LocalFeatures,
    features1: LocalFeatures,
    matches: Matches,
    *,
    height_px: int = 240,
    max_lines: int = 200,
    caption: str | None = None,
) -> Image.Image:
    """The picture described in the module docstring.

    Args:
        image0, image1: the images the features were extracted from (any size: the keypoints
            are mapped through ``features.image_size``).
        caption: text under the pair; default: the match and inlier counts.

    Raises:
        ValueError: ``height_px < 16``.
    """
    if height_px < 16:
        raise ValueError(f"height_px must be >= 16, got {height_px}")
    left, _ = _scaled(image0, height_px)
    right, _ = _scaled(image1, height_px)
    canvas = Image.new(
        "RGB", (left.width + _GAP_PX + right.width, height_px + _CAPTION_PX), _BACKGROUND
    )
    canvas.paste(left, (0, 0))
    offset = left.width + _GAP_PX
    canvas.paste(right, (offset, 0))
    draw = ImageDraw.Draw(canvas)

    def to_canvas(features: LocalFeatures, shown: Image.Image, dx: int) -> np.ndarray:
        sx = shown.width / features.image_size[0]
        sy = shown.height / features.image_size[1]
        scaled: np.ndarray = features.keypoints * np.array([sx, sy], dtype=np.float32)
        return scaled + np.array([dx, 0], dtype=np.float32)

    points0 = to_canvas(features0, left, 0)
    points1 = to_canvas(features1, right, offset)
    for x, y in np.concatenate([points0, points1]):
        draw.point((float(x), float(y)), fill=_DOT_RGB)
    inliers = matches.inliers if matches.inliers is not None else np.ones(len(matches), bool)
    order = np.lexsort((-matches.scores, ~inliers))[:max_lines]  # inliers first, then confidence
    for i in order[::-1]:  # the most important lines last, on top
        a, b = matches.pairs[i]
        colour = CORRECT_RGB if inliers[i] else WRONG_RGB
        (x0, y0), (x1, y1) = points0[a], points1[b]
        draw.line(
            (float(x0), float(y0), float(x1), float(y1)),
            fill=colour,
            width=2 if inliers[i] else 1,
        )
    text = caption or f"{len(matches)} matches, {int(np.count_nonzero(inliers))} inliers"
    draw.text((2, height_px + 2), text, fill=(20, 20, 20), font=pillow_font(12))
    return canvas
