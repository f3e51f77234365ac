"""Hyper-parameter search with Optuna over :func:`~wildreid.training.trainer.train` runs.

Each trial trains the configuration with sampled values and is scored by its best validation
mAP (the validation split is carved from the training side, so tuning never sees the test rows).
Searched, where the configuration has the piece: the learning rate, the embedding size, the
triplet margin and mining strategy, and the ArcFace margin and scale. The trials' results are
written to ``OUT/trials.csv`` and the best configuration to ``OUT/best.yaml``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from wildreid.config import dump_config
from wildreid.errors import ConfigError
from wildreid.files import atomic_path
from wildreid.losses import LossSpec
from wildreid.training.config import TrainConfig
from wildreid.training.trainer import train

__all__ = ["TuneResult", "TuneSpace", "sample_config", "tune"]

logger = logging.getLogger(__name__)

_ARCFACE_LOSSES = ("arcface", "subcenter_arcface")


@dataclass(frozen=True)
class TuneSpace:
    """The ranges searched (log-uniform for the learning rate, uniform otherwise)."""

    lr: tuple[float, float] = (1e-5, 3e-3)
    embedding_dims: tuple[int, ...] = (128, 256, 512)
    triplet_margin: tuple[float, float] = (0.1, 0.5)
    mining: tuple[str, ...] = ("all", "semihard", "hard")
    arcface_margin_rad: tuple[float, float] = (0.2, 0.6)
    arcface_scale: tuple[float, float] = (16.0, 64.0)


@dataclass(frozen=True)
class TuneResult:
    """The trials table (one row per trial: number, params, val metrics) and the best trial."""

    trials: pd.DataFrame
    best_params: dict[str, Any]
    best_value: float
    best_config_path: Path
    trials_path: Path


def _sample_loss(spec: LossSpec, trial: Any, space: TuneSpace) -> LossSpec:
    params = dict(spec.params)
    if spec.name == "triplet":
        params["margin"] = trial.suggest_float("triplet_margin", *space.triplet_margin)
        params["mining"] = trial.suggest_categorical("mining", list(space.mining))
    elif spec.name in _ARCFACE_LOSSES:
        params["margin_rad"] = trial.suggest_float("arcface_margin_rad", *space.arcface_margin_rad)
        params["scale"] = trial.suggest_float("arcface_scale", *space.arcface_scale)
    else:
        return spec
    return replace(spec, params=params)


def sample_config(
    config: TrainConfig, trial: Any, *, space: TuneSpace = TuneSpace()
) -> TrainConfig:
    """``config`` with the searched values drawn from ``trial`` (an ``optuna.Trial``)."""
    lr = trial.suggest_float("lr", *space.lr, log=True)
    model = config.model
    if model.embedding_dim is not None:
        dim = trial.suggest_categorical("embedding_dim", list(space.embedding_dims))
        model = replace(model, embedding_dim=int(dim))
    return replace(
        config,
        optim=replace(config.optim, lr=lr),
        model=model,
        losses=tuple(_sample_loss(spec, trial, space) for spec in config.losses),
    )


def tune(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    trials: int,
    seed: int = 0,
    space: TuneSpace = TuneSpace(),
    on_trial: Callable[[int, dict[str, Any], float], None] | None = None,
) -> TuneResult:
    """Run ``trials`` training runs under Optuna's TPE sampler; maximise validation mAP.

    Args:
        config: the base configuration; it must have validation (``data.val_fraction > 0``).
        out_dir: trial runs go to ``out_dir/trial-NNN``; ``trials.csv`` and ``best.yaml`` too.
        trials: the number of trials (>= 1).
        seed: the sampler's seed (the trials' training seed is ``config.train.seed``).
        on_trial: called after each trial with its number, params and mAP.

    Raises:
        ConfigError: ``trials < 1`` or no validation split to score trials on.
    """
    import optuna  # deferred: only tuning needs it

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if config.data.val_fraction <= 0:
        raise ConfigError("tuning scores trials on validation mAP: set data.val_fraction > 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        sampled = sample_config(config, trial, space=space)
        result = train(sampled, out_dir=out / f"trial-{trial.number:03d}")
        value = float(result.best_metrics.get("mAP", 0.0))
        records.append(
            {
                "trial": trial.number,
                **trial.params,
                **{f"val_{k}": v for k, v in result.best_metrics.items()},
                "best_epoch": result.best_epoch,
                "seconds": round(result.seconds, 1),
            }
        )
        _write_table(records, out / "trials.csv")
        if on_trial is not None:
            on_trial(trial.number, dict(trial.params), value)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best_config = sample_config(config, study.best_trial, space=space)
    best_path = out / "best.yaml"
    with atomic_path(best_path) as tmp:
        tmp.write_text(dump_config(best_config))
    table = pd.DataFrame(records)
    logger.info(
        "best trial %d: mAP %.4f %s", study.best_trial.number, study.best_value, study.best_params
    )
    return TuneResult(
        trials=table,
        best_params=dict(study.best_params),
        best_value=float(study.best_value),
        best_config_path=best_path,
        trials_path=out / "trials.csv",
    )


def _write_table(records: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(records).to_csv(tmp, index=False)
