"""Landmark-Id network parts: the widened first convolution and the reconstruction block.

A landmark-aware :class:`~wildreid.models.heads.EmbeddingNet` takes ``3 + k`` input channels
(RGB then one heatmap per landmark, :mod:`wildreid.data.landmarks`). Its backbone is the zoo
backbone built with ``in_chans = 3 + k``; :func:`widen_first_conv` copies the pretrained RGB
filters into it and initialises the heatmap filters small. :class:`ReconstructionBlock` decodes
the embedding back to ``k`` heatmaps at 64 x 64 (three bilinear x2 upsample, 3x3 conv, batch
norm, ReLU blocks from 8 x 8, then a 1x1 convolution to logits); the network's own loss is
``weight * BCE(reconstruction, input heatmaps resized to 64 x 64)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from torch import nn

from wildreid.errors import WeightsError

__all__ = ["RECONSTRUCTION_SIZE", "ReconstructionBlock", "first_conv_name", "widen_first_conv"]

RECONSTRUCTION_SIZE = 64
"""Side of the reconstructed heatmaps, in pixels."""


class ReconstructionBlock(nn.Module):
    """Embedding -> ``k`` heatmap logits at 64 x 64.

    Shapes:
        input: (B, D); output: (B, k, 64, 64) logits.
    """

    def __init__(self, embedding_dim: int, landmarks: int, *, channels: int = 64) -> None:
        super().__init__()
        self.channels = channels
        self.project = nn.Linear(embedding_dim, channels * 8 * 8)
        blocks: list[nn.Module] = []
        width = channels
        for _ in range(3):
            blocks += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(width, width // 2, 3, padding=1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(width, landmarks, 1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        x = self.project(embedding).view(-1, self.channels, 8, 8)
        logits: torch.Tensor = self.out(self.blocks(x))
        return logits

    def loss(self, embedding: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        """BCE between the reconstruction and ``heatmaps`` (B, k, H, W) resized to 64 x 64."""
        side = RECONSTRUCTION_SIZE
        target = F.interpolate(heatmaps.float(), size=(side, side), mode="area").clamp(0, 1)
        return F.binary_cross_entropy_with_logits(self(embedding).float(), target)


def first_conv_name(backbone: nn.Module) -> str:
    """The state-dict prefix of a timm backbone's first convolution (its ``first_conv``).

    Raises:
        WeightsError: the backbone does not say, or it is not a Conv2d.
    """
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    name = cfg.get("first_conv") if isinstance(cfg, dict) else None
    if not isinstance(name, str):
        raise WeightsError(f"{type(backbone).__name__} does not name its first convolution")
    module = backbone.get_submodule(name)
    if not isinstance(module, nn.Conv2d):
        raise WeightsError(f"{type(backbone).__name__}.{name} is not a Conv2d")
    return name


def widen_first_conv(
    state: dict[str, torch.Tensor], name: str, in_chans: int, *, seed: int = 0
) -> dict[str, torch.Tensor]:
    """``state`` with the first convolution's weight widened to ``in_chans`` inputs: the
    pretrained RGB filters kept, the new ones drawn small (a tenth of the RGB filters' spread).

    Raises:
        WeightsError: the weight is missing or has more inputs than ``in_chans``.
    """
    key = f"{name}.weight"
    if key not in state:
        raise WeightsError(f"the backbone weights have no {key}")
    old = state[key]
    if old.shape[1] == in_chans:
        return dict(state)
    if old.shape[1] > in_chans:
        raise WeightsError(f"{key} has {old.shape[1]} inputs, more than {in_chans}")
    generator = torch.Generator().manual_seed(seed)
    extra = torch.randn(
        old.shape[0], in_chans - old.shape[1], *old.shape[2:], generator=generator
    ) * (0.1 * float(old.float().std()))
    return {**state, key: torch.cat([old, extra.to(old.dtype)], dim=1)}
