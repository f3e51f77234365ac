"""MiewID-msv3 (Conservation X Labs / Wild Me): a multi-species re-ID model.

Architecture (rebuilt here from our own parts, no remote code): timm ``efficientnetv2_rw_m``
feature maps (2152 channels) -> GeM pooling -> BatchNorm1d neck; the embedding is the BN output
(2152-d). Input 440x440, resized without cropping, ImageNet mean/std.

Weights: the hub repository ``conservationxlabs/miewid-msv3`` stores a state dict
(``model.safetensors`` or ``pytorch_model.bin``) of the wbia-plugin-miew-id ``MiewIdNet``.
Key layout it is read with (source -> ours):

==========================================  ===========================================
``backbone.<timm efficientnetv2_rw_m key>``  ``backbone.<same key>`` (no ``classifier.*``)
``pooling.p``                               ``head.pool.p`` (GeM exponent, shape (1,))
``bn.weight|bias|running_mean|running_var|  ``head.bnneck.<same>``
num_batches_tracked``
``final.*`` (training-only ArcFace head)    dropped
``backbone.classifier.*``                   dropped (``nn.Identity`` in MiewIdNet)
==========================================  ===========================================

A ``module.`` prefix (DistributedDataParallel) is removed first. Anything else, or a missing or
wrongly shaped tensor, is a :class:`~wildreid.errors.WeightsError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from wildreid.models.cards import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from wildreid.models.heads import EmbeddingNet, NetConfig
from wildreid.models.specs import ModelSpec
from wildreid.models.weights import (
    HUB_WEIGHTS_FILES,
    check_state_dict_fits,
    download_hub_file,
    read_state_dict,
)

__all__ = [
    "MIEWID_ARCHITECTURE",
    "MIEWID_REPO",
    "load_miewid",
    "map_miewid_state_dict",
    "miewid_net_config",
    "specs",
]

logger = logging.getLogger(__name__)

MIEWID_REPO = "conservationxlabs/miewid-msv3"
MIEWID_ARCHITECTURE = "efficientnetv2_rw_m"
_NAME = "miewid-msv3"
_DROPPED_PREFIXES = ("final.", "backbone.classifier.")
_RENAMED_PREFIXES = (
    ("backbone.", "backbone."),
    ("pooling.", "head.pool."),
    ("bn.", "head.bnneck."),
)


def miewid_net_config(architecture: str = MIEWID_ARCHITECTURE) -> NetConfig:
    """The MiewID net: ``architecture`` feature maps, GeM, BNNeck, no projection."""
    return NetConfig(backbone=architecture, pooling="gem", embedding_dim=None, bnneck=True)


def map_miewid_state_dict(
    source: Mapping[str, torch.Tensor], *, what: str = _NAME
) -> dict[str, torch.Tensor]:
    """Rename a MiewIdNet state dict to :class:`EmbeddingNet` keys (table in the module doc).

    Keys that fit none of the documented prefixes are kept as they are, so the fit check that
    follows reports them as unexpected.
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        if key.startswith(_DROPPED_PREFIXES):
            continue
        for old, new in _RENAMED_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        mapped[key] = tensor
    logger.debug("%s: %d of %d tensors mapped", what, len(mapped), len(source))
    return mapped


def load_miewid(
    weights: Path | None, *, architecture: str = MIEWID_ARCHITECTURE
) -> tuple[EmbeddingNet, Path]:
    """Build the MiewID net and load a MiewIdNet state dict into it.

    Args:
        weights: local state-dict file; ``None`` downloads from :data:`MIEWID_REPO`.
        architecture: timm backbone (tests pass a smaller EfficientNet; the key mapping is
            the same).

    Raises:
        WeightsError: the file is missing, unreadable, or does not fit (keys named).
    """
    path = weights or download_hub_file(MIEWID_REPO, filenames=HUB_WEIGHTS_FILES, model=_NAME)
    what = f"{_NAME} ({path})"
    state = map_miewid_state_dict(read_state_dict(path, what=what), what=what)
    net = EmbeddingNet.from_config(miewid_net_config(architecture))
    check_state_dict_fits(net, state, what=what)
    net.load_state_dict(state)
    logger.info("%s: weights from %s", _NAME, path)
    return net, path


def _card() -> ModelCard:
    return ModelCard(
        name=_NAME,
        architecture=MIEWID_ARCHITECTURE,
        embedding_dim=2152,
        input_size=(440, 440),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        licence="see model page (huggingface.co/conservationxlabs/miewid-msv3)",
        weights_source=f"hf-hub:{MIEWID_REPO}",
        crop_mode="stretch",
        summary="MiewID-msv3: EfficientNetV2 + GeM + BNNeck trained on 64 species for re-ID",
    )


def specs() -> list[ModelSpec]:
    """Registry entry ``miewid-msv3``."""
    return [ModelSpec(_card(), miewid_net_config(), load_miewid)]
