"""``wildreid train`` through Typer's runner; the example configs validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from wildreid.cli.app import app
from wildreid.config import load_config
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.training.config import TrainConfig, check_config

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
TINY = [
    "--set",
    "model.base=timm/test_efficientnet",
    "--set",
    "model.weights=random",
    "--set",
    "model.input_size=[32, 32]",
    "--set",
    "model.embedding_dim=16",
    "--set",
    "sampler.p=2",
    "--set",
    "sampler.k=2",
    "--set",
    "sampler.batches_per_epoch=2",
    "--set",
    "schedule.epochs=2",
]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run.yaml over a tiny synthetic dataset (6 identities, 32 px)."""
    root = tmp_path_factory.mktemp("cli-train")
    generate_synthetic(root / "data", config=SynthConfig(identities=6, size_px=32), workers=1)
    config = {
        "data": {
            "metadata": str(root / "data" / "metadata.csv"),
            "split": str(root / "data" / "split.csv"),
            "val_fraction": 0.34,
        },
        "losses": [{"name": "triplet", "params": {"margin": 0.2, "mining": "hard"}}],
        "schedule": {"epochs": 5, "warmup_epochs": 1, "freeze_backbone_epochs": 1},
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_then_embed_with_the_run(config_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(config_file), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.stdout and "mAP" in result.stdout
    assert f"model: {out / 'model.pt'}" in result.stdout
    saved = load_config(out / "config.yaml", TrainConfig)
    assert saved.schedule.epochs == 2 and saved.model.base == "timm/test_efficientnet"

    metadata = yaml.safe_load(config_file.read_text())["data"]["metadata"]
    embedded = runner.invoke(
        app, ["embed", metadata, "--out", str(tmp_path / "e.npz"), "--model", str(out)]
    )
    assert embedded.exit_code == 0, embedded.output
    assert "trained:run" in embedded.stdout and "dim 16" in embedded.stdout

    # --resume without --config takes the run's config.yaml; a finished run has nothing to do.
    again = runner.invoke(app, ["train", "--out", str(out), "--resume", "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["epochs_run"] == 2 and summary["checkpoint"] == str(out / "model.pt")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optim.lrr=0.1"], "unknown key 'optim.lrr'; did you mean 'optim.lr'"),
        (["--set", "optim.lr=-1"], "optim.lr: must be a number > 0"),
        (["--set", "schedule.kind=linear"], "schedule.kind: 'linear' is not one of"),
        (["--set", "losses=[{name: tripplet}]"], "unknown loss 'tripplet'; did you mean"),
        (["--set", "losses=[{name: triplet, params: {mining: soft}}]"], "option 'mining'"),
        (["--set", "model.base=efficientnet-lite9"], "model.base: unknown model"),
        (["--set", "data.split_column=md_split"], "data.split: give exactly one of"),
        (
            ["--set", "model.weights=random", "--set", "schedule.freeze_backbone_bn=true"],
            "schedule.freeze_backbone_bn: a randomly initialised backbone",
        ),
        (["--set", "sampler.spread_over= "], "sampler.spread_over: is empty"),
    ],
)
def test_bad_config_exits_2_before_any_work(
    config_file: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", "--config", str(config_file), "--out", str(out), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not out.exists()


def test_needs_a_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--config" in result.stderr
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run"), "--resume"])
    assert result.exit_code == 2 and "holds no config.yaml" in result.stderr


def test_examples_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {
        "triplet-semihard.yaml",
        "arcface.yaml",
        "subcenter-arcface.yaml",
        "bnneck-baseline.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_validate(path: Path) -> None:
    config = load_config(path, TrainConfig)
    check_config(config)
    assert config.model.base == "efficientnet-lite0"  # the offline default
    assert (config.sampler.p, config.sampler.k) == (8, 4)
    if path.name.startswith("holstein"):
        assert config.schedule.freeze_backbone_bn
        assert config.data.metadata.name == "metadata.csv"
        assert "Holstein2025CowFaces" in config.data.metadata.parts
        assert config.data.split == Path("splits/holstein-closed-clip.csv")
        assert config.sampler.spread_over == config.data.group_column == "clip"
    else:
        assert config.data.metadata == Path("../shared/datasets/LionData/metadata.csv")
        assert config.data.split_column == "md_split"
        assert config.schedule.freeze_backbone_epochs == 1


def test_tune_runs_trials_and_writes_the_table(config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "tune"
    args = ["tune", "--config", str(config_file), "--trials", "2", "--out", str(out), *TINY]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = (out / "trials.csv").read_text().splitlines()
    header = table[0].split(",")
    assert len(table) == 3  # header + 2 trials
    assert {"trial", "lr", "embedding_dim", "triplet_margin", "mining", "val_mAP"} <= set(header)
    best = load_config(out / "best.yaml", TrainConfig)
    lrs = [float(row.split(",")[header.index("lr")]) for row in table[1:]]
    assert best.optim.lr in lrs
    assert best.losses[0].params["mining"] in {"all", "semihard", "hard"}
    assert "best val mAP" in result.stdout
    assert (out / "trial-000" / "model.pt").is_file() and (out / "trial-001" / "model.pt").is_file()


def test_tune_refuses_a_config_without_validation(config_file: Path, tmp_path: Path) -> None:
    args = ["tune", "--config", str(config_file), "--trials", "1", "--out", str(tmp_path / "t")]
    result = CliRunner().invoke(app, [*args, *TINY, "--set", "data.val_fraction=0"])
    assert result.exit_code == 2
    assert "val_fraction" in result.stderr
