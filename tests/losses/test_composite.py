"""CompositeLoss: weighting, routing, registry meta-test, spec validation, the BNNeck baseline."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from tests.losses.helpers import pk_batch
from wildreid.errors import ConfigError, UnknownComponentError
from wildreid.losses import LOSSES, LossSpec, bnneck_baseline_specs, build_loss

C, D = 4, 8
COUNTS = [3, 1, 5, 2]


def _two_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    features, labels = pk_batch(ids=C, dim=D, seed=seed)
    embeddings, _ = pk_batch(ids=C, dim=D, seed=seed + 100)
    return features, embeddings, labels


def test_total_is_the_sum_of_weighted_parts_and_each_term_reads_its_input() -> None:
    features, embeddings, labels = _two_inputs()
    specs = [
        LossSpec("softmax_ce", weight=2.0),
        LossSpec("triplet", weight=0.5, params={"mining": "all"}),
        LossSpec("center", weight=0.01),
    ]
    composite = build_loss(specs, num_classes=C, embedding_dim=D)
    out = composite(features=features, embeddings=embeddings, labels=labels)
    assert list(out.parts) == ["softmax_ce", "triplet", "center"]
    assert out.total.item() == pytest.approx(sum(out.parts.values()), rel=1e-6)
    with torch.no_grad():
        ce, _ = composite.components["softmax_ce"](embeddings, labels)
        triplet, mined = composite.components["triplet"](features, labels)
        center, _ = composite.components["center"](features, labels)
        triplet_on_embeddings, _ = composite.components["triplet"](embeddings, labels)
    assert out.parts["softmax_ce"] == pytest.approx(2.0 * ce.item(), rel=1e-6)
    assert out.parts["triplet"] == pytest.approx(0.5 * triplet.item(), rel=1e-6)
    assert out.parts["center"] == pytest.approx(0.01 * center.item(), rel=1e-6)
    assert triplet_on_embeddings.item() != pytest.approx(triplet.item())  # routing matters
    assert out.n_triplets == mined > 0


def _spec_cases() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in LOSSES.names()]
    return [*cases, ("subcenter_arcface", {"dynamic_margin": True})]


@pytest.mark.parametrize(("name", "params"), _spec_cases())
def test_every_registered_loss_builds_and_backpropagates(name: str, params: dict[str, Any]) -> None:
    features, embeddings, labels = _two_inputs(seed=7)
    composite = build_loss(
        [LossSpec(name, params=params)], num_classes=C, embedding_dim=D, class_counts=COUNTS
    )
    out = composite(features=features, embeddings=embeddings, labels=labels)
    assert out.total.ndim == 0 and torch.isfinite(out.total) and out.total.item() > 0
    assert out.parts == {name: pytest.approx(out.total.item())}
    assert (out.n_triplets is not None) == (name == "triplet")
    out.total.backward()
    read, unread = (features, embeddings)
    if composite.components[name].reads == "embeddings":
        read, unread = unread, read
    assert read.grad is not None and read.grad.abs().sum() > 0
    assert unread.grad is None
    grouped = [p for group in composite.parameter_groups() for p in group.params]
    assert {id(p) for p in grouped} == {id(p) for p in composite.parameters()}
    assert len(grouped) == len(list(composite.parameters()))
    for parameter in composite.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    has_logits = composite.classification_logits(embeddings) is not None
    assert has_logits == (name not in ("triplet", "center"))


def test_bnneck_baseline_builds_backpropagates_and_learns() -> None:
    torch.manual_seed(0)
    inputs, labels = pk_batch(ids=C, per_id=4, dim=16, seed=3)
    inputs = inputs.detach()
    projection = nn.Linear(16, D, bias=False)
    bnneck = nn.BatchNorm1d(D)  # as EmbeddingHead(bnneck=True): BN with a frozen zero bias
    bnneck.bias.requires_grad_(False)
    specs = bnneck_baseline_specs()
    assert [(s.name, s.weight) for s in specs] == [
        ("softmax_ce", 1.0),
        ("triplet", 1.0),
        ("center", 0.0005),
    ]
    composite = build_loss(specs, num_classes=C, embedding_dim=D)
    groups = composite.parameter_groups()
    own = [g.to_torch() for g in groups if g.own_sgd]
    shared = [g.to_torch() for g in groups if not g.own_sgd]
    assert [g.name for g in groups if g.own_sgd] == ["center"]
    assert own[0]["lr"] == pytest.approx(0.5 / 0.0005)
    model_params = [projection.weight, bnneck.weight]
    optimizer = torch.optim.SGD([{"params": model_params}, *shared], lr=0.05)
    center_optimizer = torch.optim.SGD(own, lr=0.0)

    totals = []
    for _ in range(5):
        features = projection(inputs)
        embeddings = bnneck(features)
        out = composite(features=features, embeddings=embeddings, labels=labels)
        optimizer.zero_grad()
        center_optimizer.zero_grad()
        out.total.backward()
        assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
        optimizer.step()
        center_optimizer.step()
        totals.append(out.total.item())
    assert set(out.parts) == {"softmax_ce", "triplet", "center"}
    assert out.n_triplets == len(labels)
    assert all(math.isfinite(t) for t in totals) and totals[-1] < totals[0]


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        ([], "no losses given"),
        ([LossSpec("center"), LossSpec("center")], "'center' is listed more than once"),
        ([LossSpec("triplet", params={"margn": 0.2})], "unknown option 'margn'; valid options: "),
        ([LossSpec("triplet", params={"margin": "0.2"})], "'margin' must be a finite number"),
        ([LossSpec("triplet", params={"margin": math.nan})], "'margin' must be a finite"),
        ([LossSpec("triplet", params={"margin": -0.1})], "'margin' must be >= 0"),
        ([LossSpec("triplet", params={"soft_margin": 1})], "'soft_margin' must be true or"),
        ([LossSpec("triplet", params={"mining": "medium"})], r"\['all', 'semihard', 'hard'\]"),
        (
            [LossSpec("triplet", params={"distance": "cosine", "normalize_embeddings": False})],
            "'normalize_embeddings' must be true with distance='cosine'",
        ),
        ([LossSpec("center", params={"center_lr": 0})], "'center_lr' must be > 0"),
    ],
)
def test_bad_specs_raise_config_errors(specs: list[LossSpec], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_loss(specs, num_classes=C, embedding_dim=D)


def test_unknown_option_message_lists_every_valid_option() -> None:
    with pytest.raises(ConfigError) as info:
        build_loss([LossSpec("center", params={"lr": 0.5})], num_classes=C, embedding_dim=D)
    assert str(info.value) == "loss 'center': unknown option 'lr'; valid options: center_lr"


def test_unknown_loss_name_suggests_close_names() -> None:
    with pytest.raises(UnknownComponentError, match="did you mean 'triplet'"):
        build_loss([LossSpec("triplett")], num_classes=C, embedding_dim=D)
    with pytest.raises(UnknownComponentError, match="'arcface', 'subcenter_arcface'"):
        build_loss([LossSpec("arcfase")], num_classes=C, embedding_dim=D)


@pytest.mark.parametrize("weight", [-1.0, 0.0, math.inf, math.nan, True, "1"])
def test_weights_must_be_finite_and_positive(weight: Any) -> None:
    with pytest.raises(ConfigError, match="'triplet': weight must be a finite number > 0"):
        LossSpec("triplet", weight=weight)


def test_spec_params_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="'center': params must be a mapping"):
        LossSpec("center", params=[("center_lr", 1.0)])  # type: ignore[arg-type]


def test_spec_params_are_copied() -> None:
    params = {"margin": 0.1}
    spec = LossSpec("triplet", params=params)
    params["margin"] = 5.0
    assert spec.params == {"margin": 0.1}


def test_class_counts_must_match_the_classes() -> None:
    with pytest.raises(ConfigError, match="class_counts must hold 4"):
        build_loss([LossSpec("center")], num_classes=C, embedding_dim=D, class_counts=[1, 2])
    with pytest.raises(ConfigError, match="minimum -1"):
        build_loss([LossSpec("center")], num_classes=C, embedding_dim=D, class_counts=[1, 2, 3, -1])


def test_forward_rejects_bad_inputs() -> None:
    composite = build_loss([LossSpec("softmax_ce")], num_classes=C, embedding_dim=D)
    features, embeddings, labels = _two_inputs()
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 4\), got \[1, 4\]"):
        composite(features=features, embeddings=embeddings, labels=labels + 1)
    with pytest.raises(ConfigError, match="labels must be integer"):
        composite(features=features, embeddings=embeddings, labels=labels.float())
    with pytest.raises(ConfigError, match=r"embeddings must have shape \(B, 8\)"):
        composite(features=features, embeddings=embeddings[:, :4], labels=labels)
    with pytest.raises(ConfigError, match="differ"):
        composite(features=features, embeddings=embeddings[:5], labels=labels)
    with pytest.raises(ConfigError, match=r"labels must have shape \(12,\)"):
        composite(features=features, embeddings=embeddings, labels=labels[:5])
    out = composite(features=features, embeddings=embeddings, labels=labels.int())
    assert torch.isfinite(out.total)


@pytest.mark.parametrize("name", ["arcface", "subcenter_arcface", "triplet"])
def test_low_precision_inputs_are_computed_in_float32_and_leave_weights_alone(name: str) -> None:
    composite = build_loss([LossSpec(name)], num_classes=C, embedding_dim=D)
    features, _, labels = _two_inputs()
    half = features.detach().bfloat16().requires_grad_()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = composite(features=half, embeddings=half, labels=labels)
    assert out.total.dtype == torch.float32
    # pml's ArcFace would otherwise cast its weight W to bfloat16 in place
    assert all(p.dtype == torch.float32 for p in composite.parameters())
    out.total.backward()
    assert half.grad is not None and half.grad.dtype == torch.bfloat16
