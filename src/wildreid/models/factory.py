"""The model zoo: a registry of named models, their cards, and loading.

Names ``load_model`` understands, in this order:

1. a registered name (:func:`list_models`): ``efficientnet-lite0`` (the offline default),
   ``efficientnet-lite1/2``, ``megadescriptor-{t,s,b,l}-224``, ``megadescriptor-l-384``,
   ``miewid-msv3``, ``dinov2-{s,b,l}``, ``dinov3-{s,b,l}``, ``clip-vit-b-16``;
2. ``timm/<name>`` (any timm model with pretrained weights) and ``hf-hub:<repo>``;
3. a path: a wildreid checkpoint file, or a run directory holding ``model.pt``
   (an ``os.PathLike`` is always a path; a string is one when it exists or contains a ``/``
   or ends in ``.pt``/``.pth``/``.ckpt``).

``weights=`` replaces the weights file of a registered or timm model and goes through the same
code as the default source (this is how to use a manually downloaded file, and how the hub
models are tested offline). ``weights="random"`` gives the untrained architecture.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from wildreid.device import resolve_device
from wildreid.errors import ConfigError, WeightsError
from wildreid.models import backbones, efficientnet_lite, hub, miewid
from wildreid.models.cards import DEFAULT_MODEL, ModelCard
from wildreid.models.checkpoint import load_checkpoint, save_checkpoint
from wildreid.models.heads import EmbeddingNet
from wildreid.models.specs import ModelSpec
from wildreid.models.weights import file_sha256
from wildreid.registry import Registry
from wildreid.types import EmbeddingSpace

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "RANDOM_WEIGHTS",
    "EmbeddingModel",
    "list_models",
    "load_model",
    "model_card",
    "model_spec",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS = "random"
"""``weights=RANDOM_WEIGHTS``: the architecture with random initialisation (space sha "random")."""

_PATH_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass(frozen=True, eq=False)
class EmbeddingModel:
    """A loaded model, ready to embed.

    Attributes:
        module: eval mode, on the requested device; (B, 3, H, W) normalised -> (B, D), not
            L2-normalised.
        card: the card as loaded: ``weights_sha256`` filled in, ``weights_source`` is
            ``file:<path>`` when the weights came from ``weights=`` or a checkpoint.
        space: model name, weights SHA-256, input size, mean/std, crop mode and dimension.
    """

    module: nn.Module
    card: ModelCard
    space: EmbeddingSpace


def _build_registry() -> Registry[ModelSpec]:
    registry: Registry[ModelSpec] = Registry("model")
    for spec in (*efficientnet_lite.specs(), *miewid.specs(), *backbones.specs()):
        registry.add(spec.card.name, spec)
    return registry


MODELS: Registry[ModelSpec] = _build_registry()
"""Every registered model, by name."""


def list_models() -> list[ModelCard]:
    """Every registered model's card, sorted by name, then the ``timm/<name>`` and
    ``hf-hub:<repo>`` pattern entries (``embedding_dim`` 0). No weights are loaded."""
    return [MODELS.get(name).card for name in MODELS.names()] + hub.pattern_cards()


def model_spec(name: str) -> ModelSpec:
    """The spec of a registered name, ``timm/<name>`` or ``hf-hub:<repo>``.

    Raises:
        UnknownComponentError: unknown name (close names suggested).
        WeightsError: an ``hf-hub:`` repository's config cannot be fetched.
    """
    if name in MODELS:
        return MODELS.get(name)
    if name.startswith(hub.TIMM_PREFIX):
        return hub.timm_spec(name[len(hub.TIMM_PREFIX) :])
    if name.startswith(hub.HF_HUB_PREFIX):
        return hub.hf_hub_spec(name[len(hub.HF_HUB_PREFIX) :])
    return MODELS.get(name)


def model_card(name: str) -> ModelCard:
    """The card of a model name (see :func:`model_spec`); nothing is loaded."""
    return model_spec(name).card


def _is_path(name: str | os.PathLike[str]) -> bool:
    if isinstance(name, os.PathLike):
        return True
    if name in MODELS or name.startswith((hub.TIMM_PREFIX, hub.HF_HUB_PREFIX)):
        return False
    return Path(name).exists() or "/" in name or os.sep in name or name.endswith(_PATH_SUFFIXES)


def load_model(
    name: str | os.PathLike[str],
    *,
    device: str = "cpu",
    weights: str | os.PathLike[str] | None = None,
) -> EmbeddingModel:
    """Load a model by name or checkpoint path (see the module doc for the names).

    Args:
        name: registered name, ``timm/<name>``, ``hf-hub:<repo>``, or checkpoint path.
        device: ``cpu``, ``cuda[:N]``, ``mps`` or ``auto``.
        weights: a local weights file replacing the model's default source, or ``"random"``.

    Raises:
        UnknownComponentError: unknown name (close names suggested).
        WeightsError: weights missing, not downloadable (the message says how to pass a file),
            unreadable, or not fitting the architecture.
        ConfigError: bad device, or ``weights=`` given with a checkpoint path.
    """
    target = resolve_device(device)
    if _is_path(name):
        if weights is not None:
            raise ConfigError(f"weights= cannot be combined with checkpoint path {name}")
        loaded = load_checkpoint(name)
        net: EmbeddingNet = loaded.net
        sha = file_sha256(loaded.file)
        card = replace(loaded.card, weights_source=f"file:{loaded.file}", weights_sha256=sha)
    else:
        spec = model_spec(str(name))
        if isinstance(weights, str) and weights == RANDOM_WEIGHTS:
            net = EmbeddingNet.from_config(spec.net_config)
            sha = RANDOM_WEIGHTS
            card = replace(spec.card, weights_source=RANDOM_WEIGHTS, weights_sha256=None)
        else:
            override = Path(weights) if weights is not None else None
            net, file = spec.load(override)
            sha = file_sha256(file)
            pinned = spec.card.weights_sha256
            if override is None and pinned is not None and sha != pinned:
                raise WeightsError(
                    f"{spec.card.name}: weights file {file} has SHA-256 {sha}, expected "
                    f"{pinned}; the file is damaged or from another release "
                    f"({spec.card.weights_source}); reinstall it"
                )
            source = f"file:{file}" if override is not None else spec.card.weights_source
            card = replace(spec.card, weights_source=source, weights_sha256=sha)
    if net.embedding_dim != card.embedding_dim:
        raise WeightsError(
            f"{card.name}: the net outputs {net.embedding_dim} values but the card says "
            f"{card.embedding_dim}"
        )
    net = net.eval().to(target)
    space = EmbeddingSpace(
        model=card.name,
        weights_sha256=sha,
        input_size=card.input_size,
        mean=card.mean,
        std=card.std,
        crop_mode=card.crop_mode,
        dim=card.embedding_dim,
    )
    logger.info("loaded %s on %s", space.describe(), target)
    return EmbeddingModel(module=net, card=card, space=space)
