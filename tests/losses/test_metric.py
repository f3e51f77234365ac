"""Triplet (pml adapter) and centre loss."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pytorch_metric_learning import distances, losses, miners

from tests.losses.helpers import pk_batch
from wildreid.losses import CompositeLoss, LossSpec, bnneck_baseline_specs, build_loss


def _triplet(num_classes: int = 4, **params: object) -> CompositeLoss:
    spec = LossSpec("triplet", params=params)
    return build_loss([spec], num_classes=num_classes, embedding_dim=8)


def _pml_reference(mining: str, margin: float = 0.3, **loss_kwargs: Any) -> tuple[Any, Any]:
    miner = (
        miners.BatchHardMiner(distance=distances.LpDistance())
        if mining == "hard"
        else miners.TripletMarginMiner(
            margin=margin, type_of_triplets=mining, distance=distances.LpDistance()
        )
    )
    loss = losses.TripletMarginLoss(margin=margin, distance=distances.LpDistance(), **loss_kwargs)
    return miner, loss


def test_triplet_equals_pml_loss_and_miner_for_each_mining_and_modes_differ() -> None:
    features, labels = pk_batch()
    values = {}
    for mining in ("all", "semihard", "hard"):
        out = _triplet(mining=mining)(features=features, embeddings=features, labels=labels)
        miner, loss = _pml_reference(mining)
        triplets = miner(features, labels)
        expected = loss(features, labels, triplets)
        torch.testing.assert_close(out.total, expected)
        assert out.parts == {"triplet": pytest.approx(expected.item())}
        assert out.n_triplets == len(triplets[0]) > 0
        values[mining] = out.total.item()
    # the three miners select different triplets here, so a mix-up would be caught above
    assert len(set(values.values())) == 3
    default = _triplet()(features=features, embeddings=features, labels=labels)
    assert default.total.item() == pytest.approx(values["semihard"])


def test_triplet_soft_margin_and_cosine_distance_follow_pml() -> None:
    features, labels = pk_batch(seed=1)
    out = _triplet(mining="hard", soft_margin=True)(
        features=features, embeddings=features, labels=labels
    )
    miner, loss = _pml_reference("hard", smooth_loss=True)
    expected = loss(features, labels, miner(features, labels))
    torch.testing.assert_close(out.total, expected)
    hinge = _triplet(mining="hard")(features=features, embeddings=features, labels=labels)
    assert hinge.total.item() != pytest.approx(out.total.item())

    out = _triplet(mining="all", distance="cosine", margin=0.2)(
        features=features, embeddings=features, labels=labels
    )
    cos = distances.CosineSimilarity()
    miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="all", distance=cos)
    loss = losses.TripletMarginLoss(margin=0.2, distance=distances.CosineSimilarity())
    triplets = miner(features, labels)
    torch.testing.assert_close(out.total, loss(features, labels, triplets))
    assert out.n_triplets == len(triplets[0]) > 0


@pytest.mark.parametrize("mining", ["all", "semihard", "hard"])
def test_triplet_with_unique_labels_mines_nothing_and_is_a_differentiable_zero(
    mining: str,
) -> None:
    features, _ = pk_batch()
    labels = torch.arange(len(features))
    loss = _triplet(num_classes=len(labels), mining=mining)
    out = loss(features=features, embeddings=features, labels=labels)
    assert out.n_triplets == 0
    assert out.total.item() == 0.0
    out.total.backward()
    assert features.grad is not None and float(features.grad.abs().sum()) == 0.0


def test_triplet_gradient_reaches_the_features() -> None:
    features, labels = pk_batch()
    out = _triplet(mining="hard")(features=features, embeddings=features, labels=labels)
    out.total.backward()
    assert torch.isfinite(out.total) and out.total.item() > 0
    assert features.grad is not None and float(features.grad.abs().sum()) > 0


def test_baseline_triplet_is_luo_batch_hard_on_raw_features_averaged_over_anchors() -> None:
    features, labels = pk_batch(scale=3.0)  # un-normalised: normalising would change it
    with torch.no_grad():  # identity 0 far from the rest: its anchors satisfy the margin
        features[labels == 0, 0] += 20.0
    composite = build_loss(bnneck_baseline_specs(), num_classes=4, embedding_dim=8)
    triplet = composite.components["triplet"]
    value, mined = triplet(features, labels)
    with torch.no_grad():
        dist = torch.cdist(features, features)
        same = labels[:, None] == labels[None, :]
        hardest_positive = dist.masked_fill(~same, 0).amax(dim=1)
        hardest_negative = dist.masked_fill(same, float("inf")).amin(dim=1)
        hinge = torch.relu(hardest_positive - hardest_negative + 0.3)
        expected = hinge.mean()  # over every anchor, zero terms included
    assert (hinge == 0).any() and (hinge > 0).any()
    assert mined == len(features)
    torch.testing.assert_close(value, expected)


def _center(weight: float = 1.0, **params: object) -> CompositeLoss:
    return build_loss(
        [LossSpec("center", weight=weight, params=params)], num_classes=2, embedding_dim=2
    )


def test_center_loss_by_hand_on_2d_points_with_centre_gradients() -> None:
    composite = _center()
    centers = composite.components["center"].centers
    with torch.no_grad():
        centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    out = composite(features=features, embeddings=features, labels=labels)
    # squared distances to the own centre: 1, 1 + 1, 1 + 0 -> mean 4/3
    assert out.total.item() == pytest.approx(4 / 3)
    out.total.backward()
    # d/dc_j mean_i ||f_i - c_j||^2 = -(2/B) sum_{i: y_i = j} (f_i - c_j)
    torch.testing.assert_close(centers.grad, torch.tensor([[-2 / 3, 0.0], [0.0, -2 / 3]]))
    torch.testing.assert_close(
        features.grad, torch.tensor([[2 / 3, 0.0], [-2 / 3, 2 / 3], [2 / 3, 0.0]])
    )


def test_center_parameter_group_reproduces_the_baseline_centre_update() -> None:
    weight, center_lr = 0.0005, 0.5
    features, labels = pk_batch(ids=2, dim=2)
    features = features.detach()
    composite = _center(weight=weight, center_lr=center_lr)
    (group,) = composite.parameter_groups()
    assert group.own_sgd and group.weight_decay == 0.0
    assert group.lr == pytest.approx(center_lr / weight)
    assert group.params == (composite.components["center"].centers,)
    start = composite.components["center"].centers.detach().clone()

    # the baseline: grads of weight * loss, rescaled by 1 / weight, SGD(lr=center_lr)
    reference = torch.nn.Parameter(start.clone())
    (weight * ((features - reference[labels]) ** 2).sum(dim=1).mean()).backward()
    assert reference.grad is not None
    reference.grad *= 1 / weight
    torch.optim.SGD([reference], lr=center_lr).step()

    composite(features=features, embeddings=features, labels=labels).total.backward()
    torch.optim.SGD([group.to_torch()], lr=123.0).step()  # the group's lr wins
    centers = composite.components["center"].centers
    torch.testing.assert_close(centers.detach(), reference.detach())
    assert not torch.equal(centers.detach(), start)
