"""Sub-center ArcFace with a margin per class, larger for rarer classes.

Dynamic margins come from Ha et al. 2020 (Google Landmark Recognition 2020, 3rd place) and
MiewID: the margin of class ``c`` with ``n_c`` training images is ``a * n_c**(-power) + b``,
``a`` and ``b`` chosen so the rarest class gets ``margin_max_rad`` and the most common
``margin_min_rad`` (:func:`dynamic_margins`).

Why not a subclass of pml's ``SubCenterArcFaceLoss``: its one scalar margin is applied in
``modify_cosine_of_target_classes(cosine_of_target_classes)`` (pml 2.9), which never sees the
labels. A subclass would have to pass per-row margins through instance state set in an
overridden ``compute_loss`` and rely on the row order of pml's boolean-mask gather: hooks
that are internals, not a documented extension point (subclassing an untyped class also
blinds mypy). :class:`DynamicMarginSubCenterArcFace` is a compact module instead (~40 lines
of maths); its weight ``W`` has pml's name, layout and initialisation, and with equal
margins it computes pml's loss (tested against pml with the same ``W``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from torch import nn

from wildreid.errors import ConfigError

__all__ = ["DynamicMarginSubCenterArcFace", "dynamic_margins"]

_ACOS_EPS = 1e-7  # keeps d/dx acos(x) finite at |x| = 1


def dynamic_margins(
    class_counts: Sequence[int],
    *,
    margin_min_rad: float,
    margin_max_rad: float,
    power: float,
) -> torch.Tensor:
    """Per-class ArcFace margins ``m_c = a * n_c**(-power) + b`` spanning the given range.

    With ``x_c = n_c**(-power)``, ``a = (max - min) / (max_c x_c - min_c x_c)`` and
    ``b = max - a * max_c x_c``: the class with the fewest images gets ``margin_max_rad``, the
    one with the most ``margin_min_rad``, the others interpolate on the ``n**(-power)`` curve
    (``power`` = lambda, 0.25 in the papers). Classes with no training image do not shape the
    range and get ``margin_max_rad`` (they never occur as a target). If all counts are equal
    every class gets ``margin_max_rad``.

    Shapes:
        output: (num_classes,) float32, radians.

    Raises:
        ConfigError: empty counts, a negative count, no class with an image.
    """
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if counts.numel() == 0 or bool((counts < 0).any()) or not bool((counts > 0).any()):
        raise ConfigError(
            "class_counts must be non-negative image counts per class with at least one "
            f"positive, got {list(class_counts)[:10]}"
        )
    present = counts > 0
    x = counts.clamp(min=1).pow(-power)
    x_lo, x_hi = x[present].min(), x[present].max()
    if float(x_hi - x_lo) <= 0:
        margins = torch.full_like(x, margin_max_rad)
    else:
        a = (margin_max_rad - margin_min_rad) / (x_hi - x_lo)
        b = margin_max_rad - a * x_hi
        margins = a * x + b
    margins[~present] = margin_max_rad
    return margins.to(torch.float32)


class DynamicMarginSubCenterArcFace(nn.Module):
    """Sub-center ArcFace (Deng et al., ECCV 2020) with a margin per class.

    Logits are ``scale * cos`` of the embedding to each class's nearest sub-centre, with the
    target class's ``cos(theta)`` replaced by ``cos(theta + m_y)`` (or, past
    ``theta > pi - m_y``, by ``cos(theta) - m_y * sin(m_y)`` to keep it decreasing, as pml and
    insightface do); the loss is the batch mean of the cross-entropy.

    Args:
        num_classes: C.
        embedding_dim: D.
        margins_rad: (C,) margin of each class in radians.
        scale: logit scale ``s``.
        sub_centers: K sub-centres per class.

    Shapes:
        embeddings: (B, D); labels: (B,) in [0, C).
        W: (D, C * K), column ``c * K + k`` is sub-centre k of class c (pml's layout).
        output: scalar.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        embedding_dim: int,
        margins_rad: torch.Tensor,
        scale: float,
        sub_centers: int,
    ) -> None:
        super().__init__()
        if margins_rad.shape != (num_classes,):
            raise ConfigError(
                f"margins_rad must have shape ({num_classes},), got {tuple(margins_rad.shape)}"
            )
        self.num_classes = num_classes
        self.sub_centers = sub_centers
        self.scale = scale
        self.W = nn.Parameter(torch.empty(embedding_dim, num_classes * sub_centers))
        nn.init.normal_(self.W)
        self.margins_rad: torch.Tensor
        self.register_buffer("margins_rad", margins_rad.detach().clone().float())

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine to each class's nearest sub-centre, (B, C)."""
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.W, dim=0)
        return cos.view(-1, self.num_classes, self.sub_centers).amax(dim=2)

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Scaled cosines without margin, (B, C), as pml's ``get_logits``."""
        return self.cosine(embeddings) * self.scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embeddings)
        target = cos.gather(1, labels[:, None]).squeeze(1)
        margin = self.margins_rad[labels]
        theta = torch.acos(target.clamp(-1 + _ACOS_EPS, 1 - _ACOS_EPS))
        modified = torch.where(
            theta <= math.pi - margin,
            torch.cos(theta + margin),
            torch.cos(theta) - margin * torch.sin(margin),
        )
        logits = cos.scatter(1, labels[:, None], modified[:, None]) * self.scale
        return F.cross_entropy(logits, labels)
