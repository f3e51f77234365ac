"""``wildreid train``: fine-tune an embedding model from a YAML config.

The whole config (file, then ``--set`` overrides) is validated before anything is loaded; an
unknown key or a bad value exits with code 2 and names the key. Paths in the config are
relative to the current directory. Several processes (GPUs)::

    torchrun --nproc_per_node 2 $(which wildreid) train --config run.yaml --out runs/x

(only rank 0 draws progress, prints and writes files).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wildreid.cli.output import echo_json, stderr_progress, stdout_console
from wildreid.errors import ConfigError

if TYPE_CHECKING:
    from wildreid.training.trainer import TrainProgress

__all__ = ["train"]

_SHOWN = ("top1", "top5", "mAP", "mINP")


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[Callable[[TrainProgress], None] | None]:
    """Two bars on stderr (epochs, batches of the epoch); ``None`` when disabled."""
    if not enabled:
        yield None
        return
    with stderr_progress() as bars:
        epochs = bars.add_task("epochs", total=None)
        batches = bars.add_task("batches", total=None)

        def update(event: TrainProgress) -> None:
            done = event.epoch if event.phase == "epoch" else event.epoch - 1
            bars.update(epochs, completed=done, total=event.epochs)
            label = "validating" if event.phase == "validate" else f"epoch {event.epoch}"
            bars.update(batches, completed=event.batch, total=event.batches, description=label)

        yield update


def train(
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.", file_okay=False)],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Training config YAML (with --resume, default: the run's config.yaml).",
            dir_okay=False,
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config value, key.path=value (YAML value; repeatable), "
            "e.g. --set optim.lr=3e-4 --set data.split_column=md_split.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fine-tune an embedding model (backbone + GeM/BNNeck head) with metric-learning losses."""
    from wildreid.config import load_config  # deferred: the config imports torch
    from wildreid.training.checkpoints import CONFIG_FILENAME
    from wildreid.training.config import TrainConfig, check_config

    if config is None:
        if not resume:
            raise ConfigError("give --config run.yaml (or --resume to continue a run in --out)")
        config = out / CONFIG_FILENAME
        if not config.is_file():
            raise ConfigError(f"cannot resume: {out} holds no {CONFIG_FILENAME}; give --config")
    from wildreid.config import read_yaml

    raw = read_yaml(config)
    if raw.get("task") == "landmarks":
        _train_landmarks(raw, out, tuple(overrides or ()), resume=resume, as_json=as_json)
        return
    settings = load_config(config, TrainConfig, overrides=tuple(overrides or ()))
    check_config(settings)

    from wildreid.training.trainer import train as run_training

    main_rank = os.environ.get("RANK", "0") == "0"
    with _progress_bars(main_rank) as progress:
        result = run_training(settings, out_dir=out, resume=resume, progress=progress)
    if not main_rank:
        return
    summary: dict[str, Any] = {
        "run_dir": str(result.run_dir),
        "checkpoint": str(result.checkpoint_path),
        "best_epoch": result.best_epoch,
        "best_metrics": result.best_metrics,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "excluded_identities": result.excluded_identities,
        "seconds": round(result.seconds, 1),
    }
    if as_json:
        echo_json(summary)
        return
    metrics = result.best_metrics
    shown = "  ".join(f"{k} {100 * metrics[k]:.1f}%" for k in _SHOWN if k in metrics)
    best = (
        f"best epoch {result.best_epoch}: val {shown}"
        if metrics
        else f"no validation; model of epoch {result.best_epoch}"
    )
    stopped = " (stopped early)" if result.stopped_early else ""
    stdout_console().print(
        f"trained {result.epochs_run} epoch(s){stopped} in {result.seconds:.0f} s; {best}\n"
        f"model: {result.checkpoint_path} (use --model {result.run_dir})",
        highlight=False,
    )


def _train_landmarks(
    raw: dict[str, Any], out: Path, overrides: tuple[str, ...], *, resume: bool, as_json: bool
) -> None:
    """A landmark predictor's config (``task: landmarks``)."""
    from wildreid.config import load_config
    from wildreid.training.landmarks import LandmarkTrainConfig, train_landmark_predictor

    if resume:
        raise ConfigError("--resume is not supported for landmark predictors; train again")
    settings = load_config(
        {k: v for k, v in raw.items() if k != "task"}, LandmarkTrainConfig, overrides=overrides
    )
    result = train_landmark_predictor(settings, out_dir=out)
    summary = {
        "run_dir": str(result.run_dir),
        "predictor": str(result.predictor_path),
        "error_pct": result.error_pct,
        "val_images": result.val_images,
        "seconds": round(result.seconds, 1),
    }
    if as_json:
        echo_json(summary)
        return
    error = "n/a" if result.error_pct is None else f"{result.error_pct:.2f}% of the image size"
    stdout_console().print(
        f"trained a landmark predictor in {result.seconds:.0f} s; mean error on "
        f"{result.val_images} val images: {error}\npredictor: {result.predictor_path} "
        f"(use --landmarks predicted --landmark-model {result.run_dir})",
        highlight=False,
    )
