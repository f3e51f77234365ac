"""Model-input preprocessing from an embedding space's facts: fit, resize, scale, normalise.

The facts come as plain values (``input_size``, ``mean``, ``std``, ``crop_mode``), or from a
:class:`~wildreid.types.EmbeddingSpace`; this module knows nothing of models.

Conventions (part of what a vector means, so they never change silently):
    * ``input_size`` is ``(height, width)`` like :class:`~wildreid.types.EmbeddingSpace`;
      :func:`decode_size` turns it into the ``target_size=(width, height)`` of
      :func:`~wildreid.data.images.load_image` so JPEGs decode at reduced scale.
    * ``crop_mode="stretch"`` resizes the whole image (or bbox crop) to ``input_size`` ignoring
      its aspect ratio: nothing is cut off, the usual re-ID choice.
    * ``crop_mode="center"`` cuts the largest centred region with the aspect ratio of
      ``input_size`` (rounded to whole pixels) and resizes it to ``input_size``. This is timm's
      eval transform with ``crop_pct=1`` (resize so the image covers the input, the shorter side
      for a square input, then centre-crop), up to sub-pixel rounding, but cheaper: the crop
      comes first, so only the kept pixels are resampled.
    * Resizing is bilinear with antialiasing, on 8-bit RGB tensors: the same kernel and code path
      as ``torchvision.transforms.v2.functional.resize(..., antialias=True)`` (its
      ``torch.nn.functional.interpolate`` call), about five times faster than Pillow's resize.
      torchvision itself is not imported: its import takes seconds, paid again by every
      DataLoader worker process.
    * Values are scaled to 0..1 then normalised as ``(x - mean) / std`` in float32, the
      operations of torchvision's ``to_dtype(scale=True)`` and ``normalize``, so the results are
      identical.

Resizing and normalising are separate steps (:func:`resize_image`, :func:`normalize`) so that a
pipeline can move 8-bit images between processes and devices and normalise whole batches where
the model runs; :func:`preprocess` does both for one image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from wildreid.types import CROP_MODES, EmbeddingSpace

__all__ = [
    "Preprocess",
    "Resize",
    "decode_size",
    "fit_box",
    "image_to_tensor",
    "normalize",
    "preprocess",
    "resize_image",
]

_NATIVE_UINT8_BILINEAR = ("AVX2", "AVX512")
_NATIVE_UINT8_MACHINES = ("aarch64", "arm64")


def decode_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """The ``target_size`` (width, height) to pass to ``load_image`` for this input size.

    Decoding keeps the crop at least this large, which is enough for both crop modes: the
    centred region of an image that covers ``input_size`` covers it too.
    """
    height, width = _check_size(input_size)
    return width, height


def fit_box(
    width: int, height: int, *, input_size: tuple[int, int], crop_mode: str
) -> tuple[int, int, int, int]:
    """The pixel box ``(left, top, right, bottom)`` of a ``width`` x ``height`` image to resize.

    ``stretch`` keeps the whole image; ``center`` keeps the largest centred region whose aspect
    ratio is that of ``input_size``, rounded to whole pixels (at least one).

    Raises:
        ValueError: a size is not positive or ``crop_mode`` is unknown.
    """
    out_height, out_width = _check_size(input_size)
    _check_crop_mode(crop_mode)
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}x{height} must be positive")
    if crop_mode == "stretch":
        return 0, 0, width, height
    scale = max(out_height / height, out_width / width)  # image covers the input at this scale
    crop_width = min(width, max(1, round(out_width / scale)))
    crop_height = min(height, max(1, round(out_height / scale)))
    left = (width - crop_width) // 2
    top = (height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as an 8-bit tensor, like torchvision's ``pil_to_tensor``.

    Shapes:
        returns: (3, H, W) uint8, a channels-last view of an (H, W, 3) array.

    Raises:
        ValueError: the image is not RGB (``load_image`` always returns RGB).
    """
    if image.mode != "RGB":
        raise ValueError(
            f"expected an RGB image, got mode {image.mode!r}; load images with "
            "wildreid.data.images.load_image, which converts every image to RGB"
        )
    pixels = np.array(image, dtype=np.uint8, copy=True)  # writable: torch warns on read-only
    return torch.from_numpy(pixels).permute(2, 0, 1)


def resize_image(
    image: Image.Image, *, input_size: tuple[int, int], crop_mode: str = "stretch"
) -> torch.Tensor:
    """Fit an RGB image to ``input_size`` (see the module docstring); values stay 0..255.

    Shapes:
        returns: (3, h, w) uint8 with ``(h, w) = input_size``.

    Raises:
        ValueError: the image is not RGB, or a size or ``crop_mode`` is invalid.
    """
    out_height, out_width = _check_size(input_size)
    left, top, right, bottom = fit_box(
        image.width, image.height, input_size=input_size, crop_mode=crop_mode
    )
    pixels = image_to_tensor(image)[:, top:bottom, left:right]
    if pixels.shape[1:] == (out_height, out_width):
        return pixels.contiguous()
    return _resize_uint8(pixels, (out_height, out_width))


def normalize(images: torch.Tensor, *, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Scale 8-bit images to 0..1 and normalise each channel as ``(x - mean) / std``.

    Works on any device and any number of leading dimensions; the input is not modified.

    Shapes:
        images: (..., 3, h, w) uint8.
        returns: (..., 3, h, w) float32, same device and memory format.

    Raises:
        ValueError: the tensor is not uint8 with 3 channels, or mean/std are not 3 numbers with
            std > 0.
    """
    if images.dtype != torch.uint8 or images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(
            f"expected (..., 3, h, w) uint8 images, got {tuple(images.shape)} {images.dtype}"
        )
    mean_t, std_t = _channel_stats(mean, std, images.device)
    scaled = images.to(torch.float32).mul_(1.0 / 255.0)
    return scaled.sub_(mean_t).div_(std_t)


def preprocess(
    image: Image.Image,
    *,
    input_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    crop_mode: str = "stretch",
) -> torch.Tensor:
    """Turn one RGB image into a model input: fit, resize, scale and normalise.

    Shapes:
        returns: (3, h, w) float32 with ``(h, w) = input_size``.

    Raises:
        ValueError: the image is not RGB, or a size, ``crop_mode``, mean or std is invalid.
    """
    resized = resize_image(image, input_size=input_size, crop_mode=crop_mode)
    return normalize(resized, mean=mean, std=std).contiguous()


@dataclass(frozen=True)
class Resize:
    """:func:`resize_image` as a picklable callable (for DataLoader worker processes).

    Shapes:
        ``__call__`` returns: (3, h, w) uint8.
    """

    input_size: tuple[int, int]
    crop_mode: str = "stretch"

    def __post_init__(self) -> None:
        _check_size(self.input_size)
        _check_crop_mode(self.crop_mode)

    @classmethod
    def from_space(cls, space: EmbeddingSpace) -> Resize:
        """The resize step of ``space``'s preprocessing."""
        return cls(input_size=space.input_size, crop_mode=space.crop_mode)

    @property
    def target_size(self) -> tuple[int, int]:
        """The ``target_size`` (width, height) for ``load_image``; see :func:`decode_size`."""
        return decode_size(self.input_size)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return resize_image(image, input_size=self.input_size, crop_mode=self.crop_mode)


@dataclass(frozen=True)
class Preprocess:
    """:func:`preprocess` as a picklable callable.

    Shapes:
        ``__call__`` returns: (3, h, w) float32.
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_mode: str = "stretch"

    def __post_init__(self) -> None:
        _check_size(self.input_size)
        _check_crop_mode(self.crop_mode)
        _check_stats(self.mean, self.std)

    @classmethod
    def from_space(cls, space: EmbeddingSpace) -> Preprocess:
        """The full preprocessing of ``space``."""
        return cls(
            input_size=space.input_size, mean=space.mean, std=space.std, crop_mode=space.crop_mode
        )

    @property
    def target_size(self) -> tuple[int, int]:
        """The ``target_size`` (width, height) for ``load_image``; see :func:`decode_size`."""
        return decode_size(self.input_size)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return preprocess(
            image,
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            crop_mode=self.crop_mode,
        )


def _resize_uint8(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of (3, H, W) uint8, as torchvision's v2 ``resize`` does it."""
    batch = pixels.unsqueeze(0)
    if _native_uint8_bilinear():
        out = torch.nn.functional.interpolate(
            batch, size=list(size), mode="bilinear", align_corners=False, antialias=True
        )
    else:  # torchvision's fallback on CPUs without the vectorised uint8 kernel
        resized = torch.nn.functional.interpolate(
            batch.to(torch.float32),
            size=list(size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        out = resized.round_().to(torch.uint8)
    return out[0].contiguous()


def _native_uint8_bilinear() -> bool:
    import platform

    return (
        torch.backends.cpu.get_cpu_capability() in _NATIVE_UINT8_BILINEAR
        or platform.machine() in _NATIVE_UINT8_MACHINES
    )


def _channel_stats(
    mean: Sequence[float], std: Sequence[float], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_stats(mean, std)
    mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32, device=device)
    std_t = torch.tensor([float(s) for s in std], dtype=torch.float32, device=device)
    return mean_t.view(3, 1, 1), std_t.view(3, 1, 1)


def _check_size(input_size: tuple[int, int]) -> tuple[int, int]:
    if (
        len(input_size) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in input_size)
        or min(input_size) < 1
    ):
        raise ValueError(f"input_size must be (height, width) positive integers, got {input_size}")
    return int(input_size[0]), int(input_size[1])


def _check_crop_mode(crop_mode: str) -> None:
    if crop_mode not in CROP_MODES:
        raise ValueError(f"crop_mode {crop_mode!r} not in {CROP_MODES}")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3 or min(float(s) for s in std) <= 0:
        raise ValueError(f"mean and std must be 3 numbers each with std > 0, got {mean}, {std}")
