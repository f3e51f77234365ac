"""Training-state files: RNG capture, atomic save/load, architecture checks, the trained card."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wildreid.errors import ConfigError, WeightsError
from wildreid.models.cards import ModelCard
from wildreid.models.heads import EmbeddingNet, NetConfig
from wildreid.training.checkpoints import (
    TrainingState,
    absolute_paths,
    capture_rng,
    check_resumable,
    compare_configs,
    load_training_state,
    open_run_dir,
    restore_rng,
    save_training_state,
    trained_card,
)
from wildreid.training.config import DataConfig, ModelConfig, TrainConfig


def _net(dim: int = 8) -> EmbeddingNet:
    return EmbeddingNet.from_config(
        NetConfig("test_efficientnet", pooling="gem", embedding_dim=dim, bnneck=True)
    )


def _state(net: EmbeddingNet, losses: nn.Module, config: TrainConfig) -> TrainingState:
    assert net.config is not None
    from wildreid.config import to_dict

    return TrainingState(
        epoch=1,
        step=5,
        net=net.state_dict(),
        net_config=net.config.to_dict(),
        losses=losses.state_dict(),
        optimizers=[{"state": {}, "param_groups": []}],
        scheduler={"last_epoch": 5},
        scaler={},
        rng=[capture_rng()],
        sampler_epoch=1,
        best={"metrics": {"mAP": 0.5}, "epoch": 1, "bad_validations": 0},
        history=[{"epoch": 1, "loss": 1.0, "val_mAP": None}],
        config=to_dict(config),
    )


def _config(tmp_path: Path, **model: object) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(metadata=tmp_path / "m.csv", split_column="split"),
        model=ModelConfig(base="timm/test_efficientnet", **model),  # type: ignore[arg-type]
    )


def test_rng_round_trip() -> None:
    state = capture_rng()
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    restore_rng(state)
    again = (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert first == again


def test_state_round_trip_is_weights_only(tmp_path: Path) -> None:
    net, losses = _net(), nn.Linear(8, 3)
    state = _state(net, losses, _config(tmp_path))
    path = save_training_state(tmp_path / "last.pt", state)
    assert not list(tmp_path.glob("*.tmp"))
    torch.load(path, weights_only=True)  # plain values and tensors only
    loaded = load_training_state(path)
    assert loaded.epoch == 1 and loaded.step == 5 and loaded.history == state.history
    torch.testing.assert_close(loaded.net, state.net)
    check_resumable(loaded, path=path, net=net, losses=losses)


def test_unreadable_states(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_training_state(tmp_path / "last.pt")
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(WeightsError, match=r"not a wildreid training state.*text file"):
        load_training_state(text)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(WeightsError, match="plain state dict of 1 tensors"):
        load_training_state(other)


def test_state_of_another_architecture(tmp_path: Path) -> None:
    losses = nn.Linear(8, 3)
    state = _state(_net(8), losses, _config(tmp_path))
    with pytest.raises(WeightsError, match=r"another architecture \(embedding_dim: 8 -> 16"):
        check_resumable(state, path=tmp_path / "last.pt", net=_net(16), losses=losses)
    with pytest.raises(WeightsError, match=r"loss parameters.*shape mismatch"):
        check_resumable(state, path=tmp_path / "last.pt", net=_net(8), losses=nn.Linear(8, 4))


def test_compare_configs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from wildreid.config import to_dict

    old = to_dict(_config(tmp_path))
    compare_configs(old, old, path=tmp_path)
    changed = to_dict(_config(tmp_path, pooling="avg"))
    with pytest.raises(WeightsError, match=r"model\.pooling: 'gem' -> 'avg'"):
        compare_configs(old, changed, path=tmp_path)
    changed = {**old, "schedule": {**old["schedule"], "epochs": 20}}
    compare_configs(old, changed, path=tmp_path)
    assert "schedule.epochs: 10 -> 20" in caplog.text


def test_open_run_dir(tmp_path: Path) -> None:
    config = absolute_paths(_config(Path("relative")))
    assert config.data.metadata == (Path.cwd() / "relative" / "m.csv")
    run = tmp_path / "run"
    assert open_run_dir(run, config, resume=False, write=True) is None
    assert (run / "config.yaml").is_file()
    with pytest.raises(ConfigError, match=r"holds no last\.pt"):
        open_run_dir(run, config, resume=True, write=False)
    (run / "model.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds a training run"):
        open_run_dir(run, config, resume=False, write=False)


def test_trained_card_keeps_preprocessing_and_licence(tmp_path: Path) -> None:
    base = ModelCard(
        name="efficientnet-lite0",
        architecture="tf_efficientnet_lite0",
        embedding_dim=1280,
        input_size=(224, 224),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        licence="Apache-2.0",
        weights_source="pypi:x",
        weights_sha256="ab" * 32,
        crop_mode="center",
    )
    card = trained_card(
        base, run_dir=tmp_path / "lions", net=_net(8), input_size=(128, 96), losses="1 triplet"
    )
    assert card.name == "trained:lions" and card.embedding_dim == 8
    assert card.input_size == (128, 96) and card.mean == base.mean and card.crop_mode == "center"
    assert card.licence == "Apache-2.0" and card.weights_sha256 is None
    assert "efficientnet-lite0" in card.summary
