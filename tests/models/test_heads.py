from collections.abc import Iterator

import pytest
import torch

from tests.models.helpers import one_torch_thread
from wildreid.errors import ConfigError
from wildreid.models.heads import EmbeddingHead, EmbeddingNet, GeM, NetConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def test_gem_with_p_1_is_average_pooling_and_large_p_approaches_max() -> None:
    x = torch.rand(2, 3, 4, 5) + 0.1
    torch.testing.assert_close(GeM(p=1.0)(x), x.mean(dim=(-2, -1)))
    torch.testing.assert_close(GeM(p=200.0)(x), x.amax(dim=(-2, -1)), rtol=0.02, atol=0.0)


def test_gem_matches_the_formula_clamps_and_learns_p() -> None:
    x = torch.randn(2, 3, 4, 4)
    gem = GeM(p=3.0, eps=1e-6)
    expected = x.clamp(min=1e-6).pow(3).mean(dim=(-2, -1)).pow(1 / 3)
    out = gem(x)
    torch.testing.assert_close(out, expected)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert gem.p.grad is not None and gem.p.grad.shape == (1,)
    assert "p=3.0000" in repr(gem)


@pytest.mark.parametrize(
    ("pooling", "shape", "dim", "expected_dim"),
    [("avg", (4, 8, 3, 3), None, 8), ("gem", (4, 8, 3, 3), 5, 5), ("none", (4, 8), None, 8)],
)
def test_head_output_shapes(
    pooling: str, shape: tuple[int, ...], dim: int | None, expected_dim: int
) -> None:
    head = EmbeddingHead(8, pooling=pooling, embedding_dim=dim)  # type: ignore[arg-type]
    out = head(torch.rand(shape))
    assert out.shape == (4, expected_dim)
    assert head.out_features == expected_dim


def test_head_avg_pooling_is_the_spatial_mean() -> None:
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(EmbeddingHead(8, pooling="avg")(x), x.mean(dim=(-2, -1)))


def test_bnneck_gives_pre_and_post_features_and_post_at_inference() -> None:
    torch.manual_seed(0)
    head = EmbeddingHead(8, pooling="none", embedding_dim=6, bnneck=True)
    assert head.bnneck is not None and head.proj is not None
    assert head.proj.bias is None  # redundant before a BatchNorm
    assert not head.bnneck.bias.requires_grad  # BNNeck bias frozen at zero
    x = torch.randn(16, 8) * 3 + 1
    pre, post = head.forward_pair(x)
    assert pre.shape == post.shape == (16, 6)
    torch.testing.assert_close(post.mean(dim=0), torch.zeros(6), atol=1e-5, rtol=0)
    assert not torch.allclose(pre, post)
    head.eval()
    pre_eval, post_eval = head.forward_pair(x)
    bn = head.bnneck
    expected = (pre_eval - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
    torch.testing.assert_close(post_eval, expected + bn.bias)
    torch.testing.assert_close(head(x), post_eval)


def test_without_bnneck_pre_and_post_are_the_same() -> None:
    head = EmbeddingHead(8, pooling="gem")
    pre, post = head.forward_pair(torch.rand(2, 8, 2, 2))
    assert pre is post


def test_head_rejects_bad_configuration_and_wrong_rank() -> None:
    with pytest.raises(ConfigError, match="pooling 'max'"):
        EmbeddingHead(8, pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="positive"):
        EmbeddingHead(8, embedding_dim=0)
    with pytest.raises(ConfigError, match="expects a 4-D input"):
        EmbeddingHead(8, pooling="avg")(torch.rand(2, 8))
    with pytest.raises(ConfigError, match="expects a 2-D input"):
        EmbeddingHead(8, pooling="none")(torch.rand(2, 8, 2, 2))


def test_net_from_config_feature_map_backbone_with_gem_projection_and_bnneck() -> None:
    config = NetConfig(backbone="test_efficientnet", pooling="gem", embedding_dim=16, bnneck=True)
    net = EmbeddingNet.from_config(config).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        features = net.backbone(x)
        out = net(x)
        pre, post = net.forward_features_pair(x)
    assert features.ndim == 4  # global_pool="" keeps the feature map
    assert out.shape == (2, 16) and net.embedding_dim == 16
    torch.testing.assert_close(out, post)
    assert pre.shape == (2, 16)
    assert net.config == config


def test_net_from_config_token_backbone_uses_its_own_pooling() -> None:
    net = EmbeddingNet.from_config(NetConfig(backbone="test_vit", pooling="none")).eval()
    with torch.inference_mode():
        out = net(torch.randn(2, 3, 160, 160))
    assert out.shape == (2, net.embedding_dim)
    assert net.head.pooling == "none"


def test_net_config_round_trips_through_plain_dicts() -> None:
    config = NetConfig("test_vit", pooling="none", backbone_kwargs={"img_size": 96})
    assert NetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="not a serialised NetConfig"):
        NetConfig.from_dict({"pooling": "avg"})
    with pytest.raises(ConfigError, match="pooling 'max'"):
        NetConfig.from_dict({"backbone": "x", "pooling": "max"})
    with pytest.raises(ConfigError, match="no architecture 'no_such_net'"):
        EmbeddingNet.from_config(NetConfig("no_such_net"))
