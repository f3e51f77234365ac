"""wildreid's own checkpoint format: one ``torch.save`` file, readable with ``weights_only``.

Layout (plain types and tensors only)::

    {
        "format": "wildreid-checkpoint",
        "version": 1,
        "card": dataclasses.asdict(ModelCard),
        "net": NetConfig.to_dict(),  # backbone, pooling, embedding_dim, bnneck, backbone_kwargs
        "state_dict": EmbeddingNet.state_dict(),
        "config": {...},              # e.g. the resolved training config
    }

A run directory holds it as ``model.pt``; :func:`checkpoint_file` accepts either.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from wildreid.errors import ConfigError, WeightsError
from wildreid.files import atomic_path
from wildreid.models.cards import ModelCard
from wildreid.models.heads import EmbeddingNet, NetConfig
from wildreid.models.weights import check_state_dict_fits, describe_object, load_torch_file

__all__ = [
    "CHECKPOINT_FILENAME",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LoadedCheckpoint",
    "checkpoint_file",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "wildreid-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILENAME = "model.pt"


def _check_plain(value: object, where: str) -> None:
    """Raise ConfigError unless ``value`` is built from str/int/float/bool/None/list/dict."""
    if value is None or isinstance(value, str | int | float | bool):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: key {key!r} must be a string")
            _check_plain(item, f"{where}.{key}")
        return
    raise ConfigError(
        f"{where} is a {type(value).__name__}; checkpoints hold only plain values "
        "(str, int, float, bool, None, lists, dicts)"
    )


def checkpoint_file(path: Path) -> Path:
    """``path`` itself, or ``path / "model.pt"`` when ``path`` is a run directory."""
    return path / CHECKPOINT_FILENAME if path.is_dir() else path


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    net: EmbeddingNet,
    card: ModelCard,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``net`` with its card (and e.g. the training config) in wildreid's format.

    The file is written next to its destination and renamed into place, so a crash never
    leaves half a checkpoint. A directory, or a path without a suffix (``runs/x``), is a run
    directory and gets ``model.pt`` inside it (created when needed).

    Returns:
        The file written.

    Raises:
        ConfigError: the net has no :class:`NetConfig`, the card's dimension differs from the
            net's, or ``config`` holds non-plain values.
    """
    if net.config is None:
        raise ConfigError(
            "this EmbeddingNet has no NetConfig (build it with EmbeddingNet.from_config or "
            "load_model), so a checkpoint could not rebuild it"
        )
    if card.embedding_dim != net.embedding_dim:
        raise ConfigError(
            f"card {card.name!r} says embedding_dim {card.embedding_dim} but the net outputs "
            f"{net.embedding_dim}; use dataclasses.replace(card, embedding_dim=...)"
        )
    payload_config = dict(config or {})
    _check_plain(payload_config, "config")
    net_dict = net.config.to_dict()
    _check_plain(net_dict, "net")
    given = Path(path)
    target = given / CHECKPOINT_FILENAME if given.is_dir() or not given.suffix else given
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "card": asdict(card),
        "net": net_dict,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "config": payload_config,
    }
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    logger.info("checkpoint of %s written to %s", card.name, target)
    return target


@dataclass(frozen=True, eq=False)
class LoadedCheckpoint:
    """A checkpoint read back: the net (CPU, eval mode), its card, file and config."""

    net: EmbeddingNet
    card: ModelCard
    file: Path
    config: dict[str, Any]


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read a checkpoint file, or ``model.pt`` in a run directory.

    Raises:
        WeightsError: the path is missing; the file is not a wildreid checkpoint (the message
            says what it seems to be); it is from a newer format version; or its state dict
            does not fit its architecture (missing / unexpected keys, shape mismatches).
    """
    given = Path(path)
    file = checkpoint_file(given)
    if not file.is_file():
        where = (
            f"run directory {given} has no {CHECKPOINT_FILENAME}"
            if given.is_dir()
            else (f"checkpoint {file} does not exist")
        )
        raise WeightsError(where)
    raw: Any = load_torch_file(file, not_readable=f"{file} is not a wildreid checkpoint")
    if not isinstance(raw, Mapping) or raw.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"{file} is not a wildreid checkpoint: it holds {describe_object(raw)}; a bare "
            "state dict can be loaded as weights= of a registered model"
        )
    version = raw.get("version")
    if version != CHECKPOINT_VERSION:
        raise WeightsError(
            f"{file} is a wildreid checkpoint of format version {version}; this wildreid reads "
            f"version {CHECKPOINT_VERSION} (upgrade wildreid)"
        )
    try:
        card = ModelCard.from_dict(raw["card"])
        net_config = NetConfig.from_dict(raw["net"])
        state_dict = raw["state_dict"]
        config = dict(raw.get("config") or {})
    except (KeyError, TypeError, ConfigError) as exc:
        raise WeightsError(f"{file}: damaged wildreid checkpoint ({exc})") from exc
    net = EmbeddingNet.from_config(net_config)
    check_state_dict_fits(net, state_dict, what=str(file))
    net.load_state_dict(state_dict)
    if net.embedding_dim != card.embedding_dim:
        raise WeightsError(
            f"{file}: card says embedding_dim {card.embedding_dim}, the net gives "
            f"{net.embedding_dim}"
        )
    logger.info("checkpoint %s (%s) loaded", file, card.name)
    return LoadedCheckpoint(net.eval(), card, file, config)
