"""``wildreid experiment training-size`` at tiny scale, and its subsets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from wildreid.cli.app import app
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.errors import ConfigError
from wildreid.experiments.training_size import StudyConfig, parse_fractions, training_subsets

TINY = [
    *("--set", "model.base=timm/test_efficientnet"),
    *("--set", "model.weights=random"),
    *("--set", "model.input_size=[32, 32]"),
    *("--set", "model.embedding_dim=16"),
    *("--set", "sampler.p=2"),
    *("--set", "sampler.k=2"),
    *("--set", "sampler.batches_per_epoch=1"),
    *("--set", "schedule.epochs=1"),
    *("--set", "schedule.warmup_epochs=0"),
    *("--set", "train.workers=0"),
]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run.yaml over a tiny synthetic dataset: 4 training identities x 3 images, 4 others
    with 2 gallery images and 2 queries each, 48 px."""
    root = tmp_path_factory.mktemp("study")
    synth = SynthConfig(identities=4, size_px=48, gallery_examples=2, query_examples=2)
    generate_synthetic(root / "data", config=synth, workers=1)
    config = {
        "data": {
            "metadata": str(root / "data" / "metadata.csv"),
            "split": str(root / "data" / "split.csv"),
        },
        "losses": [{"name": "triplet", "params": {"margin": 0.2, "mining": "hard"}}],
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_subsets_are_nested_deterministic_and_keep_every_identity() -> None:
    ids = [f"i{n}" for n in range(30)]
    metadata = pd.DataFrame(
        {
            "image_id": ids,
            "identity": [f"a{n % 3}" if n < 27 else "unknown" for n in range(30)],
        }
    )
    split = pd.DataFrame({"image_id": ids, "split": ["train"] * 28 + ["test"] * 2})
    subsets = training_subsets(metadata, split, (0.05, 0.25, 0.5, 1.0), seed=0)
    train = {f: set(s.loc[s["split"] == "train", "image_id"]) for f, s in subsets.items()}
    identity = dict(zip(metadata["image_id"], metadata["identity"], strict=True))
    counts = {f: pd.Series([identity[i] for i in kept]).value_counts() for f, kept in train.items()}
    # 9 images per identity: max(1, round(0.05 * 9)) = 1, round(2.25) = 2, round(4.5) = 5, 9.
    assert [counts[f].to_dict() for f in (0.05, 0.25, 0.5, 1.0)] == [
        {"a0": n, "a1": n, "a2": n} for n in (1, 2, 5, 9)
    ]
    assert train[0.05] < train[0.25] < train[0.5] < train[1.0]
    assert "i27" not in train[1.0]  # unknown animals do not train
    assert all(
        set(s.loc[s["split"] == "test", "image_id"]) == {"i28", "i29"} for s in subsets.values()
    )
    again = training_subsets(metadata, split, (0.25,), seed=0)[0.25]
    assert set(again.loc[again["split"] == "train", "image_id"]) == train[0.25]
    other = training_subsets(metadata, split, (0.25,), seed=1)[0.25]
    assert set(other.loc[other["split"] == "train", "image_id"]) != train[0.25]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,0.5", "outside (0, 1]"),
        ("0.5,1.5", "outside (0, 1]"),
        ("0.5,0.25", "must increase"),
        ("0.5,0.5,1", "listed twice"),
        ("0.5,half", "not a number"),
    ],
)
def test_bad_fractions(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        parse_fractions(text)


def test_bad_input_from_the_cli(config_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "study")
    unsorted = runner.invoke(
        app,
        [
            "experiment",
            "training-size",
            "--config",
            str(config_file),
            "--out",
            out,
            "--fractions",
            "1.0,0.5",
        ],
    )
    assert unsorted.exit_code == 2 and "must increase" in unsorted.stderr
    missing = runner.invoke(
        app,
        ["experiment", "training-size", "--config", str(tmp_path / "nope.yaml"), "--out", out],
    )
    assert missing.exit_code == 2 and "nope.yaml" in missing.stderr
    # 3 images per identity: a fraction of 0.2 leaves one each, too few for P x K batches.
    too_few = runner.invoke(
        app,
        [
            "experiment",
            "training-size",
            "--config",
            str(config_file),
            "--out",
            out,
            "--fractions",
            "0.2,1",
            *TINY,
        ],
    )
    assert too_few.exit_code == 2 and "fraction 0.2 leaves 0 identities" in too_few.stderr
    # The study fits no calibrators: calibrated fusion is refused, not run as rank fusion.
    calibrated = runner.invoke(
        app,
        [
            *("experiment", "training-size", "--config", str(config_file), "--out", out),
            *("--fusion", "calibrated", *TINY),
        ],
    )
    assert calibrated.exit_code == 2 and "not 'calibrated'" in calibrated.stderr
    with pytest.raises(ConfigError, match="max_queries must be >= 1"):
        StudyConfig(max_queries=0)


def test_study_end_to_end_and_resume(config_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "study"
    args = [
        "experiment",
        "training-size",
        "--config",
        str(config_file),
        "--out",
        str(out),
        "--fractions",
        "0.5,1.0",
        "--rerank",
        "sift",
        "--shortlist",
        "4",
        *("--max-queries", "5"),
        *TINY,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # Every pair of the 5 sampled queries with the gallery, matched once (the fusion line's
    # pairs come from the same table).
    split = pd.read_csv(config_file.parent / "data" / "split.csv")
    side = "gallery" if (split["split"] == "gallery").any() else "train"
    assert f"; {5 * int((split['split'] == side).sum())} pairs matched locally" in result.stdout
    rows = pd.read_csv(out / "results.csv")
    assert list(rows.columns) == [
        "fraction",
        "images_per_identity",
        "method",
        "top1",
        "top5",
        "mAP",
        "train_seconds",
    ]
    assert sorted(set(rows["method"])) == ["fine-tuned", "fusion", "local", "zero-shot"]
    assert rows.groupby("fraction")["images_per_identity"].first().to_dict() == {0.5: 2.0, 1.0: 3.0}
    for method in ("zero-shot", "local"):  # computed once, the same at every size
        assert rows.loc[rows["method"] == method, "top1"].nunique() == 1
    assert rows.loc[rows["method"] == "zero-shot", "train_seconds"].isna().all()
    assert (rows.loc[rows["method"] == "fine-tuned", "train_seconds"] > 0).all()
    assert ((rows[["top1", "top5", "mAP"]] >= 0) & (rows[["top1", "top5", "mAP"]] <= 1)).all().all()
    assert (out / "training_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["val_fraction"] == 0 and saved["schedule"]["epochs"] == 1
    for fraction, kept in (("0.5", 8), ("1", 12)):
        split = pd.read_csv(out / "splits" / f"fraction-{fraction}.csv")
        assert (split["split"] == "train").sum() == kept
        assert (out / "runs" / f"fraction-{fraction}" / "model.pt").is_file()

    # A second run reuses the finished trainings and the caches: same numbers.
    again = runner.invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output
    assert pd.DataFrame(json.loads(again.stdout))["top1"].tolist() == rows["top1"].tolist()
