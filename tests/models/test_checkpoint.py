"""wildreid checkpoints: save -> load by path gives the same model; foreign files are named."""

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.builders import write_png
from tests.models.helpers import batch_for, one_torch_thread
from wildreid.errors import ConfigError, WeightsError
from wildreid.models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from wildreid.models.factory import load_model, save_checkpoint
from wildreid.models.heads import EmbeddingHead, EmbeddingNet, NetConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory with a checkpoint of a BNNeck + projection head on a tiny CNN."""
    model = load_model("timm/test_efficientnet.r160_in1k", weights="random")
    config = NetConfig("test_efficientnet.r160_in1k", pooling="gem", embedding_dim=24, bnneck=True)
    net = EmbeddingNet.from_config(config)
    with torch.no_grad():  # make the BN statistics non-trivial
        net.train()(batch_for(model.card, 4, seed=1))
    card = dataclasses.replace(model.card, name="my-run", embedding_dim=24)
    save_checkpoint(tmp_path / "run", net=net, card=card, config={"epochs": 3, "lr": [0.1]})
    return tmp_path / "run"


def test_round_trip_gives_identical_outputs(run_dir: Path) -> None:
    file = run_dir / "model.pt"
    assert file.is_file()
    loaded = load_checkpoint(run_dir)
    model = load_model(run_dir)
    assert model.card.name == model.space.model == "my-run"
    assert model.space.dim == 24 and model.space.input_size == (160, 160)
    assert model.space.weights_sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert model.card.weights_source == f"file:{file}"
    assert loaded.config == {"epochs": 3, "lr": [0.1]}
    assert not model.module.training
    raw = torch.load(file, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["version"] == 1
    reference = EmbeddingNet.from_config(NetConfig.from_dict(raw["net"]))
    reference.load_state_dict(raw["state_dict"])
    x = batch_for(model.card, 3)
    with torch.inference_mode():
        torch.testing.assert_close(model.module(x), reference.eval()(x), rtol=0, atol=0)
    # Loading the file itself (not the directory) is the same checkpoint.
    assert load_model(file).space == model.space


def test_round_trip_of_a_pretrained_registry_model(tmp_path: Path) -> None:
    model = load_model("efficientnet-lite0")
    path = save_checkpoint(tmp_path / "lite.pt", net=model.module, card=model.card)
    again = load_model(str(path))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(again.module(x), model.module(x), rtol=0, atol=0)
    assert again.space.input_size == model.space.input_size
    assert again.space.mean == model.space.mean
    assert again.space.weights_sha256 != model.space.weights_sha256  # another file


def test_state_dict_of_another_architecture_is_named(run_dir: Path, tmp_path: Path) -> None:
    raw = torch.load(run_dir / "model.pt", weights_only=True)
    state = raw["state_dict"]
    del state["head.bnneck.weight"]
    state["head.extra"] = torch.zeros(2)
    state["head.proj.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad.pt"
    torch.save(raw, bad)
    with pytest.raises(WeightsError) as caught:
        load_model(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: checkpoint from another architecture")
    assert "missing keys head.bnneck.weight" in message
    assert "unexpected keys head.extra" in message
    assert re.search(r"shape mismatch head\.proj\.weight \(3, 3\) vs \(24, \d+\)", message)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: torch.save({"conv.weight": torch.zeros(2)}, p), "a plain state dict of 1"),
        (lambda p: torch.save({"epoch": 3, "opt": {}}, p), "a dict with keys epoch, opt"),
        (lambda p: p.write_bytes(write_png(p.with_suffix(".png")).read_bytes()), "an image"),
        (lambda p: p.write_text("model: lite0\n"), "a text file"),
        (lambda p: p.write_bytes(b""), "an empty file"),
    ],
)
def test_a_non_checkpoint_file_is_described(
    tmp_path: Path, make: Callable[[Path], object], expected: str
) -> None:
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(WeightsError, match=f"{re.escape(str(path))} is not a wildreid checkpoint"):
        load_model(path)
    with pytest.raises(WeightsError, match=re.escape(expected)):
        load_model(path)


def test_newer_format_version_is_refused(run_dir: Path, tmp_path: Path) -> None:
    raw = torch.load(run_dir / "model.pt", weights_only=True)
    raw["version"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(raw, newer)
    with pytest.raises(WeightsError, match=r"format version 99.*upgrade wildreid"):
        load_model(newer)


def test_missing_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=re.escape(f"{tmp_path} has no model.pt")):
        load_model(tmp_path)
    with pytest.raises(WeightsError, match=r"runs/nothing/model\.pt does not exist"):
        load_model("runs/nothing/model.pt")


def test_weights_with_a_checkpoint_path_is_a_config_error(run_dir: Path) -> None:
    with pytest.raises(ConfigError, match="weights= cannot be combined"):
        load_model(run_dir, weights="other.pt")


def test_save_refuses_what_could_not_be_loaded_back(tmp_path: Path) -> None:
    model = load_model("timm/test_efficientnet.r160_in1k", weights="random")
    net = model.module
    assert isinstance(net, EmbeddingNet)
    with pytest.raises(ConfigError, match=r"config\.when is a \w*Path"):
        save_checkpoint(tmp_path, net=net, card=model.card, config={"when": tmp_path})
    with pytest.raises(ConfigError, match="embedding_dim 7"):
        save_checkpoint(tmp_path, net=net, card=dataclasses.replace(model.card, embedding_dim=7))
    bare = EmbeddingNet(net.backbone, EmbeddingHead(net.embedding_dim, pooling="none"))
    with pytest.raises(ConfigError, match="no NetConfig"):
        save_checkpoint(tmp_path, net=bare, card=model.card)
    assert not list(tmp_path.iterdir())  # nothing half-written
