"""Curated pretrained backbones from the hub: MegaDescriptor, DINOv2, DINOv3 and CLIP.

All load through :func:`wildreid.models.hub.create_pretrained_backbone` (timm's pretrained
loader with the weights file in the ``pretrained_cfg_overlay``) and keep timm's own pooling, so
the embedding is the backbone's pooled pre-logits output (``pooling="none"`` in the head).

* MegaDescriptor (BVRA, CC-BY-NC-4.0): Swin-T/S/B/L at 224 and Swin-L at 384, trained for
  animal re-ID; preprocessing Resize to the square input, ToTensor, Normalize(0.5, 0.5). Built
  from the known timm architecture with ``hf_hub_id`` in the overlay rather than as
  ``hf-hub:BVRA/...``, which would download ``config.json`` before the weights: so
  ``weights=`` works offline and the real load downloads only the weights file.
* DINOv2 (Apache-2.0; CLS token, input 518 as in timm's pretrained cfg -- the resolution the
  features were trained for; slow on CPU) and DINOv3 (DINOv3 License, which the hub may ask
  you to accept; average pooling as timm sets it, input 256).
* CLIP ViT-B/16 (OpenAI, MIT): the image tower before the projection to the text space
  (768-d), built as timm's QuickGELU variant, the activation OpenAI trained with.

Crop mode is ``stretch`` for all (re-ID crops are already framed on the animal).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import timm
from timm.models import get_pretrained_cfg, split_model_name_tag

from wildreid.errors import WeightsError
from wildreid.models.cards import (
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ModelCard,
)
from wildreid.models.heads import EmbeddingHead, EmbeddingNet, NetConfig, backbone_out_features
from wildreid.models.hub import create_pretrained_backbone
from wildreid.models.specs import ModelSpec
from wildreid.models.weights import HUB_WEIGHTS_FILES, download_hub_file

__all__ = ["specs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Curated:
    name: str
    timm_name: str  # architecture, with the pretrained tag whose cfg applies
    embedding_dim: int
    input_px: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str
    summary: str
    hub_repo: str = ""  # "" = timm's own hf_hub_id for timm_name
    overlay: Mapping[str, Any] = field(default_factory=dict)


def _megadescriptor(size: str, timm_name: str, dim: int, input_px: int) -> _Curated:
    repo = f"BVRA/MegaDescriptor-{size}-{input_px}"
    return _Curated(
        name=f"megadescriptor-{size.lower()}-{input_px}",
        timm_name=timm_name,
        embedding_dim=dim,
        input_px=input_px,
        mean=HALF_MEAN,
        std=HALF_STD,
        licence="CC-BY-NC-4.0",
        summary=f"MegaDescriptor-{size}-{input_px}: Swin trained for animal re-ID (non-commercial)",
        hub_repo=repo,
        # The hub checkpoints are headless (config.json: num_classes 0); keeping num_classes
        # equal in cfg and model keeps timm's load strict.
        overlay={
            "hf_hub_id": repo,
            "num_classes": 0,
            "mean": HALF_MEAN,
            "std": HALF_STD,
            "crop_pct": 1.0,
            "license": "cc-by-nc-4.0",
        },
    )


def _dino(version: int, size: str, timm_name: str, dim: int, input_px: int) -> _Curated:
    licence = "Apache-2.0" if version == 2 else "DINOv3-License"
    return _Curated(
        name=f"dinov{version}-{size}",
        timm_name=timm_name,
        embedding_dim=dim,
        input_px=input_px,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        licence=licence,
        summary=f"DINOv{version} ViT-{size.upper()} self-supervised features (timm pooling)",
    )


_CURATED: tuple[_Curated, ...] = (
    _megadescriptor("T", "swin_tiny_patch4_window7_224", 768, 224),
    _megadescriptor("S", "swin_small_patch4_window7_224", 768, 224),
    _megadescriptor("B", "swin_base_patch4_window7_224", 1024, 224),
    _megadescriptor("L", "swin_large_patch4_window7_224", 1536, 224),
    _megadescriptor("L", "swin_large_patch4_window12_384", 1536, 384),
    _dino(2, "s", "vit_small_patch14_dinov2.lvd142m", 384, 518),
    _dino(2, "b", "vit_base_patch14_dinov2.lvd142m", 768, 518),
    _dino(2, "l", "vit_large_patch14_dinov2.lvd142m", 1024, 518),
    _dino(3, "s", "vit_small_patch16_dinov3.lvd1689m", 384, 256),
    _dino(3, "b", "vit_base_patch16_dinov3.lvd1689m", 768, 256),
    _dino(3, "l", "vit_large_patch16_dinov3.lvd1689m", 1024, 256),
    _Curated(
        name="clip-vit-b-16",
        # QuickGELU: the activation OpenAI trained with (timm's note on the .openai weights).
        timm_name="vit_base_patch16_clip_quickgelu_224.openai",
        embedding_dim=768,
        input_px=224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        licence="MIT",
        summary="OpenAI CLIP ViT-B/16 image tower, 768-d before the text-space projection",
    ),
)


def _load_curated(entry: _Curated, weights: Path | None) -> tuple[EmbeddingNet, Path]:
    path = weights or download_hub_file(
        _hub_repo(entry), filenames=HUB_WEIGHTS_FILES, model=entry.name
    )
    backbone = create_pretrained_backbone(
        entry.timm_name, file=path, what=entry.name, overlay=entry.overlay
    )
    config = _curated_config(entry)
    head = EmbeddingHead(backbone_out_features(backbone, "none"), pooling="none")
    logger.info("%s: weights from %s", entry.name, path)
    return EmbeddingNet(backbone, head, config=config), path


def _hub_repo(entry: _Curated) -> str:
    if entry.hub_repo:
        return entry.hub_repo
    cfg = get_pretrained_cfg(entry.timm_name)
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsError(f"{entry.name}: timm {timm.__version__} names no hub repository")
    return cfg.hf_hub_id


def _curated_config(entry: _Curated) -> NetConfig:
    return NetConfig(backbone=entry.timm_name, pooling="none")


def _curated_card(entry: _Curated) -> ModelCard:
    architecture, _ = split_model_name_tag(entry.timm_name)
    return ModelCard(
        name=entry.name,
        architecture=architecture,
        embedding_dim=entry.embedding_dim,
        input_size=(entry.input_px, entry.input_px),
        mean=entry.mean,
        std=entry.std,
        licence=entry.licence,
        weights_source=f"hf-hub:{_hub_repo(entry)}",
        crop_mode="stretch",
        summary=entry.summary,
    )


def specs() -> list[ModelSpec]:
    """Registry entries ``megadescriptor-*``, ``dinov2-*``, ``dinov3-*`` and ``clip-vit-b-16``."""
    return [
        ModelSpec(_curated_card(e), _curated_config(e), partial(_load_curated, e)) for e in _CURATED
    ]
