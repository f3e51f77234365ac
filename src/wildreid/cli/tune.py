"""``wildreid tune``: Optuna search over training hyper-parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from wildreid.cli.output import stdout_console

__all__ = ["tune"]


def tune(
    config: Annotated[Path, typer.Option("--config", help="Training YAML.", dir_okay=False)],
    trials: Annotated[int, typer.Option("--trials", min=1, help="Training runs to try.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: tune-<config name>).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value: key.path=value (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of Optuna's sampler.")] = 0,
) -> None:
    """Search learning rate, loss margins / scale, mining and embedding size (val mAP)."""
    from rich.table import Table

    from wildreid.config import load_config  # deferred: imports torch
    from wildreid.training.config import TrainConfig
    from wildreid.training.tuning import tune as run_tune

    train_config = load_config(config, TrainConfig, overrides=tuple(overrides or ()))
    out_dir = out if out is not None else Path(f"tune-{config.stem}")

    def report(number: int, params: dict[str, Any], value: float) -> None:
        typer.echo(f"trial {number}: val mAP {100 * value:.1f}% {params}", err=True)

    result = run_tune(train_config, out_dir=out_dir, trials=trials, seed=seed, on_trial=report)
    table = Table(*map(str, result.trials.columns), title=f"{trials} trials")
    for row in result.trials.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console = stdout_console()
    console.print(table)
    console.print(
        f"best val mAP {100 * result.best_value:.1f}% with {result.best_params}\n"
        f"wrote {result.trials_path} and {result.best_config_path}",
        highlight=False,
    )
