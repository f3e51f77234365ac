"""End-to-end training on a tiny synthetic dataset with a tiny random timm network."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.models.helpers import random_state_dict, save_state_dict
from wildreid.config import load_config
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.errors import ConfigError, WeightsError
from wildreid.models.factory import load_model
from wildreid.training.checkpoints import load_training_state
from wildreid.training.config import TrainConfig
from wildreid.training.trainer import Trainer, TrainProgress, train

TINY_MODEL = "timm/test_efficientnet"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 train identities x 3 images (+ gallery/query subsets), 32 px; returns the folder."""
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_synthetic(root, config=SynthConfig(identities=6, size_px=32), workers=1)
    return root


def tiny_config(data: Path, *overrides: str, **sections: dict[str, Any]) -> TrainConfig:
    """A config training the tiny random net for 2 epochs of 2 batches (2 x 2 images)."""
    raw: dict[str, Any] = {
        "data": {
            "metadata": str(data / "metadata.csv"),
            "split": str(data / "split.csv"),
            "val_fraction": 0.34,
        },
        "model": {
            "base": TINY_MODEL,
            "weights": "random",
            "input_size": [32, 32],
            "embedding_dim": 16,
        },
        "sampler": {"p": 2, "k": 2, "batches_per_epoch": 2},
        "schedule": {"epochs": 2, "warmup_epochs": 1},
        "augment": {"blur_prob": 0.5, "random_erasing": 0.5},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return load_config(raw, TrainConfig, overrides=overrides)


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_training_state(run_dir / "last.pt").net


class _StopError(Exception):
    pass


def test_run_writes_a_loadable_model_and_logs(synth: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    events: list[TrainProgress] = []
    result = train(
        tiny_config(synth, schedule={"freeze_backbone_epochs": 1}),
        out_dir=run_dir,
        progress=events.append,
    )
    assert result.epochs_run == 2 and not result.stopped_early
    assert result.checkpoint_path == run_dir / "model.pt"
    assert result.best_epoch in (1, 2)
    assert set(result.best_metrics) >= {"top1", "mAP"}
    assert result.excluded_identities == 0
    assert [e.phase for e in events].count("epoch") == 2
    assert events[-1] == TrainProgress(2, 2, 2, 2, "epoch")

    loaded = load_model(run_dir)
    assert loaded.card.name == "trained:run"
    assert loaded.card.licence == load_model(TINY_MODEL, weights="random").card.licence
    assert loaded.space.input_size == (32, 32) and loaded.space.dim == 16
    assert loaded.card.crop_mode == "center"  # the base's preprocessing travels with it

    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss_softmax_ce", "loss_triplet", "loss_center", "n_triplets", "val_mAP"} <= set(
        rows[0]
    )
    assert float(rows[1]["val_mAP"]) == pytest.approx(result.history[1]["val_mAP"], abs=1e-5)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    saved = load_config(run_dir / "config.yaml", TrainConfig)
    assert saved.data.metadata.is_absolute() and saved.model.embedding_dim == 16


def test_same_seed_gives_identical_weights(synth: Path, tmp_path: Path) -> None:
    config = tiny_config(
        synth, schedule={"epochs": 1, "warmup_epochs": 0}, sampler={"batches_per_epoch": 3}
    )
    train(config, out_dir=tmp_path / "a")
    train(config, out_dir=tmp_path / "b")
    torch.testing.assert_close(_state(tmp_path / "a"), _state(tmp_path / "b"), rtol=0, atol=0)
    other = tiny_config(
        synth,
        "train.seed=1",
        schedule={"epochs": 1, "warmup_epochs": 0},
        sampler={"batches_per_epoch": 3},
    )
    train(other, out_dir=tmp_path / "c")
    with pytest.raises(AssertionError):
        torch.testing.assert_close(_state(tmp_path / "a"), _state(tmp_path / "c"))


def test_resume_continues_exactly(synth: Path, tmp_path: Path) -> None:
    config = tiny_config(synth)
    whole = train(config, out_dir=tmp_path / "whole")

    def stop_in_epoch_2(event: TrainProgress) -> None:
        if event.epoch == 2 and event.phase == "batch":
            raise _StopError

    with pytest.raises(_StopError):
        train(config, out_dir=tmp_path / "cut", progress=stop_in_epoch_2)
    assert load_training_state(tmp_path / "cut" / "last.pt").epoch == 1
    resumed = train(config, out_dir=tmp_path / "cut", resume=True)

    torch.testing.assert_close(_state(tmp_path / "whole"), _state(tmp_path / "cut"), rtol=0, atol=0)
    a = load_training_state(tmp_path / "whole" / "last.pt")
    b = load_training_state(tmp_path / "cut" / "last.pt")
    assert len(a.optimizers) == len(b.optimizers) == 2  # AdamW and the centres' own SGD
    for first, second in zip(a.optimizers, b.optimizers, strict=True):
        torch.testing.assert_close(first["state"], second["state"], rtol=0, atol=0)
        assert first["param_groups"] == second["param_groups"]
    torch.testing.assert_close(a.losses, b.losses, rtol=0, atol=0)
    assert resumed.epochs_run == 2
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
    rows = list(csv.DictReader((tmp_path / "cut" / "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_resume_checks_the_run(synth: Path, tmp_path: Path) -> None:
    config = tiny_config(synth, schedule={"epochs": 1, "warmup_epochs": 0})
    with pytest.raises(ConfigError, match=r"holds no last\.pt"):
        train(config, out_dir=tmp_path / "none", resume=True)
    train(config, out_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(config, out_dir=tmp_path / "run")
    other = tiny_config(synth, "model.embedding_dim=8", schedule={"epochs": 1, "warmup_epochs": 0})
    with pytest.raises(WeightsError, match=r"another architecture.*model\.embedding_dim: 16 -> 8"):
        train(other, out_dir=tmp_path / "run", resume=True)
    # A finished run resumes to nothing to do.
    again = train(config, out_dir=tmp_path / "run", resume=True)
    assert again.epochs_run == 1 and len(again.history) == 1


def test_frozen_backbone_keeps_the_base_weights(synth: Path, tmp_path: Path) -> None:
    weights = save_state_dict(
        random_state_dict("test_efficientnet", seed=3), tmp_path / "base.safetensors"
    )
    config = tiny_config(
        synth,
        f"model.weights={weights}",
        schedule={"epochs": 1, "warmup_epochs": 0, "freeze_backbone_epochs": 1},
    )
    trainer = Trainer(config, out_dir=tmp_path / "frozen")
    trainer.run()
    assert trainer.net is not None
    base = load_model(TINY_MODEL, weights=weights).module.backbone.state_dict()
    trained = {k: v.contiguous() for k, v in trainer.net.backbone.state_dict().items()}
    torch.testing.assert_close(trained, base, rtol=0, atol=0)
    assert not any(p.requires_grad for p in trainer.net.backbone.parameters())

    moving = Trainer(
        tiny_config(synth, f"model.weights={weights}", schedule={"epochs": 1, "warmup_epochs": 0}),
        out_dir=tmp_path / "moving",
    )
    moving.run()
    assert moving.net is not None
    with pytest.raises(AssertionError):
        torch.testing.assert_close(moving.net.backbone.state_dict(), base)


def _bn_statistics(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().contiguous()
        for k, v in net.state_dict().items()
        if k.endswith(("running_mean", "running_var"))
    }


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_backbone_batchnorm_statistics_stay_pretrained_unless_asked(
    synth: Path, tmp_path: Path, freeze_bn: bool
) -> None:
    weights = save_state_dict(
        random_state_dict("test_efficientnet", seed=3), tmp_path / "base.safetensors"
    )
    schedule = {"epochs": 1, "warmup_epochs": 0, "freeze_backbone_bn": freeze_bn}
    trainer = Trainer(
        tiny_config(synth, f"model.weights={weights}", schedule=schedule), out_dir=tmp_path / "r"
    )
    trainer.run()
    assert trainer.net is not None
    base = _bn_statistics(load_model(TINY_MODEL, weights=weights).module.backbone)
    trained = _bn_statistics(trainer.net.backbone)
    assert base and trained.keys() == base.keys()
    if freeze_bn:
        torch.testing.assert_close(trained, base, rtol=0, atol=0)
    else:
        with pytest.raises(AssertionError):
            torch.testing.assert_close(trained, base)
    # the backbone's weights learn either way, and so does the BNNeck's statistics
    assert trainer.net.head.bnneck is not None
    assert trainer.net.head.bnneck.num_batches_tracked.item() == 2


def test_spread_over_must_name_a_metadata_column(synth: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sampler.spread_over: 'clip' is not a column .*subset"):
        train(tiny_config(synth, sampler={"spread_over": "clip"}), out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad" / "model.pt").exists()
    result = train(tiny_config(synth, sampler={"spread_over": "subset"}), out_dir=tmp_path / "ok")
    assert result.epochs_run == 2


def test_warns_when_no_triplet_is_mined(
    synth: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Semi-hard mining with a zero margin never finds a triplet.
    config = tiny_config(
        synth,
        "losses=[{name: triplet, params: {margin: 0.0, mining: semihard}}]",
        schedule={"epochs": 1, "warmup_epochs": 0},
    )
    with caplog.at_level(logging.WARNING, logger="wildreid.training.trainer"):
        result = train(config, out_dir=tmp_path / "run")
    assert "no triplet mined" in caplog.text
    assert result.history[0]["zero_triplet_batches"] == 2
    assert result.history[0]["n_triplets"] == 0


def test_early_stopping_and_no_validation(synth: Path, tmp_path: Path) -> None:
    config = tiny_config(
        synth,
        "train.early_stopping_patience=1",
        "optim.lr=1e-12",  # nothing changes: mAP never improves after the first validation
        schedule={"epochs": 4, "warmup_epochs": 0, "freeze_backbone_epochs": 4},
    )
    result = train(config, out_dir=tmp_path / "early")
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1

    plain = tiny_config(synth, "data.val_fraction=0", schedule={"epochs": 1, "warmup_epochs": 0})
    result = train(plain, out_dir=tmp_path / "plain")
    assert result.best_metrics == {} and result.best_epoch == 1
    assert load_model(tmp_path / "plain").space.dim == 16
