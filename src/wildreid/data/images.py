"""The one image loader of wildreid: safe, upright, cropped, RGB.

:func:`load_image` returns an image as a person sees it, optionally cropped and decoded at reduced
size; :func:`image_size` reads the upright size from the header alone. Every failure is an
:class:`~wildreid.errors.ImageReadError` that names the file and says what to do.

Conventions:
    * ``bbox`` is ``(x, y, width, height)`` in pixels (COCO) of the oriented full-resolution image,
      clipped to the image.
    * ``target_size`` is the size the caller will resize to: ``(width, height)`` (PIL order), or an
      int ``t`` for ``(t, t)``. It is never resized to; JPEGs are decoded at 1/2, 1/4 or 1/8 scale
      only while the crop keeps at least that width and height (or its full-resolution size).
    * Transparency is composited onto white (what a viewer shows). Integer images within 0..65535
      (16-bit) are scaled by 255/65535; other integer or float images are stretched from their
      minimum and maximum to 0..255. Nothing is clipped.
    * Images whose header promises more than ``max_pixels`` pixels are refused before decoding.
      Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``) also applies; its warning is turned into
      an error locally, never printed. No Pillow global is changed.
"""

from __future__ import annotations

import io
import logging
import math
import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from wildreid.errors import ImageReadError

__all__ = ["DEFAULT_MAX_PIXELS", "image_size", "load_image"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest image accepted by default: Pillow's own default decompression-bomb limit (~0.25 GiB)."""

_WHITE = (255, 255, 255, 255)
_HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_DRAFT_SCALES = (8, 4, 2, 1)
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)

BBoxTuple = tuple[float, float, float, float]
_Box = tuple[float, float, float, float]  # left, top, right, bottom


def image_size(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """Return the oriented ``(width, height)`` of an image, reading only its header.

    EXIF orientations 5 to 8 swap width and height, so the size matches :func:`load_image`.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this (see :func:`load_image`).

    Returns:
        ``(width, height)`` in pixels, as the image is displayed.

    Raises:
        ImageReadError: the file is missing, not a regular file, empty, unreadable, not an image,
            has a corrupt header or is over the pixel limit.
        ValueError: ``max_pixels`` is not positive.
    """
    path = Path(path)
    _check_arguments(None, max_pixels)
    with _open_file(path) as fp, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open_image(path, fp, max_pixels) as im:
            return _oriented_size(im.size, _orientation(path, im))


def load_image(
    path: str | os.PathLike[str],
    *,
    bbox: BBoxTuple | None = None,
    target_size: int | tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Load an image as RGB, upright, optionally cropped and decoded at reduced size.

    Args:
        path: the image file.
        bbox: ``(x, y, width, height)`` in pixels of the oriented full-resolution image; clipped
            to the image. ``None`` returns the whole image.
        target_size: the ``(width, height)`` the caller will resize to, or ``t`` for ``(t, t)``;
            only lets JPEGs decode at reduced scale (see the module docstring). ``None``: full.
        max_pixels: refuse, before decoding, images whose header promises more pixels than this.
            Raise it for files you trust; Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` still applies.

    Returns:
        A fully loaded RGB image, independent of the (closed) file.

    Raises:
        ImageReadError: the file is missing, not a regular file, empty, unreadable, not an image,
            truncated, corrupt, over the pixel limit, or ``bbox`` is empty or outside the image.
        ValueError: ``target_size`` or ``max_pixels`` is not positive, or ``bbox`` has not four
            numbers.
    """
    path = Path(path)
    target = _check_arguments(target_size, max_pixels)
    with _open_file(path) as fp, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open_image(path, fp, max_pixels) as im:
            orientation = _orientation(path, im)
            width, height = _oriented_size(im.size, orientation)
            box = (0.0, 0.0, float(width), float(height))
            if bbox is not None:
                box = _clip_bbox(path, bbox, width, height)
            scale = _draft(im, box, target)
            try:
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _bomb_error(path, exc, max_pixels) from exc
            except _DECODE_ERRORS as exc:
                raise _decode_error(path, exc) from exc
            upright = im.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else im
            crop = upright.crop(_scaled_box(box, scale, upright.size))
    return _to_rgb(path, crop)


def _check_arguments(
    target_size: int | tuple[int, int] | None, max_pixels: int
) -> tuple[int, int] | None:
    """Validate the arguments; return ``target_size`` as ``(width, height)``."""
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if target_size is None:
        return None
    target = (target_size, target_size) if isinstance(target_size, int) else tuple(target_size)
    if len(target) != 2 or min(target) <= 0:
        raise ValueError(
            f"target_size must be a positive int or (width, height), got {target_size}"
        )
    return int(target[0]), int(target[1])


def _open_file(path: Path) -> io.BufferedReader:
    """Open ``path`` for reading after checking it is a non-empty regular file."""
    try:
        info = path.stat()
    except OSError as exc:
        raise _os_error(path, exc) from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(
            f"Image path {path} is a directory, not an image file; point to a file inside it."
        )
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(
            f"Image path {path} is not a regular file (a device, pipe or socket); "
            "point to an image file."
        )
    if info.st_size == 0:
        raise ImageReadError(f"Image file {path} is empty (0 bytes); re-download or re-export it.")
    try:
        return path.open("rb")
    except OSError as exc:
        raise _os_error(path, exc) from exc


def _os_error(path: Path, exc: OSError) -> ImageReadError:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return ImageReadError(
            f"Image file {path} does not exist; check the path and the image root folder."
        )
    if isinstance(exc, PermissionError):
        return ImageReadError(
            f"Image file {path} cannot be read: permission denied; "
            "check the permissions of the file and its folders."
        )
    return ImageReadError(f"Image file {path} cannot be opened ({exc}); check the file system.")


def _open_image(path: Path, fp: io.BufferedReader, max_pixels: int) -> ImageFile.ImageFile:
    """Read the header of the open file ``fp`` and refuse images over ``max_pixels``."""
    try:
        im = Image.open(fp)
    except UnidentifiedImageError as exc:
        raise ImageReadError(
            f"Image file {path} is not in an image format Pillow can read, or its header is "
            "corrupt; check that it really is an image (not, e.g., a saved HTML error page)."
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(path, exc, max_pixels) from exc
    except _DECODE_ERRORS as exc:
        raise _decode_error(path, exc) from exc
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise ImageReadError(
            f"Image file {path} is {width}x{height} = {width * height:,} pixels, over the limit "
            f"of max_pixels={max_pixels:,} (a guard against decompression bombs); it was not "
            "decoded. If you trust this file, pass a larger max_pixels."
        )
    return im


def _bomb_error(path: Path, exc: Exception, max_pixels: int) -> ImageReadError:
    return ImageReadError(
        f"Image file {path} was refused by Pillow as a possible decompression bomb ({exc}). "
        f"Pillow's limit PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS} applies in addition "
        f"to max_pixels={max_pixels:,}; if you trust this file, raise both (the former in your "
        "application)."
    )


def _decode_error(path: Path, exc: BaseException) -> ImageReadError:
    if "truncated" in str(exc):
        return ImageReadError(
            f"Image file {path} is truncated: it ends before the image data is complete "
            f"({exc}); re-download or re-export it."
        )
    return ImageReadError(
        f"Image file {path} is corrupt and could not be decoded ({type(exc).__name__}: {exc}); "
        "re-download or re-export it."
    )


def _orientation(path: Path, im: ImageFile.ImageFile) -> int:
    """The EXIF orientation (1 to 8) of an image whose pixels are not decoded yet."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # PngImageFile.getexif() would decode the whole image to look for a late eXIf
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS as exc:
        logger.warning("Ignoring the unreadable EXIF data of %s (%s)", path, exc)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation >= 5 else size


def _clip_bbox(path: Path, bbox: BBoxTuple, width: int, height: int) -> _Box:
    """Clip ``(x, y, w, h)`` to the image; return the box as ``(left, top, right, bottom)``."""
    try:
        x, y, w, h = (float(value) for value in bbox)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bbox must be four numbers (x, y, width, height), got {bbox!r}") from exc
    if not all(math.isfinite(value) for value in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ImageReadError(
            f"Bounding box (x, y, width, height)={bbox!r} for image {path} ({width}x{height}) "
            "has a non-finite value or a non-positive width or height; fix the annotation."
        )
    box = (max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height)))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ImageReadError(
            f"Bounding box (x, y, width, height)={bbox!r} lies entirely outside image {path} of "
            f"{width}x{height} pixels (as displayed, after EXIF orientation); check that it is "
            "in pixel coordinates of this image."
        )
    return box


def _draft(im: ImageFile.ImageFile, box: _Box, target: tuple[int, int] | None) -> int:
    """Ask for the largest reduction keeping the crop >= ``target``; return the one applied.

    The reduction is the same along both axes, so it is requested in stored (unrotated) pixels.
    """
    if target is None:
        return 1
    crop_width, crop_height = box[2] - box[0], box[3] - box[1]
    scale = next(
        (s for s in _DRAFT_SCALES if crop_width / s >= target[0] and crop_height / s >= target[1]),
        1,
    )
    if scale == 1:
        return 1
    stored_width, stored_height = im.size
    result = im.draft("RGB", (stored_width // scale, stored_height // scale))
    if result is None:  # not a JPEG, or one the decoder cannot scale
        return 1
    actual = round(stored_width / result[1][2])
    logger.debug("Decoding %s at 1/%d scale for target %s", im.format, actual, target)
    return actual


def _scaled_box(box: _Box, scale: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The integer pixel box covering ``box / scale``, rounded outwards, within ``size``."""
    return (
        max(0, math.floor(box[0] / scale)),
        max(0, math.floor(box[1] / scale)),
        min(size[0], math.ceil(box[2] / scale)),
        min(size[1], math.ceil(box[3] / scale)),
    )


def _to_rgb(path: Path, im: Image.Image) -> Image.Image:
    """Convert a decoded image to 8-bit RGB (see the module docstring for the rules)."""
    if im.mode in _HIGH_BIT_MODES:
        return Image.fromarray(_to_uint8(np.asarray(im))).convert("RGB")
    try:
        if im.mode in _ALPHA_MODES or "transparency" in im.info:
            rgba = im.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
        return im if im.mode == "RGB" else im.convert("RGB")
    except ValueError as exc:
        raise ImageReadError(
            f"Image file {path} has pixel mode {im.mode!r}, which cannot be converted to RGB; "
            "convert it to an 8-bit format such as PNG or JPEG."
        ) from exc


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Map integer or float pixel values to uint8 by scaling, never by clipping."""
    data = values.astype(np.float64)
    finite = data[np.isfinite(data)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if values.dtype.kind in "iu" and low >= 0 and high <= 65535:
        low, high = 0.0, 65535.0  # 16-bit range: keep absolute brightness
    data = np.nan_to_num(data, nan=low, posinf=high, neginf=low)
    scaled = (data - low) * (255.0 / (high - low)) if high > low else np.zeros_like(data)
    return np.rint(scaled).astype(np.uint8)
