"""Metric losses on the pre-BNNeck features: triplet (pytorch-metric-learning) and centre loss.

``triplet`` is a thin adapter: pml's ``TripletMarginLoss`` fed by pml's ``BatchHardMiner``
(``mining="hard"``) or ``TripletMarginMiner`` (``"all"``, ``"semihard"``; same margin as the
loss). pml lacks centre loss, so :class:`CenterLoss` is written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pytorch_metric_learning import distances, losses, miners, reducers
from torch import nn

from wildreid.losses.base import LossComponent, LossContext, LossKind, LossParamGroup, require

__all__ = ["CenterLoss", "CenterParams", "TripletLoss", "TripletParams", "kinds"]

Mining = Literal["all", "semihard", "hard"]
Distance = Literal["euclidean", "cosine"]
Reduction = Literal["mean_nonzero", "mean"]


@dataclass(frozen=True)
class TripletParams:
    """Options of ``triplet``.

    Attributes:
        margin: in distance units (Euclidean distance, or cosine similarity for ``cosine``).
        mining: ``hard`` = batch-hard (hardest positive and negative per anchor, pml
            ``BatchHardMiner``); ``semihard`` / ``all`` = pml ``TripletMarginMiner``: the
            triplets violating the margin whose negative is farther than the positive /
            all triplets violating the margin.
        distance: ``euclidean`` (pml ``LpDistance``) or ``cosine`` (``CosineSimilarity``).
        normalize_embeddings: L2-normalise before Euclidean distances (pml's default); the
            BNNeck baseline uses raw features. Must stay true for ``cosine``.
        soft_margin: ``softplus(d_ap - d_an + margin)`` instead of the hinge (pml
            ``smooth_loss``; note the margin stays inside, unlike Hermans et al.'s soft margin).
        reduction: ``mean_nonzero`` averages the triplets with a positive loss (pml's
            default ``AvgNonZeroReducer``); ``mean`` averages every mined triplet, as the
            BNNeck baseline's ``MarginRankingLoss`` does.
    """

    margin: float = 0.3
    mining: Mining = "semihard"
    distance: Distance = "euclidean"
    normalize_embeddings: bool = True
    soft_margin: bool = False
    reduction: Reduction = "mean_nonzero"


class TripletLoss(LossComponent):
    """pml triplet margin loss on mined triplets of the pre-BNNeck features.

    Anchors whose identity has one image in the batch (or no other identity) form no
    triplet; with no triplet at all the loss is an exact, differentiable zero and the mined
    count is 0 (the trainer should warn: the sampler must put >= 2 images per identity).

    Shapes:
        x: (B, D) features; labels: (B,).
        output: scalar loss, number of mined triplets.
    """

    reads = "features"

    def __init__(self, params: TripletParams) -> None:
        super().__init__()
        self.params = params
        reducer: Any = reducers.MeanReducer() if params.reduction == "mean" else None
        self.loss: Any = losses.TripletMarginLoss(
            margin=params.margin,
            smooth_loss=params.soft_margin,
            distance=self._distance(),
            reducer=reducer,
        )
        self.miner: Any
        if params.mining == "hard":
            self.miner = miners.BatchHardMiner(distance=self._distance())
        else:
            self.miner = miners.TripletMarginMiner(
                margin=params.margin, type_of_triplets=params.mining, distance=self._distance()
            )

    def _distance(self) -> Any:
        if self.params.distance == "cosine":
            return distances.CosineSimilarity()
        return distances.LpDistance(normalize_embeddings=self.params.normalize_embeddings)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        triplets = self.miner(x, labels)
        loss: torch.Tensor = self.loss(x, labels, triplets)
        return loss, int(triplets[0].numel())


def _build_triplet(params: TripletParams, ctx: LossContext) -> LossComponent:
    require(params.margin >= 0, ctx.name, "margin", f"must be >= 0, got {params.margin}")
    require(
        params.distance == "euclidean" or params.normalize_embeddings,
        ctx.name,
        "normalize_embeddings",
        "must be true with distance='cosine' (cosine similarity always normalises)",
    )
    return TripletLoss(params)


@dataclass(frozen=True)
class CenterParams:
    """Options of ``center``.

    Attributes:
        center_lr: learning rate of the plain SGD that moves the centres (0.5 in Wen et al.
            and the BNNeck baseline); see :meth:`CenterLoss.parameter_groups`.
    """

    center_lr: float = 0.5


class CenterLoss(LossComponent):
    """Centre loss (Wen et al., ECCV 2016): pull each feature towards its class centre.

    ``loss = mean_i ||f_i - c_{y_i}||^2`` over the batch, the normalisation of the BNNeck
    baseline's code (Luo et al. 2019, ``layers/center_loss.py``: squared distances to the own
    centre, ``.mean()``). Wen et al. and Luo et al.'s paper write ``1/2 * sum_i`` instead; this
    form is twice ``mean_i 1/2 ||.||^2`` and keeps the baseline's weight (0.0005) and centre
    learning rate (0.5) meaningful as published. Centres start ``N(0, 1)`` as there.

    Shapes:
        x: (B, D) features; labels: (B,).
        output: scalar loss, ``None``.
    """

    reads = "features"

    def __init__(self, *, num_classes: int, embedding_dim: int, center_lr: float = 0.5) -> None:
        super().__init__()
        self.center_lr = center_lr
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        diff = x - self.centers[labels]
        return diff.pow(2).sum(dim=1).mean(), None

    def parameter_groups(self, *, name: str, weight: float) -> list[LossParamGroup]:
        """The centres in their own plain SGD at ``center_lr / weight``.

        The baseline steps the centres with ``SGD(lr=center_lr)`` after multiplying their
        gradients by ``1 / weight``, so the centres move independently of the loss weight.
        For plain SGD (no momentum, no weight decay) a learning rate of
        ``center_lr / weight`` on the unscaled gradients is the same update, so the trainer
        need not touch gradients: build one ``torch.optim.SGD`` for the ``own_sgd`` groups
        and leave it out of the learning-rate schedule (the baseline does not schedule it).
        """
        return [
            LossParamGroup(
                name=name,
                params=(self.centers,),
                lr=self.center_lr / weight,
                own_sgd=True,
                weight_decay=0.0,
            )
        ]


def _build_center(params: CenterParams, ctx: LossContext) -> LossComponent:
    require(params.center_lr > 0, ctx.name, "center_lr", f"must be > 0, got {params.center_lr}")
    return CenterLoss(
        num_classes=ctx.num_classes, embedding_dim=ctx.embedding_dim, center_lr=params.center_lr
    )


def kinds() -> dict[str, LossKind[Any]]:
    """The metric losses by registered name."""
    return {
        "triplet": LossKind(
            TripletParams, _build_triplet, "pml triplet margin loss with batch mining"
        ),
        "center": LossKind(CenterParams, _build_center, "centre loss (Wen et al. 2016)"),
    }
