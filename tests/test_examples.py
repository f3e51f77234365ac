"""Every file in examples/ runs end to end through ``wildreid train`` at a tiny size.

The overrides only shrink the run (tiny random network, 32 px, 2 epochs of one 2 x 2 batch) and
point it at generated data; every other setting of the example (losses, schedule, stages,
augmentation, sampler) runs as written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.models.helpers import random_state_dict, save_state_dict
from wildreid.cli.app import app
from wildreid.data.synthetic import SynthConfig, generate_synthetic

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("examples")
    generate_synthetic(
        root / "data", config=SynthConfig(identities=6, size_px=32, supersample=1), workers=1
    )
    weights = save_state_dict(random_state_dict("test_efficientnet", seed=1), root / "w.pt")
    return root / "data", weights


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_at_tiny_size(path: Path, tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, weights = tiny
    overrides = {
        "data.metadata": data / "metadata.csv",
        "data.split": data / "split.csv",
        "data.split_column": "null",
        "data.group_column": "null",
        "data.val_kind": "disjoint",
        "data.val_fraction": 0.34,
        "model.base": "timm/test_efficientnet",
        "model.weights": weights,
        "model.input_size": "[32, 32]",
        "model.embedding_dim": 16,
        "sampler.p": 2,
        "sampler.k": 2,
        "sampler.batches_per_epoch": 1,
        "sampler.spread_over": "null",
        "schedule.epochs": 2,
        "train.device": "cpu",
    }
    args = ["train", "--config", str(path), "--out", str(tmp_path / "run"), "--json"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model.pt").is_file()
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
