"""Tiny labelled batches for the loss tests."""

from __future__ import annotations

import torch


def pk_batch(
    *, ids: int = 4, per_id: int = 3, dim: int = 8, seed: int = 0, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids`` identities x ``per_id`` images of random ``dim``-D features (a leaf tensor).

    Shapes:
        output: (ids * per_id, dim) float32 requiring grad, (ids * per_id,) int64.
    """
    generator = torch.Generator().manual_seed(seed)
    features = scale * torch.randn(ids * per_id, dim, generator=generator)
    labels = torch.arange(ids).repeat_interleave(per_id)
    return features.requires_grad_(), labels
