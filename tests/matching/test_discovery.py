"""Discovery: clustering calibrated probabilities, the cut chosen by AMI, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wildreid.cli.app import app
from wildreid.embeddings_file import save_embeddings
from wildreid.errors import ConfigError
from wildreid.matching.discovery import choose_cut, cluster_probabilities, clustering_metrics
from wildreid.types import Embeddings, EmbeddingSpace

# two animals: photos 0-2 and 3-4
P = np.array(
    [
        [1.0, 0.9, 0.8, 0.1, 0.0],
        [0.9, 1.0, 0.85, 0.0, 0.1],
        [0.8, 0.85, 1.0, 0.05, 0.0],
        [0.1, 0.0, 0.05, 1.0, 0.7],
        [0.0, 0.1, 0.0, 0.7, 1.0],
    ]
)
TRUTH = ["a", "a", "a", "b", "b"]


def test_cluster_cut_hand_computed() -> None:
    labels = cluster_probabilities(P, cut=0.5)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4]
    assert len(set(cluster_probabilities(P, cut=0.01).tolist())) == 5
    assert len(set(cluster_probabilities(P, cut=0.99).tolist())) == 1
    with pytest.raises(ConfigError, match="pair"):
        cluster_probabilities(np.where(P > 0.85, np.nan, P), cut=0.5)


def test_choose_cut_maximises_ami_and_metrics_are_perfect() -> None:
    cut, facts = choose_cut(P, TRUTH)
    assert 0.3 <= cut < 0.9
    assert facts["AMI"] == pytest.approx(1.0) and facts["ARI"] == pytest.approx(1.0)
    assert facts["n_predicted_individuals"] == facts["n_true_individuals"] == 2
    wrong = clustering_metrics([0, 0, 0, 0, 0], TRUTH)
    assert wrong["ARI"] == pytest.approx(0.0) and wrong["n_predicted_individuals"] == 1


def test_discover_cli_writes_clusters_and_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(24, 16))
    rows, vectors, split = [], [], []
    for k in range(24):
        for j in range(6):
            image_id = f"id{k}_{j}"
            rows.append({"image_id": image_id, "identity": f"id{k}", "path": f"{image_id}.png"})
            vectors.append(centres[k] + 0.3 * rng.normal(size=16))
            split.append("test" if k >= 20 or j >= 4 else "train")
    metadata = tmp_path / "metadata.csv"
    pd.DataFrame(rows).to_csv(metadata, index=False)
    split_csv = tmp_path / "split.csv"
    pd.DataFrame({"image_id": [r["image_id"] for r in rows], "split": split}).to_csv(
        split_csv, index=False
    )
    v = np.array(vectors, dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    space = EmbeddingSpace("m", "ab" * 32, (8, 8), (0.5,) * 3, (0.5,) * 3, dim=16)
    save_embeddings(Embeddings(v, tuple(r["image_id"] for r in rows), space), tmp_path / "e.npz")
    out = tmp_path / "found"
    result = CliRunner().invoke(
        app,
        [
            *("discover", "--metadata", str(metadata), "--split", str(split_csv)),
            *("--embeddings", str(tmp_path / "e.npz"), "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    clusters = pd.read_csv(out / "clusters.csv", dtype=str)
    assert len(clusters) == 4 * 6 + 20 * 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_truly_new"] == 24
    assert metrics["judged_new"]["ARI"] > 0.5
    assert metrics["all_queries"]["AMI"] > 0.5


def test_discover_fused_graph_beats_global_on_synthetic_patterns(tmp_path: Path) -> None:
    """Patterns under homographies: zero-shot embeddings barely tell them apart, SIFT does.
    The fused graph (decisions, cut and clustering on the recalibrated fused probability)
    must find the new individuals far better than the global one."""
    from wildreid.data.synthetic import SynthConfig, generate_synthetic

    synth = generate_synthetic(
        tmp_path / "data",
        config=SynthConfig(identities=16, train_examples=1, gallery_examples=4, query_examples=3),
        workers=1,
    )
    metadata = pd.read_csv(synth.metadata_path, dtype=str)
    metadata = metadata[metadata["subset"] != "train"]
    new = set(sorted(metadata["identity"].unique())[:6])  # gallery photos become queries too
    split = [
        "test" if subset == "query" or identity in new else "train"
        for subset, identity in zip(metadata["subset"], metadata["identity"], strict=True)
    ]
    split_csv = tmp_path / "open.csv"
    pd.DataFrame({"image_id": metadata["image_id"], "split": split}).to_csv(split_csv, index=False)
    common = [
        *("discover", "--metadata", str(synth.metadata_path), "--split", str(split_csv)),
        *("--device", "cpu", "--cache-dir", str(tmp_path / "cache")),
    ]
    runner = CliRunner()
    bad = runner.invoke(app, [*common, "--out", str(tmp_path / "x"), "--shortlist", "5"])
    assert bad.exit_code == 2 and "--rerank" in bad.stderr
    assert not (tmp_path / "x").exists()
    found = {}
    for graph in ("none", "sift"):
        result = runner.invoke(app, [*common, "--out", str(tmp_path / graph), "--rerank", graph])
        assert result.exit_code == 0, result.output
        found[graph] = json.loads((tmp_path / graph / "metrics.json").read_text())
    plain, fused = found["none"], found["sift"]
    assert plain["graph"] == "global" and fused["graph"] == "fused"
    assert fused["rerank"]["method"] == "sift" and fused["calibration_pairs_matched"] > 0
    n_new, n_cal = fused["n_judged_new"], fused["n_calibration_photos"]
    assert fused["graph_pairs_matched"] == n_new * (n_new - 1) // 2 + n_cal * (n_cal - 1) // 2
    assert fused["fused_calibration_ECE"] <= fused["fused_mean_calibration_ECE"]
    assert fused["all_queries"]["AMI"] > plain["all_queries"]["AMI"] + 0.2
    assert fused["judged_new"]["AMI"] > plain["judged_new"]["AMI"] + 0.2
    clusters = pd.read_csv(tmp_path / "sift" / "clusters.csv", dtype=str)
    assert len(clusters) == split.count("test")
