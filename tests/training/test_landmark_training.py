"""Landmark-Id through the normal trainer: stages, the card, evaluate --landmarks, bad data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tests.training.test_trainer import tiny_config
from wildreid.cli.app import app
from wildreid.config import InvalidValue
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.errors import ConfigError, MetadataError
from wildreid.models.factory import load_model
from wildreid.training.checkpoints import load_training_state
from wildreid.training.components import seed_all
from wildreid.training.config import ScheduleConfig, StageConfig
from wildreid.training.distributed import init_distributed
from wildreid.training.setup import build_setup
from wildreid.training.trainer import Trainer, train

LANDMARKS = "model.landmarks=[tip, left, right]"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm") / "data"
    generate_synthetic(root, config=SynthConfig(identities=6, size_px=32, supersample=1), workers=1)
    return root


@pytest.fixture(scope="module")
def stage1(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage 1: one epoch of the new first layer and the classifier, then everything."""
    out = tmp_path_factory.mktemp("stage1") / "run"
    config = tiny_config(
        synth,
        LANDMARKS,
        schedule={
            "epochs": 2,
            "warmup_epochs": 1,
            "stages": [{"epochs": 1, "train": ["stem", "head", "loss"]}],
        },
    )
    train(config, out_dir=out)
    return out


def test_stage_plan_and_validation() -> None:
    plan = ScheduleConfig(epochs=5, stages=(StageConfig(2, ("stem", "head")),)).stage_plan()
    assert [(s.epochs, s.train) for s in plan] == [(2, ("stem", "head")), (3, ("all",))]
    frozen = ScheduleConfig(epochs=3, freeze_backbone_epochs=1).stage_plan()
    assert "backbone" not in frozen[0].train and frozen[1].train == ("all",)
    with pytest.raises(InvalidValue, match="longer than epochs"):
        ScheduleConfig(epochs=2, stages=(StageConfig(3),))
    with pytest.raises(InvalidValue, match="only the last stage"):
        ScheduleConfig(epochs=4, stages=(StageConfig(None), StageConfig(1)))
    with pytest.raises(InvalidValue, match="must be one of"):
        StageConfig(1, ("everything",))


def test_stage1_trains_only_the_new_layer_and_classifier_first(synth: Path, tmp_path: Path) -> None:
    config = tiny_config(
        synth,
        LANDMARKS,
        "model.weights=random",
        schedule={"epochs": 1, "warmup_epochs": 0, "stages": [{"train": ["stem", "head", "loss"]}]},
    )
    trainer = Trainer(config, out_dir=tmp_path / "run")
    torch.manual_seed(0)
    trainer.run()
    net = trainer.net
    assert net is not None
    state = load_training_state(tmp_path / "run" / "last.pt")
    assert state.net.keys() == net.state_dict().keys()
    # the stem learned; the rest of the backbone (weights and BatchNorm statistics) is as built
    seed_all(config.train.seed)
    fresh = build_setup(
        config, init_distributed("cpu"), run_dir=tmp_path / "again"
    ).net.state_dict()
    trained = net.state_dict()
    stem = "backbone.conv_stem.weight"
    with pytest.raises(AssertionError):
        torch.testing.assert_close(trained[stem], fresh[stem])
    rest = [k for k in trained if k.startswith("backbone.") and k != stem]
    assert rest
    for key in rest:
        torch.testing.assert_close(trained[key], fresh[key], msg=key)
    with pytest.raises(AssertionError):  # the head learned
        torch.testing.assert_close(trained["head.bnneck.bias"], fresh["head.bnneck.bias"])


def test_card_records_landmarks_and_the_checkpoint_loads(stage1: Path) -> None:
    model = load_model(stage1)
    assert model.card.landmarks == ("tip", "left", "right")
    assert model.module(torch.zeros(1, 6, 32, 32)).shape == (1, 16)
    with (stage1 / "metrics.csv").open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2


def test_stage2_keeps_the_head_and_adds_reconstruction(
    synth: Path, stage1: Path, tmp_path: Path
) -> None:
    config = tiny_config(
        synth,
        LANDMARKS,
        f"model.base={stage1}",
        "model.weights=null",
        "model.reconstruction_weight=1.0",
        "model.keep_head=true",
        schedule={
            "epochs": 2,
            "warmup_epochs": 0,
            "stages": [{"epochs": 1, "train": ["reconstruction"]}, {"lr_scale": 0.1}],
        },
    )
    result = train(config, out_dir=tmp_path / "s2")
    assert "loss_reconstruction" in result.history[0]
    with (tmp_path / "s2" / "metrics.csv").open(encoding="utf-8") as stream:
        header = next(csv.reader(stream))
    assert "loss_reconstruction" in header
    base = load_model(stage1).module.state_dict()
    after_first = load_training_state(tmp_path / "s2" / "last.pt").net
    # epoch 2 fine-tunes at a tenth of the rate: the head moved only a little from stage 1
    key = (
        "head.projection.weight"
        if "head.projection.weight" in base
        else next(k for k in base if k.startswith("head."))
    )
    assert after_first[key].shape == base[key].shape
    lr_second = result.history[1]["lr"]
    assert lr_second <= 0.1 * config.optim.lr + 1e-12


def test_stage2_starts_from_stage1s_classifier_and_trains_the_block_alone(
    synth: Path, stage1: Path, tmp_path: Path
) -> None:
    overrides = [
        LANDMARKS,
        f"model.base={stage1}",
        "model.weights=null",
        "model.reconstruction_weight=1.0",
        "model.keep_head=true",
    ]
    alone = {"epochs": 1, "warmup_epochs": 0, "stages": [{"train": ["reconstruction"]}]}
    train(tiny_config(synth, *overrides, schedule=alone), out_dir=tmp_path / "s2")
    before = load_training_state(stage1 / "last.pt")
    after = load_training_state(tmp_path / "s2" / "last.pt")
    # The classifier (loss parameters) and the network stayed stage 1's; only the block learnt.
    assert after.losses and sorted(after.losses) == sorted(before.losses)
    for key, value in before.losses.items():
        torch.testing.assert_close(after.losses[key], value, rtol=0, atol=0)
    for key, value in before.net.items():
        torch.testing.assert_close(after.net[key], value, rtol=0, atol=0, msg=key)
    assert any(k.startswith("reconstruction.") for k in after.net)
    # A base run of other data has other classes: refused.
    other = tiny_config(synth, *overrides, "data.val_fraction=0.5", schedule=alone)
    with pytest.raises(ConfigError, match="another data section"):
        train(other, out_dir=tmp_path / "s2-other")


def test_model_and_data_landmarks_must_agree(synth: Path, tmp_path: Path, stage1: Path) -> None:
    config = tiny_config(synth, "model.landmarks=[tip, left, fin]")
    with pytest.raises(MetadataError, match=r"landmark 'right' is not one of the model's"):
        train(config, out_dir=tmp_path / "names")
    stage2 = tiny_config(
        synth, "model.landmarks=[tip, left]", f"model.base={stage1}", "model.weights=null"
    )
    with pytest.raises(ConfigError, match="differ from the base"):
        train(stage2, out_dir=tmp_path / "count")


def test_landmarks_outside_the_image_name_the_row(synth: Path, tmp_path: Path) -> None:
    meta = pd.read_csv(synth / "metadata.csv", dtype=str, keep_default_na=False)
    cell = json.loads(meta.loc[0, "landmarks"])
    cell["tip"] = [500, 5, 2]
    meta.loc[0, "landmarks"] = json.dumps(cell)
    bad = tmp_path / "bad"
    bad.mkdir()
    meta.to_csv(bad / "metadata.csv", index=False)
    (bad / "split.csv").write_bytes((synth / "split.csv").read_bytes())
    config = tiny_config(
        bad, LANDMARKS, f"data.root={synth}", "sampler.batches_per_epoch=8", "data.val_fraction=0"
    )
    with pytest.raises(MetadataError, match=r"metadata row 0 .*landmark 'tip' at \(500, 5\)"):
        train(config, out_dir=tmp_path / "run")


def _evaluate_args(synth: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """``wildreid evaluate`` of a landmark model on the synthetic split, on the CPU."""
    return [
        "evaluate",
        "--metadata",
        str(synth / "metadata.csv"),
        "--split",
        str(synth / "split.csv"),
        "--model",
        str(model),
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize("source", ["annotated", "none"])
def test_evaluate_takes_a_landmark_model(
    synth: Path, stage1: Path, tmp_path: Path, source: str
) -> None:
    out = tmp_path / source
    args = _evaluate_args(synth, stage1, out, "--landmarks", source, "--json")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["n_queries"] > 0


def test_evaluate_predicted_needs_a_predictor(synth: Path, stage1: Path, tmp_path: Path) -> None:
    args = _evaluate_args(synth, stage1, tmp_path / "p", "--landmarks", "predicted")
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "--landmark-model" in result.output + str(result.stderr)


def test_landmark_predictor_trains_from_the_cli_and_feeds_evaluate(
    synth: Path, stage1: Path, tmp_path: Path
) -> None:
    config = tmp_path / "lm.yaml"
    config.write_text(
        "task: landmarks\n"
        f"data: {{metadata: {synth / 'metadata.csv'}, split: {synth / 'split.csv'}, "
        "val_fraction: 0.2}\n"
        "landmarks: [tip, left, right]\nbackbone: test_efficientnet\npretrained: false\n"
        "input_size: [32, 32]\n"
        "epochs: 1\nbatch_size: 8\ndevice: cpu\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "--config", str(config), "--out", str(tmp_path / "pred"), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert 0 <= summary["error_pct"] <= 150
    predicted = ("--landmarks", "predicted", "--landmark-model", str(tmp_path / "pred"))
    args = _evaluate_args(synth, stage1, tmp_path / "ev", *predicted)
    assert runner.invoke(app, args).exit_code == 0


def test_heatmap_points_are_the_blob_centre_and_no_blob_is_invisible() -> None:
    from wildreid.data.landmarks import render_heatmaps
    from wildreid.models.landmark_predictor import heatmap_points

    points = np.array([[40.0, 24.0, 2.0], [10.0, 50.0, 2.0]], np.float32)
    heat = torch.from_numpy(render_heatmaps(points, (64, 64), radius_frac=0.1))
    # logits: the blob clearly inside, a faint background elsewhere (as a trained net gives)
    logits = torch.where(heat > 0.5, torch.tensor(4.0), torch.tensor(-3.0))[None]
    logits[0, 1] = -3.0  # the second landmark: no pixel above 0.5
    logits[0, 1, 50, 10] = -1.0  # its most probable pixel
    found = heatmap_points(logits, radius_frac=0.1)[0]
    assert found[0, 2] == 1.0 and found[1, 2] == 0.0
    assert np.hypot(found[0, 0] - 40.0, found[0, 1] - 24.0) < 1.0  # not pulled to the centre
    assert np.hypot(found[1, 0] - 10.5, found[1, 1] - 50.5) < 1e-4


def test_heatmap_points_keep_the_strongest_of_several_blobs() -> None:
    from wildreid.data.landmarks import render_heatmaps
    from wildreid.models.landmark_predictor import heatmap_points

    # one map unsure between two far-apart places, a little surer of the first
    two = np.array([[40.0, 24.0, 2.0], [12.0, 50.0, 2.0]], np.float32)
    heat = torch.from_numpy(render_heatmaps(two, (64, 64), radius_frac=0.05))
    logits = torch.full((1, 1, 64, 64), -4.0)
    logits[0, 0][heat[0] > 0.5] = 3.0
    logits[0, 0][heat[1] > 0.5] = 2.0
    found = heatmap_points(logits, radius_frac=0.05)[0, 0]
    assert np.hypot(found[0] - 40.0, found[1] - 24.0) < 1.0  # not the midpoint (26, 37)


def test_heatmap_loss_prefers_the_blob_to_an_all_background_map() -> None:
    from wildreid.data.landmarks import render_heatmaps
    from wildreid.training.landmarks import heatmap_loss

    target = torch.from_numpy(
        render_heatmaps(np.array([[20.0, 20.0, 2.0]], np.float32), (64, 64), radius_frac=0.05)
    )[None]
    right = torch.where(target > 0.5, torch.tensor(3.0), torch.tensor(-3.0))
    empty = torch.full_like(target, -6.0)
    plain = torch.nn.functional.binary_cross_entropy_with_logits
    assert plain(empty, target) < plain(right, target)  # why plain BCE learned empty maps
    assert heatmap_loss(right, target) < heatmap_loss(empty, target)


def test_predictor_starts_from_the_offline_imagenet_weights(tmp_path: Path) -> None:
    from wildreid.config import InvalidValue
    from wildreid.models.efficientnet_lite import lite_state_dict
    from wildreid.models.landmark_predictor import LandmarkPredictorNet
    from wildreid.training.config import DataConfig
    from wildreid.training.landmarks import LandmarkTrainConfig

    net = LandmarkPredictorNet("efficientnet_lite0", 3)
    net.load_imagenet_backbone()
    imagenet = lite_state_dict(0)
    for key, value in net.features.state_dict().items():
        assert torch.equal(value, imagenet[key]), key
    data = DataConfig(metadata=tmp_path / "m.csv", split=tmp_path / "s.csv")
    with pytest.raises(InvalidValue, match=r"test_efficientnet.*pretrained: false"):
        LandmarkTrainConfig(data=data, landmarks=("tip",), backbone="test_efficientnet")
    scratch = LandmarkTrainConfig(
        data=data, landmarks=("tip",), backbone="test_efficientnet", pretrained=False
    )
    assert not scratch.pretrained
