"""Softmax CE, ArcFace (pml), sub-center ArcFace (pml, fixed) and dynamic margins (own)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from pytorch_metric_learning import losses

from tests.losses.helpers import pk_batch
from wildreid.errors import ConfigError
from wildreid.losses import CompositeLoss, LossSpec, build_loss, dynamic_margins
from wildreid.losses.margins import DynamicMarginSubCenterArcFace

C, D = 4, 8


def _build(name: str, class_counts: list[int] | None = None, **params: object) -> CompositeLoss:
    return build_loss(
        [LossSpec(name, params=params)], num_classes=C, embedding_dim=D, class_counts=class_counts
    )


def test_softmax_ce_is_torch_label_smoothed_cross_entropy_on_the_classifier_logits() -> None:
    embeddings, labels = pk_batch(seed=2)
    composite = _build("softmax_ce", label_smoothing=0.2)
    classifier = composite.components["softmax_ce"].classifier
    assert classifier.bias is None and classifier.weight.shape == (C, D)
    with torch.no_grad():
        classifier.weight.normal_()  # the N(0, 0.001) start makes every smoothing look alike
    out = composite(features=embeddings, embeddings=embeddings, labels=labels)
    logits = embeddings @ classifier.weight.T
    torch.testing.assert_close(out.total, F.cross_entropy(logits, labels, label_smoothing=0.2))
    assert out.total.item() != pytest.approx(F.cross_entropy(logits, labels).item())
    torch.testing.assert_close(composite.classification_logits(embeddings), logits)
    out.total.backward()
    assert classifier.weight.grad is not None and classifier.weight.grad.abs().sum() > 0
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0


def test_arcface_equals_pml_with_the_margin_in_degrees_and_the_same_weights() -> None:
    embeddings, labels = pk_batch(seed=3)
    composite = _build("arcface", margin_rad=0.3, scale=16.0)
    wrapped = composite.components["arcface"].loss
    assert wrapped.margin == pytest.approx(0.3)  # pml converts its degrees back to radians
    out = composite(features=embeddings, embeddings=embeddings, labels=labels)

    reference = losses.ArcFaceLoss(C, D, margin=math.degrees(0.3), scale=16.0)
    reference.W.data.copy_(wrapped.W.data)
    torch.testing.assert_close(out.total, reference(embeddings, labels))
    # radians passed straight to pml (as degrees) would give another value
    misread = losses.ArcFaceLoss(C, D, margin=0.3, scale=16.0)
    misread.W.data.copy_(wrapped.W.data)
    assert out.total.item() != pytest.approx(misread(embeddings, labels).item(), rel=1e-3)

    out.total.backward()
    assert wrapped.W.grad is not None and wrapped.W.grad.abs().sum() > 0
    logits = composite.classification_logits(embeddings)
    assert logits is not None and logits.shape == (len(labels), C)


def test_subcenter_fixed_margin_equals_pml_with_the_same_weights() -> None:
    embeddings, labels = pk_batch(seed=4)
    composite = _build("subcenter_arcface")
    wrapped = composite.components["subcenter_arcface"].loss
    assert wrapped.W.shape == (D, C * 3)
    out = composite(features=embeddings, embeddings=embeddings, labels=labels)
    reference = losses.SubCenterArcFaceLoss(
        num_classes=C, embedding_size=D, margin=math.degrees(0.5), scale=30.0, sub_centers=3
    )
    reference.W.data.copy_(wrapped.W.data)
    torch.testing.assert_close(out.total, reference(embeddings, labels))


def test_own_dynamic_module_with_equal_margins_equals_pml_in_value_and_gradients() -> None:
    embeddings, labels = pk_batch(seed=5)
    module = DynamicMarginSubCenterArcFace(
        num_classes=C, embedding_dim=D, margins_rad=torch.full((C,), 0.5), scale=30.0, sub_centers=3
    )
    with torch.no_grad():  # class 0's sub-centres opposite its first image: theta > pi - m
        module.W[:, 0:3] = -embeddings[0, :, None] + 0.1 * torch.randn(D, 3)
    reference = losses.SubCenterArcFaceLoss(
        num_classes=C, embedding_size=D, margin=math.degrees(0.5), scale=30.0, sub_centers=3
    )
    reference.W.data.copy_(module.W.data)
    assert module.cosine(embeddings)[0, 0] < math.cos(math.pi - 0.5)

    ours = module(embeddings, labels)
    (grad_ours,) = torch.autograd.grad(ours, embeddings)
    theirs = reference(embeddings, labels)
    (grad_theirs,) = torch.autograd.grad(theirs, embeddings)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad_ours, grad_theirs)
    torch.testing.assert_close(
        module.get_logits(embeddings), reference.get_logits(embeddings).detach()
    )


def test_dynamic_margins_by_hand_for_counts_1_10_100() -> None:
    margins = dynamic_margins([1, 10, 100], margin_min_rad=0.05, margin_max_rad=0.5, power=0.25)
    # a = 0.45 / (1 - 100**-0.25), b = 0.5 - a; middle: a * 10**-0.25 + b
    middle = 0.05 + 0.45 * (10**-0.25 - 100**-0.25) / (1 - 100**-0.25)
    assert middle == pytest.approx(0.211971, abs=1e-6)
    torch.testing.assert_close(margins, torch.tensor([0.5, middle, 0.05]))
    shuffled = dynamic_margins([100, 1, 10], margin_min_rad=0.05, margin_max_rad=0.5, power=0.25)
    torch.testing.assert_close(shuffled, torch.tensor([0.05, 0.5, middle]))
    # equal counts: no rarity to reward, every class the largest margin; empty classes too
    torch.testing.assert_close(
        dynamic_margins([0, 7, 7], margin_min_rad=0.1, margin_max_rad=0.4, power=0.25),
        torch.full((3,), 0.4),
    )
    with pytest.raises(ConfigError, match="class_counts"):
        dynamic_margins([0, 0], margin_min_rad=0.1, margin_max_rad=0.4, power=0.25)


def test_built_dynamic_loss_uses_the_count_margins() -> None:
    composite = build_loss(
        [LossSpec("subcenter_arcface", params={"dynamic_margin": True, "margin_power": 0.5})],
        num_classes=3,
        embedding_dim=D,
        class_counts=[4, 1, 16],
    )
    margins = composite.components["subcenter_arcface"].loss.margins_rad
    # x = n**-0.5 = 0.5, 1, 0.25 -> (x - 0.25) / 0.75 = 1/3, 1, 0
    torch.testing.assert_close(margins, torch.tensor([0.05 + 0.45 / 3, 0.5, 0.05]))


def test_rare_class_gets_the_larger_loss_with_identical_cosines() -> None:
    counts = [1, 10, 100]

    def batch_losses(dynamic: bool) -> tuple[float, float]:
        composite = build_loss(
            [LossSpec("subcenter_arcface", params={"dynamic_margin": dynamic, "sub_centers": 2})],
            num_classes=3,
            embedding_dim=3,
            class_counts=counts,
        )
        module = composite.components["subcenter_arcface"]
        with torch.no_grad():  # both sub-centres of class c along axis c
            module.loss.W.copy_(torch.eye(3).repeat_interleave(2, dim=1))
        rare = torch.tensor([[1.0, 0.5, 0.5]] * 2)  # class 0: 1 image
        common = torch.tensor([[0.5, 0.5, 1.0]] * 2)  # class 2: 100 images
        cos_rare = module.loss.get_logits(rare)
        cos_common = module.loss.get_logits(common)
        torch.testing.assert_close(cos_rare, cos_common[:, [2, 1, 0]])  # same geometry
        loss_rare, _ = module(rare, torch.tensor([0, 0]))
        loss_common, _ = module(common, torch.tensor([2, 2]))
        # in a mixed batch each row keeps its own class's margin
        mixed, _ = module(torch.cat([rare[:1], common[:1]]), torch.tensor([0, 2]))
        assert mixed.item() == pytest.approx((loss_rare.item() + loss_common.item()) / 2)
        return loss_rare.item(), loss_common.item()

    rare, common = batch_losses(dynamic=True)
    assert rare > 10 * common > 0
    fixed_rare, fixed_common = batch_losses(dynamic=False)  # control: one margin, one loss
    assert fixed_rare == pytest.approx(fixed_common, rel=1e-5)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("arcface", {"margin_rad": 28.6}, "degrees given by mistake"),
        ("arcface", {"scale": 0}, "'scale' must be > 0"),
        ("softmax_ce", {"label_smoothing": 1.0}, "'label_smoothing' must be in"),
        ("subcenter_arcface", {"sub_centers": 0}, "'sub_centers' must be >= 1"),
        ("subcenter_arcface", {"sub_centers": 2.5}, "'sub_centers' must be an integer"),
        ("subcenter_arcface", {"margin_min_rad": 0.1}, "only applies with dynamic_margin"),
        ("subcenter_arcface", {"dynamic_margin": True, "margin_rad": 0.3}, "is the fixed margin"),
        (
            "subcenter_arcface",
            {"dynamic_margin": True, "margin_min_rad": 0.6, "margin_max_rad": 0.5},
            "'margin_min_rad' must be <= margin_max_rad",
        ),
        ("subcenter_arcface", {"dynamic_margin": True, "margin_power": 0}, "'margin_power'"),
    ],
)
def test_bad_classification_options_name_the_loss_and_option(
    name: str, params: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        _build(name, class_counts=[1, 2, 3, 4], **params)
    assert f"loss {name!r}" in str(info.value)


def test_dynamic_margin_needs_class_counts() -> None:
    with pytest.raises(ConfigError, match="needs class_counts"):
        _build("subcenter_arcface", dynamic_margin=True)
