"""Hub-backed models, tested offline: weights= goes through timm's real pretrained loader."""

import re
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from timm.models import get_pretrained_cfg, save_for_hf
from timm.models._hub import load_model_config_from_path

from tests.models.helpers import batch_for, one_torch_thread, random_state_dict, save_state_dict
from wildreid.errors import UnknownComponentError, WeightsError
from wildreid.models import hub
from wildreid.models.factory import MODELS, load_model, model_card
from wildreid.models.weights import file_sha256

MEGADESCRIPTORS = {
    "megadescriptor-t-224": ("T-224", "swin_tiny_patch4_window7_224", 768),
    "megadescriptor-s-224": ("S-224", "swin_small_patch4_window7_224", 768),
    "megadescriptor-b-224": ("B-224", "swin_base_patch4_window7_224", 1024),
    "megadescriptor-l-224": ("L-224", "swin_large_patch4_window7_224", 1536),
    "megadescriptor-l-384": ("L-384", "swin_large_patch4_window12_384", 1536),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network and an empty Hugging Face cache.

    huggingface_hub reads HF_HUB_OFFLINE and the cache location once at import, so the
    constants are patched as well as the environment.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("name", sorted(MEGADESCRIPTORS))
def test_megadescriptor_cards_are_consistent(name: str) -> None:
    suffix, architecture, dim = MEGADESCRIPTORS[name]
    card = model_card(name)
    px = int(suffix.split("-")[1])
    assert card.architecture == architecture
    assert card.embedding_dim == dim
    assert card.input_size == (px, px)
    assert card.mean == card.std == (0.5, 0.5, 0.5)
    assert card.crop_mode == "stretch"
    assert card.licence == "CC-BY-NC-4.0"
    assert card.weights_source == f"hf-hub:BVRA/MegaDescriptor-{suffix}"
    with torch.device("meta"):
        swin = timm.create_model(architecture, num_classes=0)
    assert tuple(swin.patch_embed.img_size) == card.input_size
    assert swin.num_features == dim


@pytest.mark.parametrize(
    ("name", "timm_name"),
    [
        ("dinov2-s", "vit_small_patch14_dinov2.lvd142m"),
        ("dinov2-b", "vit_base_patch14_dinov2.lvd142m"),
        ("dinov2-l", "vit_large_patch14_dinov2.lvd142m"),
        ("dinov3-s", "vit_small_patch16_dinov3.lvd1689m"),
        ("dinov3-b", "vit_base_patch16_dinov3.lvd1689m"),
        ("dinov3-l", "vit_large_patch16_dinov3.lvd1689m"),
        ("clip-vit-b-16", "vit_base_patch16_clip_quickgelu_224.openai"),
    ],
)
def test_timm_hosted_cards_follow_timms_pretrained_cfg(name: str, timm_name: str) -> None:
    card = model_card(name)
    cfg = get_pretrained_cfg(timm_name)
    assert cfg is not None
    assert card.input_size == tuple(cfg.input_size[1:])
    assert card.mean == pytest.approx(cfg.mean)
    assert card.std == pytest.approx(cfg.std)
    assert card.weights_source == f"hf-hub:{cfg.hf_hub_id}"
    assert MODELS.get(name).net_config.backbone == timm_name
    assert (
        card.licence
        == {"dinov2": "Apache-2.0", "dinov3": "DINOv3-License", "clip-v": "MIT"}[name[:6]]
    )


def test_megadescriptor_loads_a_local_swin_checkpoint_through_timm(tmp_path: Path) -> None:
    state = random_state_dict("swin_tiny_patch4_window7_224", num_classes=0)
    weights = save_state_dict(state, tmp_path / "model.safetensors")
    model = load_model("megadescriptor-t-224", weights=weights)
    loaded = model.module.state_dict()
    for key in ("patch_embed.proj.weight", "layers.2.blocks.3.mlp.fc1.weight", "norm.bias"):
        torch.testing.assert_close(loaded[f"backbone.{key}"], state[key])
    assert model.space.weights_sha256 == file_sha256(weights)
    assert model.card.weights_source == f"file:{weights}"
    assert model.space.mean == (0.5, 0.5, 0.5) and model.space.dim == 768
    with torch.inference_mode():
        out = model.module(batch_for(model.card, 2))
    assert out.shape == (2, 768)


def test_megadescriptor_rejects_weights_of_another_swin(tmp_path: Path) -> None:
    state = random_state_dict("swin_tiny_patch4_window7_224", num_classes=0)
    del state["norm.weight"]
    weights = save_state_dict(state, tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match=r"does not load into swin_tiny.*norm\.weight"):
        load_model("megadescriptor-t-224", weights=weights)


def test_megadescriptor_without_weights_offline_says_how_to_provide_them(
    hub_offline: None,
) -> None:
    with pytest.raises(WeightsError) as caught:
        load_model("megadescriptor-t-224")
    message = str(caught.value)
    assert "BVRA/MegaDescriptor-T-224" in message
    assert "https://huggingface.co/BVRA/MegaDescriptor-T-224" in message
    assert "weights=" in message and "--weights" in message
    assert "model.safetensors" in message


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(WeightsError, match=re.escape(f"{missing} does not exist")):
        load_model("megadescriptor-t-224", weights=missing)


def test_dinov2_loads_a_local_vit_checkpoint(tmp_path: Path) -> None:
    state = random_state_dict("vit_small_patch14_dinov2.lvd142m", num_classes=0)
    weights = save_state_dict(state, tmp_path / "dinov2.pth")
    model = load_model("dinov2-s", weights=weights)
    loaded = model.module.state_dict()
    for key in ("cls_token", "pos_embed", "blocks.11.attn.qkv.weight"):
        torch.testing.assert_close(loaded[f"backbone.{key}"], state[key])
    assert model.space.input_size == (518, 518)
    with torch.inference_mode():
        out = model.module(batch_for(model.card, 1))
    assert out.shape == (1, 384)


def test_timm_name_loads_with_preprocessing_from_timm(tmp_path: Path) -> None:
    card = model_card("timm/test_efficientnet.r160_in1k")
    assert card.input_size == (160, 160) and card.embedding_dim > 0
    assert card.crop_mode == "center"  # crop_pct 0.95 < 1
    assert card.weights_source == "timm:test_efficientnet.r160_in1k"
    # The checkpoint has the classifier timm's weights have; it is dropped after a strict load.
    state = random_state_dict("test_efficientnet.r160_in1k")
    weights = save_state_dict(state, tmp_path / "test_efficientnet.safetensors")
    model = load_model("timm/test_efficientnet.r160_in1k", weights=weights)
    torch.testing.assert_close(
        model.module.state_dict()["backbone.conv_stem.weight"], state["conv_stem.weight"]
    )
    with torch.inference_mode():
        assert model.module(batch_for(card, 2)).shape == (2, card.embedding_dim)


def test_unknown_timm_names_suggest_close_ones() -> None:
    with pytest.raises(UnknownComponentError, match="did you mean timm/resnet50"):
        model_card("timm/resnet5")
    with pytest.raises(UnknownComponentError, match=r"no pretrained tag 'bogus'.*a1_in1k"):
        model_card("timm/resnet50.bogus")


def test_hf_hub_name_builds_from_the_repositorys_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``hf-hub:`` repository as timm's save_for_hf writes it, served from a folder."""
    source = timm.create_model("test_vit.r160_in1k", num_classes=0)
    repo_dir = tmp_path / "repo"
    save_for_hf(source, str(repo_dir), safe_serialization=True)
    fetched: list[str] = []

    def config_from_folder(repo: str) -> object:
        fetched.append(repo)
        return load_model_config_from_path(repo_dir)

    monkeypatch.setattr(hub, "load_model_config_from_hf", config_from_folder)
    model = load_model("hf-hub:someone/test-vit", weights=repo_dir / "model.safetensors")
    assert fetched == ["someone/test-vit"]
    assert model.card.architecture == "test_vit"
    assert model.card.input_size == (160, 160)
    x = batch_for(model.card, 2)
    with torch.inference_mode():
        torch.testing.assert_close(model.module(x), source.eval()(x))
