"""The Landmark-Id experiment runs end to end at a tiny size and writes its tables."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wildreid.cli.app import app
from wildreid.data.synthetic import SynthConfig
from wildreid.errors import ConfigError
from wildreid.experiments.landmark_id import ExperimentScale, run_landmark_id

TINY = ExperimentScale(
    synth=SynthConfig(
        identities=4,
        size_px=32,
        train_examples=4,
        gallery_examples=1,
        query_examples=1,
        supersample=1,
    ),
    base="timm/test_efficientnet",
    weights="random",
    input_size=(32, 32),
    epochs=2,
    head_epochs=1,
    stage2_recon_epochs=1,
    stage2_epochs=2,
    p=2,
    k=2,
    batches_per_epoch=1,
    lr=1e-3,
    predictor_epochs=1,
    predictor_backbone="test_efficientnet",
    predictor_pretrained=False,
    threads=1,
)


def test_experiment_writes_results_for_every_variant(tmp_path: Path) -> None:
    rows = run_landmark_id(scale=TINY, out=tmp_path / "exp", device="cpu")
    names = [row.variant for row in rows]
    assert names[:3] == ["baseline", "stage1", "stage2"]
    assert {"stage1-r10", "stage1-r20", "stage1-mla-hidden", "stage2-predicted"} <= set(names)
    assert {"baseline-long", "stage1-long", "stage1-long-hidden", "stage1-long-none"} <= set(names)
    assert {"stage1-none", "baseline-long-warmup"} <= set(names)
    with (tmp_path / "exp" / "results.csv").open(encoding="utf-8") as stream:
        table = list(csv.DictReader(stream))
    assert list(table[0]) == ["variant", "top1", "top5", "top10"]
    assert [r["variant"] for r in table] == names
    for row in table:
        assert 0 <= float(row["top1"]) <= float(row["top5"]) <= float(row["top10"]) <= 100
    text = (tmp_path / "exp" / "results.md").read_text(encoding="utf-8")
    assert "| stage2 |" in text and "89.53" in text
    assert (tmp_path / "exp" / "configs" / "stage2.yaml").is_file()
    # a second call reuses the trained runs (nothing is trained again)
    again = run_landmark_id(scale=TINY, out=tmp_path / "exp", device="cpu")
    assert [r.top1 for r in again] == [r.top1 for r in rows]
    assert "not drawn, as in the paper" in text
    # a folder whose dataset was made with other settings is refused, not silently reused
    before = (tmp_path / "exp" / "results.csv").read_bytes()
    with pytest.raises(ConfigError, match="body_visible False instead of True"):
        run_landmark_id(scale=TINY, out=tmp_path / "exp", device="cpu", body_visible=True)
    assert (tmp_path / "exp" / "results.csv").read_bytes() == before


def test_cli_rejects_an_unknown_scale(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["experiment", "landmark-id", "--scale", "huge", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code != 0
    assert "--scale must be one of cpu, paper" in result.output + str(result.stderr)


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_scales_are_consistent(scale: str) -> None:
    from wildreid.experiments.landmark_id import SCALES

    s = SCALES[scale]
    assert s.head_epochs < s.epochs and s.stage2_recon_epochs < s.stage2_epochs
