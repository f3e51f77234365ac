"""Classification losses on the post-BNNeck embeddings: softmax CE, ArcFace, sub-center ArcFace.

``arcface`` and fixed-margin ``subcenter_arcface`` wrap pml's ``ArcFaceLoss`` and
``SubCenterArcFaceLoss``. pml takes margins in **degrees**; the options here are in radians
(``margin_rad``) and are converted once, at construction. ``subcenter_arcface`` with
``dynamic_margin=True`` uses :class:`~wildreid.losses.margins.DynamicMarginSubCenterArcFace`
(pml has no per-class margins). ``softmax_ce`` is the BNNeck baseline's identity loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from pytorch_metric_learning import losses
from torch import nn

from wildreid.losses.base import LossComponent, LossContext, LossKind, require
from wildreid.losses.margins import DynamicMarginSubCenterArcFace, dynamic_margins

__all__ = [
    "ArcFace",
    "ArcFaceParams",
    "SoftmaxCEParams",
    "SoftmaxCrossEntropy",
    "SubCenterArcFace",
    "SubCenterArcFaceParams",
    "kinds",
]

_MAX_MARGIN_RAD = math.pi / 2


@dataclass(frozen=True)
class SoftmaxCEParams:
    """Options of ``softmax_ce``.

    Attributes:
        label_smoothing: torch's ``CrossEntropyLoss(label_smoothing=...)``: the target is
            ``(1 - eps) * one_hot + eps / C``, as in the BNNeck baseline.
    """

    label_smoothing: float = 0.1


class SoftmaxCrossEntropy(LossComponent):
    """Label-smoothed cross-entropy on a bias-free linear classifier of the embeddings.

    The classifier starts ``N(0, 0.001^2)``, as the BNNeck baseline's.

    Shapes:
        x: (B, D) embeddings; labels: (B,).
        output: scalar loss, ``None``.
    """

    def __init__(self, *, num_classes: int, embedding_dim: int, label_smoothing: float) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.classifier = nn.Linear(embedding_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        logits = self.classifier(x)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing), None

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor | None:
        logits: torch.Tensor = self.classifier(embeddings)
        return logits


def _build_softmax_ce(params: SoftmaxCEParams, ctx: LossContext) -> LossComponent:
    eps = params.label_smoothing
    require(0 <= eps < 1, ctx.name, "label_smoothing", f"must be in [0, 1), got {eps}")
    return SoftmaxCrossEntropy(
        num_classes=ctx.num_classes, embedding_dim=ctx.embedding_dim, label_smoothing=eps
    )


def _check_margin(ctx: LossContext, option: str, margin_rad: float) -> None:
    require(
        0 <= margin_rad <= _MAX_MARGIN_RAD,
        ctx.name,
        option,
        f"must be in [0, pi/2] radians, got {margin_rad} (degrees given by mistake? "
        f"{margin_rad} degrees = {math.radians(margin_rad):.4f} rad)",
    )


def _check_scale(ctx: LossContext, scale: float) -> None:
    require(scale > 0, ctx.name, "scale", f"must be > 0, got {scale}")


class _PmlClassifier(LossComponent):
    """A pml classification loss (``ArcFaceLoss`` family) holding its own weight ``W``."""

    def __init__(self, loss: Any) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        loss: torch.Tensor = self.loss(x, labels)
        return loss, None

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor | None:
        logits: torch.Tensor = self.loss.get_logits(embeddings)
        return logits


@dataclass(frozen=True)
class ArcFaceParams:
    """Options of ``arcface`` (Deng et al., CVPR 2019).

    Attributes:
        margin_rad: additive angular margin in radians (pml gets ``degrees(margin_rad)``).
        scale: logit scale ``s``.
    """

    margin_rad: float = 0.5
    scale: float = 64.0


class ArcFace(_PmlClassifier):
    """pml ``ArcFaceLoss``; its weight ``loss.W`` is (D, C).

    Shapes:
        x: (B, D) embeddings; labels: (B,).
        output: scalar loss, ``None``.
    """

    def __init__(self, *, num_classes: int, embedding_dim: int, params: ArcFaceParams) -> None:
        super().__init__(
            losses.ArcFaceLoss(
                num_classes=num_classes,
                embedding_size=embedding_dim,
                margin=math.degrees(params.margin_rad),
                scale=params.scale,
            )
        )


def _build_arcface(params: ArcFaceParams, ctx: LossContext) -> LossComponent:
    _check_margin(ctx, "margin_rad", params.margin_rad)
    _check_scale(ctx, params.scale)
    return ArcFace(num_classes=ctx.num_classes, embedding_dim=ctx.embedding_dim, params=params)


@dataclass(frozen=True)
class SubCenterArcFaceParams:
    """Options of ``subcenter_arcface`` (Deng et al., ECCV 2020).

    Attributes:
        sub_centers: K sub-centres per class.
        scale: logit scale ``s``.
        margin_rad: the fixed margin (``dynamic_margin=False`` only).
        dynamic_margin: per-class margins from the class counts (needs ``class_counts``);
            see :func:`~wildreid.losses.margins.dynamic_margins`.
        margin_min_rad: margin of the most common class (dynamic only).
        margin_max_rad: margin of the rarest class (dynamic only).
        margin_power: lambda in ``a * n**(-lambda) + b`` (dynamic only).
    """

    sub_centers: int = 3
    scale: float = 30.0
    margin_rad: float = 0.5
    dynamic_margin: bool = False
    margin_min_rad: float = 0.05
    margin_max_rad: float = 0.5
    margin_power: float = 0.25


class SubCenterArcFace(_PmlClassifier):
    """pml ``SubCenterArcFaceLoss`` (fixed margin) or the dynamic-margin module.

    Both keep the weight as ``loss.W``, (D, C * K), column ``c * K + k``.

    Shapes:
        x: (B, D) embeddings; labels: (B,).
        output: scalar loss, ``None``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        embedding_dim: int,
        params: SubCenterArcFaceParams,
        margins_rad: torch.Tensor | None = None,
    ) -> None:
        if margins_rad is None:
            loss: Any = losses.SubCenterArcFaceLoss(
                num_classes=num_classes,
                embedding_size=embedding_dim,
                margin=math.degrees(params.margin_rad),
                scale=params.scale,
                sub_centers=params.sub_centers,
            )
        else:
            loss = DynamicMarginSubCenterArcFace(
                num_classes=num_classes,
                embedding_dim=embedding_dim,
                margins_rad=margins_rad,
                scale=params.scale,
                sub_centers=params.sub_centers,
            )
        super().__init__(loss)


_DYNAMIC_ONLY = ("margin_min_rad", "margin_max_rad", "margin_power")


def _build_subcenter(params: SubCenterArcFaceParams, ctx: LossContext) -> LossComponent:
    name = ctx.name
    require(params.sub_centers >= 1, name, "sub_centers", f"must be >= 1, got {params.sub_centers}")
    _check_scale(ctx, params.scale)
    if not params.dynamic_margin:
        for option in _DYNAMIC_ONLY:
            require(option not in ctx.given, name, option, "only applies with dynamic_margin=true")
        _check_margin(ctx, "margin_rad", params.margin_rad)
        return SubCenterArcFace(
            num_classes=ctx.num_classes, embedding_dim=ctx.embedding_dim, params=params
        )
    require(
        "margin_rad" not in ctx.given,
        name,
        "margin_rad",
        "is the fixed margin; with dynamic_margin=true set margin_min_rad/margin_max_rad",
    )
    _check_margin(ctx, "margin_min_rad", params.margin_min_rad)
    _check_margin(ctx, "margin_max_rad", params.margin_max_rad)
    require(
        params.margin_min_rad <= params.margin_max_rad,
        name,
        "margin_min_rad",
        f"must be <= margin_max_rad ({params.margin_min_rad} > {params.margin_max_rad})",
    )
    require(
        params.margin_power > 0, name, "margin_power", f"must be > 0, got {params.margin_power}"
    )
    require(
        ctx.class_counts is not None,
        name,
        "dynamic_margin",
        "needs class_counts (training images per class): pass build_loss(class_counts=...)",
    )
    assert ctx.class_counts is not None
    margins = dynamic_margins(
        ctx.class_counts,
        margin_min_rad=params.margin_min_rad,
        margin_max_rad=params.margin_max_rad,
        power=params.margin_power,
    )
    return SubCenterArcFace(
        num_classes=ctx.num_classes,
        embedding_dim=ctx.embedding_dim,
        params=params,
        margins_rad=margins,
    )


def kinds() -> dict[str, LossKind[Any]]:
    """The classification losses by registered name."""
    return {
        "softmax_ce": LossKind(
            SoftmaxCEParams, _build_softmax_ce, "label-smoothed CE on a bias-free classifier"
        ),
        "arcface": LossKind(ArcFaceParams, _build_arcface, "pml ArcFace (margin in radians)"),
        "subcenter_arcface": LossKind(
            SubCenterArcFaceParams,
            _build_subcenter,
            "sub-center ArcFace, fixed (pml) or per-class dynamic margins",
        ),
    }
