"""``wildreid experiment``: studies that train and evaluate several models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import (
    BodyVisibleOpt,
    DeviceOpt,
    KeypointsOpt,
    PairScoreOpt,
    WorkingSizeOpt,
    optional_rerank_config,
)
from wildreid.cli.output import echo_json, stdout_console
from wildreid.errors import ConfigError

__all__ = ["app"]

app = typer.Typer(
    help="Studies that train and evaluate several models (results.csv + plots).",
    no_args_is_help=True,
)


@app.command("training-size")
def training_size(
    config: Annotated[
        Path, typer.Option("--config", help="Training config YAML (as for `wildreid train`).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Study folder to write.", file_okay=False)],
    fractions: Annotated[
        str,
        typer.Option(
            "--fractions",
            help="Increasing fractions in (0, 1] of each identity's training images.",
        ),
    ] = "0.1,0.25,0.5,1.0",
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a training config value, key.path=value (repeatable); "
            "data.val_fraction is 0 unless set here.",
        ),
    ] = None,
    rerank: Annotated[
        str,
        typer.Option(
            "--rerank",
            help="Local method for the local and fusion lines: rootsift (the best on the shared "
            "datasets, see README), sift, aliked-lightglue, disk-lightglue, or none.",
        ),
    ] = "rootsift",
    shortlist: Annotated[
        int | None,
        typer.Option(
            "--shortlist",
            min=0,
            help="Fine-tuned candidates per query that the fusion line re-orders (0: the whole "
            "gallery) (default: the method's shortlist, 300 for sift and rootsift).",
        ),
    ] = None,
    local_shortlist: Annotated[
        int,
        typer.Option(
            "--local-shortlist",
            min=0,
            help="Gallery images matched per query for the local line: 0 = all, "
            "else the zero-shot top-N.",
        ),
    ] = 0,
    fusion: Annotated[
        str,
        typer.Option(
            "--fusion",
            help="How the fusion line re-orders the fine-tuned shortlist: rank (sum of the "
            "global and local ranks) or local (the local score, ties by the global one).",
        ),
    ] = "rank",
    max_queries: Annotated[
        int | None,
        typer.Option(
            "--max-queries",
            min=1,
            help="Score a deterministic sample of at most N queries (the sample of "
            "`wildreid evaluate --max-queries`); the gallery stays whole.",
        ),
    ] = None,
    pair_score: PairScoreOpt = None,
    max_keypoints: KeypointsOpt = None,
    working_size: WorkingSizeOpt = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the subsets.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Local features vs end-to-end training: train on growing fractions of each identity's
    images and plot top-1 of zero-shot, fine-tuned, local matching and their fusion."""
    from wildreid.config import load_config  # deferred: the config imports torch
    from wildreid.experiments.training_size import (
        StudyConfig,
        parse_fractions,
        run_training_size,
    )
    from wildreid.training.config import TrainConfig, check_config

    chosen = parse_fractions(fractions)
    if not config.is_file():
        raise ConfigError(f"{config}: config file does not exist; give --config run.yaml")
    settings = load_config(
        config, TrainConfig, overrides=("data.val_fraction=0", *(overrides or ()))
    )
    check_config(settings)
    local = optional_rerank_config(
        rerank,
        shortlist=shortlist,
        pair_score=pair_score,
        fusion=None if rerank == "none" else fusion,  # a default, not a choice, without one
        max_keypoints=max_keypoints,
        working_size=working_size,
    )
    study = StudyConfig(
        fractions=chosen,
        rerank=local,
        local_shortlist=local_shortlist,
        max_queries=max_queries,
        seed=seed,
    )
    console = stdout_console()
    result = run_training_size(
        settings,
        out_dir=out,
        study=study,
        progress=None if as_json else lambda message: console.print(f"- {message}"),
    )
    if as_json:
        echo_json(list(result.rows))
        return
    for row in result.rows:
        seconds = f"  trained {row['train_seconds']} s" if row["train_seconds"] != "" else ""
        console.print(
            f"{row['fraction']:>5g}  {row['images_per_identity']:>6.2f} img/id  "
            f"{row['method']:<10}  top-1 {100 * row['top1']:5.1f}%  "
            f"top-5 {100 * row['top5']:5.1f}%  mAP {100 * row['mAP']:5.1f}%{seconds}",
            highlight=False,
        )
    console.print(
        f"wrote {result.results_csv}, {result.plot} and {result.config_yaml}"
        + (
            f"; {result.local_pairs} pairs matched locally in {result.local_seconds:.0f} s"
            if local is not None
            else ""
        ),
        highlight=False,
    )


@app.command("landmark-id")
def landmark_id(
    out: Annotated[Path, typer.Option("--out", help="Experiment folder.", file_okay=False)],
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="cpu (small: about 75 min on 2 cores, 24-epoch controls included) or paper (GPU).",
        ),
    ] = "cpu",
    body_visible: BodyVisibleOpt = False,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Landmark-Id on the synthetic dataset: baseline, stage 1, stage 2, blob radius, MLA,
    annotated vs predicted landmarks; writes results.csv and results.md."""
    from wildreid.experiments.landmark_id import run_landmark_id  # deferred: imports torch

    rows = run_landmark_id(
        scale=scale,
        out=out,
        device=device,
        body_visible=body_visible,
        log=lambda m: typer.echo(m, err=True),
    )
    if as_json:
        echo_json([row.__dict__ for row in rows])
        return
    lines = [
        f"{r.variant:20s} top-1 {r.top1:6.2f}%  top-5 {r.top5:6.2f}%  top-10 {r.top10:6.2f}%"
        for r in rows
    ]
    stdout_console().print(
        "\n".join([*lines, f"wrote {out / 'results.csv'} and {out / 'results.md'}"]),
        highlight=False,
    )
