"""``wildreid match`` and ``wildreid evaluate --rerank`` through Typer's runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from tests.matching.local_images import photo, unrelated, warped
from wildreid.cli.app import app

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_match_prints_counts_and_draws_the_matches(tmp_path: Path) -> None:
    first, second, third = tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.png"
    photo().save(first)
    warped().save(second)
    unrelated().save(third)
    viz = tmp_path / "viz.png"
    code, out, err = run("match", first, second, "--matcher", "sift", "--viz", viz)
    assert code == 0, err
    assert "geometric inliers" in out and "ms extraction" in out
    with Image.open(viz) as picture:
        assert picture.width > 2 * 200 and picture.height > 200
    code, out, err = run("match", first, second, "--matcher", "aliked-lightglue", "--json")
    assert code == 0, err
    same = json.loads(out)
    code, out, err = run("match", first, third, "--matcher", "aliked-lightglue", "--json")
    other = json.loads(out)
    assert same["inliers"] >= 50 and other["inliers"] < same["inliers"] / 4


def test_match_bad_input(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    photo().save(tmp_path / "a.png")
    code, _, err = run("match", tmp_path / "a.png", broken, "--matcher", "sift")
    assert code == 4 and "broken.jpg" in err
    code, _, err = run("match", tmp_path / "a.png", tmp_path / "a.png", "--matcher", "orb")
    assert code == 2 and "orb" in err


def test_match_runtime_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    photo(160).save(first)
    warped(160).save(second)
    args = ("match", first, second, "--matcher", "aliked-lightglue", "--json")
    code, out, err = run(*args, "--runtime", "onnxruntime")
    assert code == 0, err
    compiled = json.loads(out)
    code, out, err = run(*args, "--runtime", "torch")
    eager = json.loads(out)
    assert (compiled["runtime"], eager["runtime"]) == ("onnxruntime", "torch")
    assert compiled["keypoints1"] == eager["keypoints1"]
    assert abs(compiled["inliers"] - eager["inliers"]) <= max(2, eager["inliers"] // 20)
    code, _, err = run(*args, "--runtime", "tensorrt")
    assert code == 2 and "unknown runtime 'tensorrt'" in err
    monkeypatch.setitem(sys.modules, "openvino", None)  # not installed
    code, _, err = run(*args, "--runtime", "openvino")
    assert code != 0 and "pip install openvino" in err


def _textures() -> list[np.ndarray]:
    return [
        np.asarray(photo(160)),
        np.asarray(unrelated(160)),
        np.asarray(Image.fromarray(data.coffee()).resize((160, 120))),
        np.asarray(Image.fromarray(data.rocket()).resize((160, 110))),
    ]


@pytest.fixture
def animals(tmp_path: Path) -> Path:
    """4 identities (4 photos) x 3 views (random homographies); the first view is the query."""
    rng = np.random.default_rng(3)
    rows = []
    for i, texture in enumerate(_textures()):
        height, width = texture.shape[:2]
        for k in range(3):
            h = np.eye(3) + rng.normal(scale=[[0.05, 0.05, 4], [0.05, 0.05, 4], [1e-4, 1e-4, 0]])
            view = cv2.warpPerspective(texture, h, (width, height), borderMode=cv2.BORDER_REFLECT)
            path = f"images/{i}_{k}.png"
            (tmp_path / "images").mkdir(exist_ok=True)
            Image.fromarray(view).save(tmp_path / path)
            split = "test" if k == 0 else "train"
            rows.append({"image_id": f"a{i}v{k}", "identity": f"a{i}", "path": path, "s": split})
    metadata = tmp_path / "metadata.csv"
    pd.DataFrame(rows).to_csv(metadata, index=False)
    return metadata


def test_evaluate_rerank_reports_global_and_reranked_metrics(animals: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--metadata", animals, "--split-column", "s", "--out", out]
    fast = ["--workers", "0", "--device", "cpu", "--cache-dir", tmp_path / "cache"]
    code, stdout, err = run(*args, *fast, "--rerank", "sift", "--shortlist", "0")
    assert code == 0, err
    document = json.loads((out / "metrics.json").read_text())
    assert document["metrics"]["top1"] == 1.0  # every query finds its warped views
    assert set(document["global"]) >= {"top1", "mAP"}
    rerank = document["rerank"]
    assert rerank["method"] == "sift" and rerank["shortlist"] == 8
    assert rerank["shortlist_recall"] == 1.0 and rerank["images_extracted"] == 12
    assert "global only:" in stdout and "re-ranked (sift, top 8)" in stdout
    html = (out / "report.html").read_text()
    assert "matched keypoints: query vs" in html and "re-ranked" in html
    # Second run: features come from the cache.
    code, stdout, err = run(*args, *fast, "--rerank", "sift", "--shortlist", "0", "--json")
    assert code == 0, err
    assert json.loads(stdout)["rerank"]["images_extracted"] == 0


def test_rerank_options_need_rerank(animals: Path, tmp_path: Path) -> None:
    args = ["evaluate", "--metadata", animals, "--split-column", "s", "--out", tmp_path / "x"]
    code, _, err = run(*args, "--shortlist", "5")
    assert code == 2 and "--shortlist" in err and "--rerank" in err
    code, _, err = run(*args, "--rerank", "sift", "--pair-score", "votes")
    assert code == 2 and "votes" in err
    assert not (tmp_path / "x").exists()


def test_evaluate_fuses_calibrated_probabilities_on_synthetic_patterns(tmp_path: Path) -> None:
    """Calibrated fusion end to end: the local calibrator is fitted on gallery-side pairs,
    saved beside the report, and the fused ranking beats the global one on patterns under
    homographies (what local matching is for)."""
    from wildreid.data.synthetic import SynthConfig, generate_synthetic

    synth = generate_synthetic(
        tmp_path / "data",
        config=SynthConfig(identities=12, train_examples=1, gallery_examples=4, query_examples=2),
        workers=1,
    )
    out = tmp_path / "eval"
    code, _, err = run(
        "evaluate", "--metadata", synth.metadata_path, "--split", synth.split_path,
        "--workers", "0", "--device", "cpu", "--rerank", "sift", "--shortlist", "0",
        "--fusion", "calibrated", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    document = json.loads((out / "metrics.json").read_text())
    rerank = document["rerank"]
    assert rerank["fusion"] == "calibrated"
    assert rerank["calibration_pairs_matched"] > 0
    assert document["metrics"]["top1"] > document["global"]["top1"] + 0.2
    calibration = json.loads((out / "calibration.json").read_text())
    assert "local_calibrator" in json.dumps(calibration)
    assert "fused_calibrator" in json.dumps(calibration)  # the fused mean, recalibrated
    metrics = document["metrics"]
    assert 0 <= metrics["ECE_calibrated"] <= 1 and 0 <= metrics["ECE_fused_mean"] <= 1
    assert 0 <= metrics["ECE_top1_calibrated"] <= 1 and 0 <= metrics["ECE_top1_fused_mean"] <= 1
    assert rerank["fused_calibration_ECE"] <= rerank["fused_mean_calibration_ECE"]
