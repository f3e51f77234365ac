"""``wildreid experiment``: benchmarks that train and evaluate several models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import DeviceOpt
from wildreid.cli.output import echo_json, stdout_console

__all__ = ["app"]

app = typer.Typer(help="Run reproducible experiments (train + evaluate).", no_args_is_help=True)


@app.command("landmark-id")
def landmark_id(
    out: Annotated[Path, typer.Option("--out", help="Experiment folder.", file_okay=False)],
    scale: Annotated[
        str, typer.Option("--scale", help="cpu (small, well under an hour) or paper (GPU).")
    ] = "cpu",
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Landmark-Id on the synthetic dataset: baseline, stage 1, stage 2, blob radius, MLA,
    annotated vs predicted landmarks; writes results.csv and results.md."""
    from wildreid.experiments.landmark_id import run_landmark_id  # deferred: imports torch

    rows = run_landmark_id(
        scale=scale, out=out, device=device, log=lambda m: typer.echo(m, err=True)
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
