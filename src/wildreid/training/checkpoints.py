"""Files a training run writes next to each other in its run directory.

* ``model.pt``: the best model (or the last, without validation) in wildreid's own checkpoint
  format (:func:`wildreid.models.checkpoint.save_checkpoint`), with a card named
  ``trained:<run folder>`` that keeps the base model's preprocessing and licence. It is what
  ``load_model(RUN_DIR)``, ``wildreid embed --model RUN_DIR`` and ``wildreid evaluate --model
  RUN_DIR`` load.
* ``last.pt``: the training state at the end of the last finished epoch, for an exact resume:
  network, loss parameters, optimizers, scheduler, gradient scaler, epoch and step, the random
  generator states of Python, NumPy and torch (CPU and CUDA) of every rank, the sampler's
  epoch, the best validation so far, the history and the resolved config. Plain values and
  tensors only, read back with ``torch.load(weights_only=True)``.

* ``config.yaml``: the resolved config (paths made absolute), rewritten on resume.

Files are written to a temporary sibling and renamed into place, so a crash never leaves half a
file.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wildreid.config import dump_config, to_dict
from wildreid.errors import ConfigError, WeightsError
from wildreid.files import atomic_path
from wildreid.models.cards import ModelCard
from wildreid.models.checkpoint import CHECKPOINT_FILENAME
from wildreid.models.factory import RANDOM_WEIGHTS
from wildreid.models.heads import EmbeddingNet
from wildreid.models.weights import check_state_dict_fits, describe_object, load_torch_file
from wildreid.training.config import TrainConfig

__all__ = [
    "CONFIG_FILENAME",
    "LAST_FILENAME",
    "STATE_FORMAT",
    "STATE_VERSION",
    "TrainingState",
    "absolute_paths",
    "capture_rng",
    "check_resumable",
    "compare_configs",
    "load_training_state",
    "open_run_dir",
    "restore_rng",
    "save_training_state",
    "trained_card",
]

logger = logging.getLogger(__name__)

LAST_FILENAME = "last.pt"
CONFIG_FILENAME = "config.yaml"
STATE_FORMAT = "wildreid-train-state"
STATE_VERSION = 1


def capture_rng() -> dict[str, Any]:
    """This process's random generator states (Python, NumPy legacy global, torch, CUDA)."""
    numpy_state = np.random.get_state(legacy=False)
    assert isinstance(numpy_state, dict)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(numpy_state["state"]["key"], dtype=np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Set the generators to a :func:`capture_rng` result."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": saved["bit_generator"],
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@dataclass(frozen=True, eq=False)
class TrainingState:
    """Everything needed to continue a run exactly where it stopped.

    Attributes:
        epoch: epochs finished.
        step: optimizer steps taken.
        net: the network's state dict; ``net_config``: ``NetConfig.to_dict()``.
        losses: the loss module's state dict (class weights, centres).
        optimizers: state dicts of the main optimizer and, when there is one, the loss
            parameters' own SGD.
        scheduler: the learning-rate scheduler's state dict.
        scaler: the gradient scaler's state dict.
        rng: :func:`capture_rng` of every rank, in rank order.
        sampler_epoch: the epoch the sampler's schedule continues from.
        best: ``metrics`` (dict), ``epoch`` (int or None), ``bad_validations`` (int).
        history: one record per finished epoch (see :mod:`wildreid.training.logs`).
        config: the resolved training config (plain values).
    """

    epoch: int
    step: int
    net: dict[str, torch.Tensor]
    net_config: dict[str, Any]
    losses: dict[str, torch.Tensor]
    optimizers: list[dict[str, Any]]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: list[dict[str, Any]]
    sampler_epoch: int
    best: dict[str, Any]
    history: list[dict[str, Any]]
    config: dict[str, Any]


def save_training_state(path: Path, state: TrainingState) -> Path:
    """Write ``state`` to ``path`` atomically; returns ``path``."""
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        **{name: getattr(state, name) for name in TrainingState.__dataclass_fields__},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    logger.debug("training state of epoch %d written to %s", state.epoch, path)
    return path


def load_training_state(path: Path) -> TrainingState:
    """Read a ``last.pt``.

    Raises:
        WeightsError: missing, unreadable, not a wildreid training state (the message says
            what it seems to be), or of another format version.
    """
    if not path.is_file():
        raise WeightsError(f"no training state to resume from: {path} does not exist")
    raw: Any = load_torch_file(path, not_readable=f"{path} is not a wildreid training state")
    if not isinstance(raw, Mapping) or raw.get("format") != STATE_FORMAT:
        raise WeightsError(
            f"{path} is not a wildreid training state (last.pt): it holds {describe_object(raw)}"
        )
    if raw.get("version") != STATE_VERSION:
        raise WeightsError(
            f"{path}: training state format version {raw.get('version')}; this wildreid reads "
            f"version {STATE_VERSION}"
        )
    try:
        return TrainingState(**{name: raw[name] for name in TrainingState.__dataclass_fields__})
    except (KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: damaged training state (missing {exc})") from exc


def check_resumable(
    state: TrainingState, *, path: Path, net: EmbeddingNet, losses: nn.Module
) -> None:
    """Raise unless ``state`` was saved by this architecture (network and loss parameters).

    Raises:
        WeightsError: "checkpoint from another architecture", naming what differs.
    """
    assert net.config is not None
    saved = state.net_config
    current = net.config.to_dict()
    if saved != current:
        changed = sorted(k for k in {*saved, *current} if saved.get(k) != current.get(k))
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise WeightsError(
            f"{path}: checkpoint from another architecture ({details}); resume with the "
            "run's own config.yaml, or train into a new --out folder"
        )
    check_state_dict_fits(net, state.net, what=str(path))
    check_state_dict_fits(losses, state.losses, what=f"{path} (loss parameters)")


def trained_card(
    base: ModelCard,
    *,
    run_dir: Path,
    net: EmbeddingNet,
    input_size: tuple[int, int],
    losses: str,
) -> ModelCard:
    """The card of a model trained in ``run_dir`` from ``base``.

    It keeps the base's preprocessing (mean, std, crop mode; ``input_size`` as trained) and
    licence (the fine-tuned weights derive from the base's); its name is
    ``trained:<run folder name>``.
    """
    return replace(
        base,
        name=f"trained:{run_dir.resolve().name}",
        embedding_dim=net.embedding_dim,
        input_size=input_size,
        weights_source=f"file:{run_dir / CHECKPOINT_FILENAME}",
        weights_sha256=None,
        summary=f"fine-tuned from {base.name} ({base.weights_source}) with {losses}",
        landmarks=tuple(net.landmarks),
    )


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """Paths made absolute (they were relative to the current directory)."""
    data = config.data
    data = replace(
        data,
        metadata=data.metadata.absolute(),
        split=None if data.split is None else data.split.absolute(),
        root=None if data.root is None else data.root.absolute(),
    )
    weights = config.model.weights
    if weights is not None and weights != RANDOM_WEIGHTS:
        weights = str(Path(weights).absolute())
    return replace(config, data=data, model=replace(config.model, weights=weights))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def compare_configs(saved: dict[str, Any], current: dict[str, Any], *, path: Path) -> None:
    """WeightsError when the ``model`` section changed; a warning for other changes."""
    old, new = _flat(saved), _flat(current)
    changed = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    model = [k for k in changed if k.startswith("model.")]
    if model:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in model)
        raise WeightsError(
            f"{path}: checkpoint from another architecture: the config's model section differs "
            f"from the run's ({details}); resume with the run's config.yaml, or train into a "
            "new --out folder"
        )
    if changed:
        logger.warning(
            "resuming with a changed config: %s",
            "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed),
        )


def open_run_dir(
    run_dir: Path, config: TrainConfig, *, resume: bool, write: bool
) -> TrainingState | None:
    """Check the run directory for a new or resumed run and write ``config.yaml`` into it.

    Args:
        run_dir: the run directory (created if needed).
        config: the resolved config (:func:`absolute_paths`).
        resume: continue the run it holds.
        write: write ``config.yaml`` (rank 0 only).

    Returns:
        The saved training state when resuming, else ``None``.

    Raises:
        ConfigError: resuming a folder without ``last.pt``, or starting in one that holds a
            run already.
        WeightsError: an unreadable ``last.pt``, or a config whose ``model`` section differs
            from the run's.
    """
    last = run_dir / LAST_FILENAME
    state: TrainingState | None = None
    if resume:
        if not last.is_file():
            raise ConfigError(f"cannot resume: {run_dir} holds no {LAST_FILENAME}")
        state = load_training_state(last)
        compare_configs(state.config, to_dict(config), path=last)
    elif last.exists() or (run_dir / CHECKPOINT_FILENAME).exists():
        raise ConfigError(
            f"{run_dir} already holds a training run; continue it with --resume or choose "
            "another --out folder"
        )
    if write:
        with atomic_path(run_dir / CONFIG_FILENAME) as tmp:
            tmp.write_text(dump_config(config), encoding="utf-8")
    return state
