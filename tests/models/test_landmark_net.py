"""The Landmark-Id network: widened first convolution, reconstruction block, its loss."""

from __future__ import annotations

import pytest
import torch

from wildreid.models.heads import EmbeddingNet, NetConfig
from wildreid.models.landmark import ReconstructionBlock, first_conv_name, widen_first_conv

CONFIG = NetConfig(
    backbone="test_efficientnet",
    pooling="gem",
    embedding_dim=16,
    bnneck=True,
    landmarks=("tip", "left", "right"),
    reconstruction_weight=1.0,
)


def test_reconstruction_block_decodes_to_k_heatmaps_at_64() -> None:
    block = ReconstructionBlock(16, 3)
    out = block(torch.randn(2, 16))
    assert out.shape == (2, 3, 64, 64)
    ups = [m for m in block.blocks if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 3 and all(m.mode == "bilinear" for m in ups)
    loss = block.loss(torch.randn(2, 16), torch.rand(2, 3, 32, 32))
    assert loss.ndim == 0 and float(loss.detach()) > 0


def test_landmark_net_takes_3_plus_k_channels_and_adds_its_loss() -> None:
    torch.manual_seed(0)
    net = EmbeddingNet.from_config(CONFIG)
    assert net.landmarks == ("tip", "left", "right")
    x = torch.randn(2, 6, 32, 32)
    x[:, 3:] = x[:, 3:].sigmoid()
    pre, post, own = net.forward_train(x)
    assert pre.shape == post.shape == (2, 16)
    assert own.ndim == 0 and float(own.detach()) > 0
    assert net(x).shape == (2, 16)
    groups = net.module_groups()
    assert list(groups) == ["stem", "backbone", "head", "reconstruction"]
    rgb = EmbeddingNet.from_config(NetConfig(backbone="test_efficientnet", embedding_dim=16))
    _, _, zero = rgb.forward_train(torch.randn(2, 3, 32, 32))
    assert float(zero) == 0.0 and rgb.own_loss_names() == []


def test_widening_keeps_the_pretrained_rgb_filters() -> None:
    rgb = EmbeddingNet.from_config(NetConfig(backbone="test_efficientnet", embedding_dim=16))
    name = first_conv_name(rgb.backbone)
    state = rgb.backbone.state_dict()
    wide = widen_first_conv(state, name, 6)
    old, new = state[f"{name}.weight"], wide[f"{name}.weight"]
    assert new.shape[1] == 6
    torch.testing.assert_close(new[:, :3], old)
    assert 0 < float(new[:, 3:].std()) < float(old.std())
    net = EmbeddingNet.from_config(CONFIG)
    net.backbone.load_state_dict(wide)  # fits the 3 + k backbone


def test_net_config_round_trips_landmarks() -> None:
    again = NetConfig.from_dict(CONFIG.to_dict())
    assert again == CONFIG


def test_widening_refuses_fewer_channels() -> None:
    from wildreid.errors import WeightsError

    with pytest.raises(WeightsError, match="more than"):
        widen_first_conv({"c.weight": torch.zeros(4, 6, 3, 3)}, "c", 3)
