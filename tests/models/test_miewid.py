"""MiewID: our rebuild loads a MiewIdNet-layout state dict (random weights, saved locally)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.models.helpers import one_torch_thread, random_state_dict, save_state_dict
from wildreid.errors import WeightsError
from wildreid.models.factory import load_model, model_card
from wildreid.models.heads import GeM
from wildreid.models.miewid import load_miewid, map_miewid_state_dict


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def miewid_layout_state(architecture: str, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """What the wbia-plugin-miew-id MiewIdNet state dict holds, with random values."""
    state = {
        f"backbone.{k}": v
        for k, v in random_state_dict(
            architecture, seed=seed, num_classes=0, global_pool=""
        ).items()
    }
    features = state["backbone.bn2.weight"].shape[0]
    generator = torch.Generator().manual_seed(seed + 1)
    state["pooling.p"] = torch.tensor([2.5])
    state["bn.weight"] = torch.rand(features, generator=generator) + 0.5
    state["bn.bias"] = torch.randn(features, generator=generator) * 0.1
    state["bn.running_mean"] = torch.randn(features, generator=generator) * 0.1
    state["bn.running_var"] = torch.rand(features, generator=generator) + 0.5
    state["bn.num_batches_tracked"] = torch.tensor(7)
    state["final.wmetric_classify.weight"] = torch.randn(30, features)  # training-only head
    return state


def reference_forward(
    state: dict[str, torch.Tensor], net: nn.Module, x: torch.Tensor
) -> torch.Tensor:
    """MiewIdNet.extract_feat written out: backbone features, GeM, BatchNorm1d."""
    features = net.backbone(x)  # backbone weights are asserted equal separately
    p = state["pooling.p"]
    pooled = (
        nn.functional.avg_pool2d(
            features.clamp(min=1e-6).pow(p), (features.size(-2), features.size(-1))
        )
        .pow(1.0 / p)
        .flatten(1)
    )
    return nn.functional.batch_norm(
        pooled,
        state["bn.running_mean"],
        state["bn.running_var"],
        state["bn.weight"],
        state["bn.bias"],
        training=False,
        eps=1e-5,
    )


def test_map_renames_the_documented_keys_and_drops_the_training_head() -> None:
    source = {
        "backbone.conv_stem.weight": torch.zeros(1),
        "backbone.classifier.weight": torch.zeros(1),
        "pooling.p": torch.zeros(1),
        "bn.running_var": torch.zeros(1),
        "final.kernel": torch.zeros(1),
        "something.else": torch.zeros(1),
    }
    assert sorted(map_miewid_state_dict(source)) == [
        "backbone.conv_stem.weight",
        "head.bnneck.running_var",
        "head.pool.p",
        "something.else",
    ]


def test_miewid_loads_the_real_architecture_from_a_local_file(tmp_path: Path) -> None:
    state = miewid_layout_state("efficientnetv2_rw_m")
    weights = save_state_dict(state, tmp_path / "pytorch_model.bin")
    model = load_model("miewid-msv3", weights=weights)
    net = model.module
    assert isinstance(net.head.pool, GeM)
    loaded = net.state_dict()
    torch.testing.assert_close(loaded["head.pool.p"], state["pooling.p"])
    torch.testing.assert_close(loaded["head.bnneck.running_var"], state["bn.running_var"])
    for key in ("conv_stem.weight", "blocks.5.0.conv_pw.weight", "bn2.running_mean"):
        torch.testing.assert_close(loaded[f"backbone.{key}"], state[f"backbone.{key}"])
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        out = net(x)
        expected = reference_forward(state, net, x)
    assert out.shape == (1, 2152) == (1, model.card.embedding_dim)
    torch.testing.assert_close(out, expected)


def test_miewid_card() -> None:
    card = model_card("miewid-msv3")
    assert card.input_size == (440, 440)
    assert card.mean == (0.485, 0.456, 0.406) and card.std == (0.229, 0.224, 0.225)
    assert card.embedding_dim == 2152 and card.architecture == "efficientnetv2_rw_m"
    assert card.weights_source == "hf-hub:conservationxlabs/miewid-msv3"


def test_miewid_safetensors_with_a_ddp_prefix_loads_into_a_small_backbone(tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in miewid_layout_state("test_efficientnet").items()}
    weights = save_state_dict(state, tmp_path / "model.safetensors")
    net, path = load_miewid(weights, architecture="test_efficientnet")
    assert path == weights
    torch.testing.assert_close(net.state_dict()["head.pool.p"], torch.tensor([2.5]))


def test_miewid_mismatch_names_missing_unexpected_and_misshapen_keys(tmp_path: Path) -> None:
    state = miewid_layout_state("test_efficientnet")
    del state["bn.bias"]
    state["neck.weight"] = torch.zeros(3)
    state["pooling.p"] = torch.zeros(2)
    weights = save_state_dict(state, tmp_path / "bad.bin")
    with pytest.raises(WeightsError) as caught:
        load_miewid(weights, architecture="test_efficientnet")
    message = str(caught.value)
    assert "checkpoint from another architecture" in message
    assert "missing keys head.bnneck.bias" in message
    assert "unexpected keys neck.weight" in message
    assert "shape mismatch head.pool.p (2,) vs (1,)" in message
    assert str(weights) in message
