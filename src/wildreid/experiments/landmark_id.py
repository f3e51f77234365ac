"""The Landmark-Id benchmark on the synthetic dataset: ``wildreid experiment landmark-id``.

Every variant is a normal training run (its config written to ``DIR/configs/<variant>.yaml``,
so ``wildreid train --config`` repeats it) evaluated on the synthetic test identities (queries
against the gallery, never seen in training):

* ``baseline``: RGB only, the same backbone, losses and geometric augmentation;
* ``stage1``: heatmap input (r = 5%): the new first layer and the classifier (head, loss
  parameters) first, then everything;
* ``stage2``: continues stage 1 (its network and classifier, ``model.keep_head``) with the
  reconstruction block (alpha = 1): the block alone, then everything at a ten times smaller
  learning rate;
* ``baseline-long``: the baseline trained for as many steps as stage 1 and stage 2 together
  (stage 2 continues stage 1, so it has trained longer than the baseline; this tells the
  reconstruction block's gain from the extra epochs);
* ``stage1-long`` / ``stage1-long-hidden`` / ``stage1-long-none``: stage 1 trained as many
  steps as ``baseline-long`` (the heatmap input's gain at equal training), evaluated with all
  landmarks, with landmarks hidden as below, and with none (zero heatmaps: does the model use
  them at all?); ``stage1-none`` the same last check for ``stage1``;
* ``baseline-long-warmup``: ``baseline-long`` with stage 1's schedule (the first epoch trains
  only the first layer and the classifier): how much of stage 1's gain that schedule explains;
* ``stage1-r10``, ``stage1-r20``: stage 1 with blobs of 10% and 20% of the image size;
* ``stage1-hidden`` / ``stage1-mla-hidden``: stage 1 trained without / with MLA, both
  evaluated with each landmark hidden with probability 0.5 (at least one kept, fixed seed);
* ``stage2-predicted`` / ``stage2-none``: the stage-2 model fed landmarks predicted by a
  predictor trained on the training images / zero heatmaps.

A variant whose run folder already holds ``model.pt`` is not trained again (a stopped
experiment continues). ``DIR/results.csv`` has ``variant, top1, top5, top10``;
``DIR/results.md`` the table beside the paper's numbers, the scale and the times.
"""

from __future__ import annotations

import csv
import logging
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from wildreid.config import dump_config, load_config
from wildreid.data.schema import load_dataset
from wildreid.data.splits import read_split
from wildreid.data.synthetic import (
    LANDMARK_NAMES,
    SynthConfig,
    generate_synthetic,
    read_synth_config,
)
from wildreid.errors import ConfigError
from wildreid.evaluation.protocol import evaluate_embeddings, protocol_from_split
from wildreid.files import atomic_path
from wildreid.models.checkpoint import CHECKPOINT_FILENAME
from wildreid.models.factory import load_model
from wildreid.models.heads import EmbeddingNet
from wildreid.models.landmark_embedder import LandmarkEmbedConfig, embed_with_landmarks
from wildreid.models.landmark_predictor import PREDICTOR_FILENAME, load_landmark_predictor
from wildreid.pipeline import embed_dataset
from wildreid.training.config import TrainConfig
from wildreid.training.landmarks import LandmarkTrainConfig, train_landmark_predictor
from wildreid.training.trainer import train

__all__ = ["PAPER_NOTES", "SCALES", "ExperimentScale", "ResultRow", "run_landmark_id"]

logger = logging.getLogger(__name__)

PAPER_NOTES = {
    "baseline": "63.81 (Table 1)",
    "stage1": "78.10 (Table 1)",
    "stage2": "89.53 (Table 1); 86.13 r5% (Table 3)",
    "stage1-r10": "84.72 (Table 3, stage 2)",
    "stage1-r20": "66.62 (Table 3, stage 2)",
    "stage1-hidden": "55.30 (Table 4, manta rays, no MLA)",
    "stage1-mla-hidden": "62.04 (Table 4, manta rays, MLA)",
}
"""The paper's top-1 for the comparable variant (ResNet50, 128 px, 750 identities)."""


@dataclass(frozen=True)
class ExperimentScale:
    """How big the experiment is.

    Attributes:
        synth: the synthetic dataset (train identities, and as many test identities).
        base: backbone (registry name); input_size: (height, width).
        epochs: epochs of the whole network for the baseline and stage 1; head_epochs:
            stage 1's first part (new first layer and classifier only), before those.
        stage2_recon_epochs: stage 2's first part (reconstruction block alone);
            stage2_epochs: stage 2 in all.
        p, k, batches_per_epoch, lr: the sampler and the peak learning rate.
        predictor_epochs: landmark predictor epochs (its backbone: ``predictor_backbone``,
            from ImageNet weights when ``predictor_pretrained``).
        threads: torch threads (1 is fastest on a shared CPU).
        weights: ``model.weights`` of every run (``random`` in tests).
    """

    synth: SynthConfig
    base: str
    input_size: tuple[int, int]
    epochs: int
    head_epochs: int
    stage2_recon_epochs: int
    stage2_epochs: int
    p: int
    k: int
    batches_per_epoch: int | None
    lr: float
    predictor_epochs: int
    predictor_backbone: str = "efficientnet_lite0"
    predictor_pretrained: bool = True
    threads: int | None = None
    weights: str | None = None


SCALES: dict[str, ExperimentScale] = {
    "cpu": ExperimentScale(
        synth=SynthConfig(
            identities=500,
            test_identities=100,
            size_px=128,
            train_examples=4,
            gallery_examples=3,
            query_examples=5,
        ),
        base="efficientnet-lite0",
        input_size=(128, 128),
        epochs=15,
        head_epochs=1,
        stage2_recon_epochs=2,
        stage2_epochs=8,
        p=8,
        k=4,
        batches_per_epoch=30,
        lr=1e-3,
        predictor_epochs=5,
    ),
    "paper": ExperimentScale(
        synth=SynthConfig(),  # 750 identities, 128 px, 3 train / 3 gallery / 5 query images
        base="efficientnet-lite0",
        input_size=(128, 128),
        epochs=120,
        head_epochs=10,
        stage2_recon_epochs=10,
        stage2_epochs=80,
        p=16,
        k=3,
        batches_per_epoch=None,
        lr=1e-3,
        predictor_epochs=60,
    ),
}


@dataclass(frozen=True)
class ResultRow:
    """One line of ``results.csv`` (percent)."""

    variant: str
    top1: float
    top5: float
    top10: float
    seconds: float = 0.0


def _train_config(
    scale: ExperimentScale, data: Path, *, landmarks: bool, radius: float = 0.05, **more: Any
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "data": {
            "metadata": str(data / "metadata.csv"),
            "split": str(data / "split.csv"),
            "val_fraction": 0.0,
        },
        "model": {
            "base": scale.base,
            "weights": scale.weights,
            "input_size": list(scale.input_size),
            "embedding_dim": 256,
            "landmarks": list(LANDMARK_NAMES) if landmarks else [],
            "landmark_radius_frac": radius,
        },
        "sampler": {"p": scale.p, "k": scale.k, "batches_per_epoch": scale.batches_per_epoch},
        "augment_kind": "landmark",
        "landmark_augment": {"rotation_deg": 360.0, "zoom": 0.2, "translate": 0.2, "nla": True},
        "optim": {"name": "adamw", "lr": scale.lr, "weight_decay": 5e-4},
        "schedule": {"epochs": scale.epochs, "warmup_epochs": 1},
        "train": {"seed": 0, "device": more.pop("device", "auto")},
    }
    for key, value in more.items():
        section, _, name = key.partition(".")
        raw[section][name] = value
    return raw


def _training_seconds(run_dir: Path) -> float:
    """The summed epoch times of a training run's ``metrics.csv`` (0 if it has none)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return 0.0
    with path.open(newline="", encoding="utf-8") as handle:
        return sum(float(row["seconds"] or 0) for row in csv.DictReader(handle))


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def run_landmark_id(
    *,
    scale: str | ExperimentScale,
    out: Path,
    device: str = "auto",
    body_visible: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[ResultRow]:
    """Run the benchmark (module docstring) into ``out``; return the result rows.

    ``body_visible`` draws the triangle under the ellipses (the scale's dataset otherwise, by
    default the paper's, where the image does not show the landmarks).

    Raises:
        ConfigError: unknown scale.
    """
    if isinstance(scale, str) and scale not in SCALES:
        raise ConfigError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    setting = SCALES[scale] if isinstance(scale, str) else scale
    if body_visible:
        setting = replace(setting, synth=replace(setting.synth, body_visible=True))
    scale_name = scale if isinstance(scale, str) else "custom"
    say = log or logger.info
    if setting.threads:
        torch.set_num_threads(setting.threads)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    if not (data / "metadata.csv").is_file():
        generate_synthetic(data, config=setting.synth, workers=1)
    made = read_synth_config(data)
    if made != setting.synth:
        differ = ", ".join(
            f"{name} {getattr(made, name)!r} instead of {getattr(setting.synth, name)!r}"
            for name in SynthConfig.__dataclass_fields__
            if getattr(made, name) != getattr(setting.synth, name)
        )
        raise ConfigError(
            f"{data} holds a dataset generated with other settings than the {scale_name} "
            f"scale's ({differ}); give a new --out"
        )
    runs, configs = out / "runs", out / "configs"
    configs.mkdir(exist_ok=True)
    timings: dict[str, float] = {}

    def run(name: str, raw: dict[str, Any]) -> Path:
        config = load_config(raw, TrainConfig)
        with atomic_path(configs / f"{name}.yaml") as tmp:
            tmp.write_text(dump_config(config), encoding="utf-8")
        run_dir = runs / name
        if not (run_dir / CHECKPOINT_FILENAME).is_file():
            say(f"training {name}")
            train(config, out_dir=run_dir)
        # from the run's own log, so a resumed experiment reports the time the run took
        timings[name] = _training_seconds(run_dir)
        return run_dir

    stages1 = [{"epochs": setting.head_epochs, "train": ["stem", "head", "loss"]}]
    # stage 1's first part only warms up the new first layer and the classifier: it comes on top
    # of the baseline's epochs, so both train the whole network for the same number of steps
    lm: dict[str, Any] = {
        "device": device,
        "schedule.stages": stages1,
        "schedule.epochs": setting.epochs + setting.head_epochs,
    }
    baseline = run("baseline", _train_config(setting, data, landmarks=False, device=device))
    stage1 = run("stage1", _train_config(setting, data, landmarks=True, **dict(lm)))
    stage2_raw = _train_config(setting, data, landmarks=True, device=device)
    stage2_raw["model"].update(
        base=str(stage1), weights=None, reconstruction_weight=1.0, keep_head=True
    )
    stage2_raw["schedule"] = {
        "epochs": setting.stage2_epochs,
        "warmup_epochs": 0,
        "stages": [
            {"epochs": setting.stage2_recon_epochs, "train": ["reconstruction"]},
            {"lr_scale": 0.1},
        ],
    }
    stage2 = run("stage2", stage2_raw)
    # the control for stage 2's extra epochs: the baseline trained as many steps as stage 2 in all
    long_epochs = setting.epochs + setting.head_epochs + setting.stage2_epochs
    long = run(
        "baseline-long",
        _train_config(
            setting, data, landmarks=False, device=device, **{"schedule.epochs": long_epochs}
        ),
    )
    # the control the other way round: the heatmap input given the long baseline's steps
    stage1_long = run(
        "stage1-long",
        _train_config(setting, data, landmarks=True, **{**lm, "schedule.epochs": long_epochs}),
    )
    # and stage 1's schedule without landmarks: does the head-only first epoch explain its gain?
    warmup_long = run(
        "baseline-long-warmup",
        _train_config(setting, data, landmarks=False, **{**lm, "schedule.epochs": long_epochs}),
    )
    r10 = run("stage1-r10", _train_config(setting, data, landmarks=True, radius=0.10, **dict(lm)))
    r20 = run("stage1-r20", _train_config(setting, data, landmarks=True, radius=0.20, **dict(lm)))
    mla_raw = _train_config(setting, data, landmarks=True, **dict(lm))
    mla_raw["landmark_augment"].update(mla_prob=0.5, mla_min_visible=2)
    mla = run("stage1-mla", mla_raw)

    predictor_dir = runs / "predictor"
    if not (predictor_dir / PREDICTOR_FILENAME).is_file():
        say("training the landmark predictor")
        predictor_config = load_config(
            {
                "data": {
                    "metadata": str(data / "metadata.csv"),
                    "split": str(data / "split.csv"),
                    "val_fraction": 0.2,
                },
                "landmarks": list(LANDMARK_NAMES),
                "backbone": setting.predictor_backbone,
                "pretrained": setting.predictor_pretrained,
                "input_size": list(setting.input_size),
                "epochs": setting.predictor_epochs,
                "device": device,
            },
            LandmarkTrainConfig,
        )
        with atomic_path(configs / "predictor.yaml") as tmp:
            tmp.write_text("task: landmarks\n" + dump_config(predictor_config), encoding="utf-8")
        train_landmark_predictor(predictor_config, out_dir=predictor_dir)
    predictor = load_landmark_predictor(predictor_dir)

    metadata, root = load_dataset(data / "metadata.csv")
    split = read_split(data / "split.csv", metadata=metadata)
    protocol = protocol_from_split(metadata, split)
    needed = set(protocol.query_ids) | set(protocol.gallery_ids)
    rows = metadata[metadata["image_id"].isin(needed)]

    def score(name: str, run_dir: Path, source: str | None, hide: float = 0.0) -> ResultRow:
        began = time.perf_counter()
        if hide > 0:
            loaded = load_model(run_dir)
            assert isinstance(loaded.module, EmbeddingNet)
            result = embed_with_landmarks(
                loaded.module,
                loaded.space,
                rows,
                root=root,
                config=LandmarkEmbedConfig(hide_prob=hide, min_visible=1, seed=0),
            )
        else:
            result = embed_dataset(
                rows,
                root=root,
                model=str(run_dir),
                landmarks=source,
                landmark_model=predictor_dir if source == "predicted" else None,
            )
        metrics = evaluate_embeddings(metadata, protocol, result.embeddings).metrics
        row = ResultRow(
            name,
            100 * float(metrics["top1"]),
            100 * float(metrics["top5"]),
            100 * float(metrics["top10"]),
            timings.get(name, 0.0) + time.perf_counter() - began,
        )
        say(f"{name}: top-1 {row.top1:.2f}% top-5 {row.top5:.2f}% top-10 {row.top10:.2f}%")
        return row

    results = [
        score("baseline", baseline, None),
        score("stage1", stage1, "annotated"),
        score("stage2", stage2, "annotated"),
        score("baseline-long", long, None),
        score("baseline-long-warmup", warmup_long, None),
        score("stage1-long", stage1_long, "annotated"),
        score("stage1-long-hidden", stage1_long, "annotated", hide=0.5),
        score("stage1-long-none", stage1_long, "none"),
        score("stage1-none", stage1, "none"),
        score("stage1-r10", r10, "annotated"),
        score("stage1-r20", r20, "annotated"),
        score("stage1-hidden", stage1, "annotated", hide=0.5),
        score("stage1-mla-hidden", mla, "annotated", hide=0.5),
        score("stage1-mla", mla, "annotated"),
        score("stage2-predicted", stage2, "predicted"),
        score("stage2-none", stage2, "none"),
    ]
    _write_results(
        out,
        results,
        setting,
        scale_name,
        predictor.card.error_pct,
        seconds=time.perf_counter() - start,
        training_seconds=sum(timings.values()),
    )
    return results


def _write_results(
    out: Path,
    results: list[ResultRow],
    setting: ExperimentScale,
    scale: str,
    error_pct: float | None,
    *,
    seconds: float,
    training_seconds: float,
) -> None:
    with atomic_path(out / "results.csv") as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        table = csv.writer(f)
        table.writerow(["variant", "top1", "top5", "top10"])
        for row in results:
            table.writerow([row.variant, f"{row.top1:.2f}", f"{row.top5:.2f}", f"{row.top10:.2f}"])
    synth = setting.synth
    lines = [
        f"# Landmark-Id on the synthetic dataset ({scale} scale)",
        "",
        f"{synth.identities} training identities x {synth.train_examples} images; "
        f"{synth.test_identities or synth.identities} test identities, "
        f"{synth.gallery_examples} gallery and {synth.query_examples} query images each; "
        f"{synth.size_px} px; the body (triangle) "
        f"{'drawn' if synth.body_visible else 'not drawn, as in the paper'}; "
        f"backbone {setting.base} at {setting.input_size[0]} px; "
        f"{setting.epochs} epochs of {setting.batches_per_epoch or 'all'} batches of "
        f"{setting.p}x{setting.k} (stage 1: {setting.head_epochs} more first, new first layer "
        f"and classifier only; stage 2: {setting.stage2_epochs} more after stage 1, "
        f"{setting.stage2_recon_epochs} of them the reconstruction block alone).",
        "",
        "| variant | top-1 % | top-5 % | top-10 % | paper top-1 % | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in results:
        lines.append(
            f"| {row.variant} | {row.top1:.2f} | {row.top5:.2f} | {row.top10:.2f} | "
            f"{PAPER_NOTES.get(row.variant, '')} | {row.seconds:.0f} |"
        )
    error = "n/a" if error_pct is None else f"{error_pct:.2f}% of the image size"
    lines += [
        "",
        f"Landmark predictor error on held-out training images: {error}.",
        f"This invocation {seconds / 60:.1f} min on {_lscpu_model()} (torch threads: "
        f"{setting.threads or torch.get_num_threads()}), on a shared machine; the re-ID "
        f"training runs took {training_seconds / 60:.1f} min in all (their logs; a resumed "
        "experiment trains only the missing runs). The seconds column is a run's training time "
        "(from its log) plus its evaluation.",
        "",
    ]
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
