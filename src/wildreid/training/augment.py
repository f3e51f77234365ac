"""Training-time augmentation: random crops, rotation, colour, blur, erasing, then the inference
normalisation.

Geometry follows :mod:`wildreid.data.transforms` so that training and inference see images the
same way: ``input_size`` is ``(height, width)``; ``crop_mode="center"`` first cuts the centred
region inference would keep (:func:`~wildreid.data.transforms.fit_box`); resizing is bilinear with
antialiasing on 8-bit tensors (torchvision's v2 kernels, the ones inference mirrors); values are
scaled and normalised by :func:`~wildreid.data.transforms.normalize` itself. With every
augmentation disabled the output equals :func:`~wildreid.data.transforms.preprocess`.

Randomness comes only from torch's global generator (torchvision's v2 transforms draw from it).
A DataLoader seeds it in every worker process (``base_seed + worker_id``, ``base_seed`` drawn
from the loader's ``generator``); in the main process (``num_workers=0``) seed it with
``torch.manual_seed`` for reproducible runs.

Horizontal flips are off by default: the left flank of an animal flipped looks like a right
flank, which re-identification must keep apart.

torchvision takes seconds to import, so it is imported only by :func:`build_train_transform`
(and by unpickling its result in a worker).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from wildreid.data.transforms import (
    Preprocess,
    decode_size,
    fit_box,
    image_to_tensor,
    normalize,
)
from wildreid.errors import ConfigError

__all__ = ["AugmentConfig", "TrainTransform", "build_train_transform"]


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply, and how strongly.

    Attributes:
        resized_crop_scale: area range of the random resized crop (share of the image);
            ``(1, 1)`` disables it (the whole image is resized, as at inference).
        resized_crop_ratio: aspect-ratio (width / height) range of the random resized crop.
        rotation_deg: random rotation within +-``rotation_deg``; 0 disables. Corners are filled
            with the mean colour (0 after normalisation).
        color_jitter: brightness, contrast and saturation strength; 0 disables.
        hue: hue jitter (0 to 0.5); 0 disables.
        blur_prob: probability of a Gaussian blur; 0 disables.
        blur_sigma: range of the blur's standard deviation, in output pixels.
        hflip: random horizontal flips (probability 0.5). Off by default: a flipped flank is the
            other side of the animal.
        random_erasing: probability of erasing a random rectangle (to the mean colour); the
            re-ID baseline uses 0.5.

    Raises:
        ConfigError: a field is out of range (the message names it).
    """

    resized_crop_scale: tuple[float, float] = (0.8, 1.0)
    resized_crop_ratio: tuple[float, float] = (0.75, 1.333)
    rotation_deg: float = 10.0
    color_jitter: float = 0.2
    hue: float = 0.0
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    hflip: bool = False
    random_erasing: float = 0.0

    def __post_init__(self) -> None:
        low, high = _pair("resized_crop_scale", self.resized_crop_scale)
        if not 0 < low <= high <= 1:
            raise ConfigError(f"resized_crop_scale needs 0 < low <= high <= 1, got {low, high}")
        low, high = _pair("resized_crop_ratio", self.resized_crop_ratio)
        if not 0 < low <= high:
            raise ConfigError(f"resized_crop_ratio needs 0 < low <= high, got {low, high}")
        low, high = _pair("blur_sigma", self.blur_sigma)
        if not 0 < low <= high:
            raise ConfigError(f"blur_sigma needs 0 < low <= high, got {low, high}")
        _number("rotation_deg", self.rotation_deg, 0.0, 180.0)
        _number("color_jitter", self.color_jitter, 0.0, math.inf)
        _number("hue", self.hue, 0.0, 0.5)
        _number("blur_prob", self.blur_prob, 0.0, 1.0)
        _number("random_erasing", self.random_erasing, 0.0, 1.0)
        if not isinstance(self.hflip, bool):
            raise ConfigError(f"hflip must be true or false, got {self.hflip!r}")

    @property
    def crops(self) -> bool:
        """Whether the random resized crop is enabled."""
        return tuple(float(v) for v in self.resized_crop_scale) != (1.0, 1.0)


class TrainTransform:
    """A picklable ``PIL image -> tensor`` training transform; build it with
    :func:`build_train_transform`.

    Shapes:
        ``__call__`` returns: (3, h, w) float32 with ``(h, w) = input_size``.
    """

    def __init__(
        self,
        *,
        pipeline: Callable[[torch.Tensor], torch.Tensor],
        erasing: Callable[[torch.Tensor], torch.Tensor] | None,
        fit: Preprocess,
        target_size: tuple[int, int],
    ) -> None:
        self._pipeline = pipeline
        self._erasing = erasing
        self._fit = fit
        self.target_size = target_size
        """``(width, height)`` to pass to ``load_image`` so JPEGs decode at reduced scale; larger
        than :func:`~wildreid.data.transforms.decode_size` by ``1 / sqrt(min crop scale)`` so the
        smallest random crop still has about ``input_size`` pixels."""

    @property
    def input_size(self) -> tuple[int, int]:
        """The output ``(height, width)``."""
        return self._fit.input_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = image_to_tensor(image)  # torchvision's pil_to_tensor, plus an RGB check
        if self._fit.crop_mode != "stretch":
            left, top, right, bottom = fit_box(
                image.width, image.height, input_size=self.input_size, crop_mode=self._fit.crop_mode
            )
            pixels = pixels[:, top:bottom, left:right]
        out = normalize(self._pipeline(pixels), mean=self._fit.mean, std=self._fit.std)
        if self._erasing is not None:
            out = self._erasing(out)
        return out.contiguous()


def build_train_transform(
    config: AugmentConfig,
    *,
    input_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    crop_mode: str = "stretch",
) -> TrainTransform:
    """The training transform for a model with this preprocessing (take it from the model card).

    Steps, on 8-bit tensors: (centre fit) -> random resized crop or resize to ``input_size`` ->
    horizontal flip -> rotation -> colour jitter -> blur -> scale and normalise -> random erasing.

    Args:
        config: which augmentations to apply.
        input_size: ``(height, width)`` of the output.
        mean: per-channel mean on the 0..1 scale.
        std: per-channel standard deviation on the 0..1 scale.
        crop_mode: ``stretch`` or ``center``, as the embedding space's.

    Raises:
        ConfigError: ``input_size``, ``mean``, ``std`` or ``crop_mode`` is invalid.
    """
    from torchvision.transforms import v2  # type: ignore[import-untyped]  # no py.typed

    if len(input_size) != 2 or len(mean) != 3 or len(std) != 3:
        raise ConfigError(
            f"input_size must be (height, width) and mean/std 3 numbers each, got "
            f"{input_size}, {mean}, {std}"
        )
    try:
        fit = Preprocess(
            input_size=(input_size[0], input_size[1]),
            mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            std=(float(std[0]), float(std[1]), float(std[2])),
            crop_mode=crop_mode,
        )
    except (ValueError, IndexError, TypeError) as exc:
        raise ConfigError(f"invalid preprocessing for the train transform: {exc}") from exc
    size = list(fit.input_size)
    bilinear = v2.InterpolationMode.BILINEAR
    steps: list[Any] = [
        v2.RandomResizedCrop(
            size,
            scale=_floats(config.resized_crop_scale),
            ratio=_floats(config.resized_crop_ratio),
            interpolation=bilinear,
            antialias=True,
        )
        if config.crops
        else v2.Resize(size, interpolation=bilinear, antialias=True)
    ]
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if config.rotation_deg > 0:
        fill = [round(255 * m) for m in fit.mean]
        steps.append(
            v2.RandomRotation(float(config.rotation_deg), interpolation=bilinear, fill=fill)
        )
    if config.color_jitter > 0 or config.hue > 0:
        strength = float(config.color_jitter) or None
        steps.append(v2.ColorJitter(strength, strength, strength, hue=float(config.hue) or None))
    if config.blur_prob > 0:
        sigma = _floats(config.blur_sigma)
        blur = v2.GaussianBlur(_kernel_size(sigma[1], min(size)), sigma=sigma)
        steps.append(blur if config.blur_prob >= 1 else v2.RandomApply([blur], p=config.blur_prob))
    erasing = (
        v2.RandomErasing(p=float(config.random_erasing), value=0)
        if config.random_erasing > 0
        else None
    )
    scale_low = _floats(config.resized_crop_scale)[0] if config.crops else 1.0
    width, height = decode_size(fit.input_size)
    target = (math.ceil(width / math.sqrt(scale_low)), math.ceil(height / math.sqrt(scale_low)))
    return TrainTransform(pipeline=v2.Compose(steps), erasing=erasing, fit=fit, target_size=target)


def _kernel_size(sigma: float, side: int) -> int:
    """An odd kernel covering +-3 sigma, small enough for reflect padding of a ``side`` image."""
    return max(1, min(2 * math.ceil(3 * sigma) + 1, 2 * side - 1))


def _floats(pair: Sequence[float]) -> tuple[float, float]:
    return float(pair[0]), float(pair[1])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _pair(name: str, value: object) -> tuple[float, float]:
    if not (
        isinstance(value, tuple | list) and len(value) == 2 and all(_is_number(v) for v in value)
    ):
        raise ConfigError(f"{name} must be two numbers (low, high), got {value!r}")
    return float(value[0]), float(value[1])


def _number(name: str, value: object, low: float, high: float) -> None:
    if not (_is_number(value) and isinstance(value, int | float) and low <= value <= high):
        raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
