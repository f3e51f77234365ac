"""The timm loading path shared by every hub model, and ``timm/<name>`` / ``hf-hub:<repo>``.

One loading path, the same with and without ``weights=``:

1. find the weights file: ``weights=`` when given (nothing is downloaded), else the file from
   the Hugging Face hub (``model.safetensors``, else ``pytorch_model.bin``; cached by
   ``huggingface_hub``) or timm's download URL (cached by timm);
2. ``timm.create_model(<architecture>, pretrained=True,
   pretrained_cfg_overlay={..., "file": <that file>})`` -- timm's real pretrained loader,
   including its checkpoint filters, with strict key matching. A ``file`` in the overlay takes
   priority over ``hf_hub_id``/``url``, so step 2 never touches the network;
3. ``reset_classifier(0)``: the backbone keeps its own pooling and returns
   ``(B, num_features)``; the head adds nothing (``pooling="none"``).

``timm/<name>`` cards come from timm's pretrained cfg via ``timm.data.resolve_data_config``:
input size, mean, std, and crop mode ``center`` when ``crop_pct < 1`` (the model was evaluated
on centre crops), else ``stretch``. ``hf-hub:<repo>`` needs the repository's ``config.json``
(network, or the Hugging Face cache) to know the architecture.
"""

from __future__ import annotations

import difflib
import logging
import pickle
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast

import timm
import torch
from safetensors import SafetensorError
from timm.models import (
    get_pretrained_cfg,
    is_model,
    list_models,
    list_pretrained,
    load_model_config_from_hf,
    split_model_name_tag,
)
from torch import nn

from wildreid.errors import UnknownComponentError, WeightsError
from wildreid.models.cards import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from wildreid.models.heads import (
    EmbeddingHead,
    EmbeddingNet,
    NetConfig,
    backbone_out_features,
    build_backbone,
)
from wildreid.models.specs import ModelSpec
from wildreid.models.weights import (
    HUB_WEIGHTS_FILES,
    describe_file,
    download_hub_file,
    require_file,
)

__all__ = [
    "HF_HUB_PREFIX",
    "TIMM_PREFIX",
    "create_pretrained_backbone",
    "hf_hub_spec",
    "pattern_cards",
    "timm_spec",
]

logger = logging.getLogger(__name__)

TIMM_PREFIX = "timm/"
HF_HUB_PREFIX = "hf-hub:"

_LOAD_ERRORS = (
    RuntimeError,
    ValueError,
    KeyError,
    OSError,
    EOFError,
    AssertionError,  # timm asserts on some malformed checkpoints
    pickle.UnpicklingError,
    SafetensorError,
)


def create_pretrained_backbone(
    timm_name: str,
    *,
    file: Path,
    what: str,
    overlay: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm model with weights from ``file`` via timm's pretrained loader, classifier removed.

    Args:
        timm_name: architecture (with tag), as for ``timm.create_model``.
        file: the weights file (timm reads ``.safetensors``, ``.pth``/``.bin`` and, for models
            with a custom loader, their native format).
        what: names the model in error messages.
        overlay: more ``pretrained_cfg_overlay`` entries (the file is added).
        kwargs: more ``timm.create_model`` arguments.

    Raises:
        WeightsError: the file is missing or does not load strictly into the architecture.
    """
    require_file(file, what=what)
    full_overlay = {**(overlay or {}), "file": str(file)}
    try:
        model = timm.create_model(
            timm_name, pretrained=True, pretrained_cfg_overlay=full_overlay, **kwargs
        )
    except _LOAD_ERRORS as exc:
        detail = " ".join(str(exc).split())[:600]
        raise WeightsError(
            f"{what}: weights file {file} ({describe_file(file)}) does not load into "
            f"{timm_name}: {detail}"
        ) from exc
    cast(Any, model).reset_classifier(0)
    return model


def pattern_cards() -> list[ModelCard]:
    """Cards that explain the ``timm/<name>`` and ``hf-hub:<repo>`` name patterns."""
    common: dict[str, Any] = {
        "embedding_dim": 0,
        "input_size": (224, 224),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "licence": "see model page",
    }
    return [
        ModelCard(
            name=f"{TIMM_PREFIX}<name>",
            architecture="any timm model",
            weights_source="timm:<name>",
            summary="any timm model with pretrained weights, e.g. timm/convnext_tiny.fb_in22k; "
            "preprocessing from its pretrained cfg",
            **common,
        ),
        ModelCard(
            name=f"{HF_HUB_PREFIX}<repo>",
            architecture="from the repository's config.json",
            weights_source="hf-hub:<repo>",
            summary="a timm model on the Hugging Face hub, e.g. hf-hub:BVRA/MegaDescriptor-T-224 "
            "(needs the repository's config.json)",
            **common,
        ),
    ]


def _data_config(
    *, model: nn.Module | None = None, pretrained_cfg: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """timm's preprocessing for a model: input_size (C, H, W), mean, std, crop_pct, ..."""
    from timm.data.config import resolve_data_config

    config: dict[str, Any] = resolve_data_config(  # type: ignore[no-untyped-call]  # untyped in timm
        {}, pretrained_cfg=pretrained_cfg, model=model
    )
    return config


def _crop_mode(data_config: Mapping[str, Any]) -> str:
    return "center" if float(data_config.get("crop_pct", 1.0)) < 1.0 else "stretch"


def _unknown_timm(name: str) -> UnknownComponentError:
    architecture, tag = split_model_name_tag(name)
    if tag and is_model(architecture):
        tags = [n.split(".", 1)[1] for n in list_pretrained(f"{architecture}.*")]
        return UnknownComponentError(
            f"timm model {architecture!r} has no pretrained tag {tag!r}; "
            f"tags: {', '.join(tags) or 'none'}"
        )
    close = difflib.get_close_matches(architecture, list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
    return UnknownComponentError(
        f"unknown timm model {name!r}{hint} (timm.list_models() lists them)"
    )


def timm_spec(name: str) -> ModelSpec:
    """The spec of ``timm/<name>`` (``name`` without the prefix), card synthesised on demand.

    The architecture is built on the ``meta`` device to read its output size; nothing is
    downloaded.

    Raises:
        UnknownComponentError: timm has no such model or tag (close names suggested).
    """
    architecture, _ = split_model_name_tag(name)
    if not is_model(architecture):
        raise _unknown_timm(name)
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # timm: "Invalid pretrained tag"
        cfg = None
    if cfg is None:
        raise _unknown_timm(name)
    config = NetConfig(backbone=name, pooling="none")
    with torch.device("meta"):
        backbone = build_backbone(config)
    data = _data_config(model=backbone)
    card = ModelCard(
        name=f"{TIMM_PREFIX}{name}",
        architecture=architecture,
        embedding_dim=backbone_out_features(backbone, "none"),
        input_size=(int(data["input_size"][1]), int(data["input_size"][2])),
        mean=cast(tuple[float, float, float], tuple(float(v) for v in data["mean"])),
        std=cast(tuple[float, float, float], tuple(float(v) for v in data["std"])),
        licence=cfg.license or "see model page",
        weights_source=f"timm:{architecture}.{cfg.tag}" if cfg.tag else f"timm:{architecture}",
        crop_mode=_crop_mode(data),
        summary=f"timm {name} (pooled pre-logits features)",
    )
    default_file = partial(
        _timm_default_file, card.name, cfg.hf_hub_id, cfg.hf_hub_filename, cfg.url
    )
    overlay = {"custom_load": cfg.custom_load}
    load = partial(_load_timm, card.name, name, config, default_file, overlay)
    return ModelSpec(card, config, load)


def _timm_default_file(
    model: str,
    hf_hub_id: str | None,
    hf_hub_filename: str | None,
    url: str | tuple[str, str] | None,
) -> Path:
    if hf_hub_id:
        filenames = (hf_hub_filename,) if hf_hub_filename else HUB_WEIGHTS_FILES
        return download_hub_file(hf_hub_id, filenames=filenames, model=model)
    if url:
        from timm.models._hub import download_cached_file

        try:
            return Path(download_cached_file(url, check_hash=False))
        except OSError as exc:
            raise WeightsError(
                f"{model}: cannot download weights from {url} ({exc}); download the file "
                f"yourself and pass it: load_model({model!r}, weights='path/to/file')"
            ) from exc
    raise WeightsError(
        f"{model}: timm knows no pretrained weights for it; pass weights='path/to/file'"
    )


def _load_timm(
    model: str,
    timm_name: str,
    config: NetConfig,
    default_file: Callable[[], Path],
    overlay: Mapping[str, Any],
    weights: Path | None,
    **kwargs: Any,
) -> tuple[EmbeddingNet, Path]:
    path = weights or default_file()
    backbone = create_pretrained_backbone(
        timm_name, file=path, what=model, overlay=overlay, **kwargs
    )
    head = EmbeddingHead(backbone_out_features(backbone, "none"), pooling="none")
    logger.info("%s: weights from %s", model, path)
    return EmbeddingNet(backbone, head, config=config), path


def hf_hub_spec(repo: str) -> ModelSpec:
    """The spec of ``hf-hub:<repo>``, from the repository's ``config.json`` (network or cache).

    The architecture is rebuilt from that config's architecture name and model arguments, so
    a checkpoint of a fine-tuned net rebuilds offline.

    Raises:
        WeightsError: the config cannot be fetched or names an architecture timm lacks.
    """
    name = f"{HF_HUB_PREFIX}{repo}"
    try:
        pretrained_cfg, architecture, model_args = load_model_config_from_hf(repo)
    except (OSError, ValueError, KeyError) as exc:  # hub errors are OSErrors
        raise WeightsError(
            f"{name}: cannot read config.json from the Hugging Face hub ({exc}); it is needed "
            "to know the architecture (allow network access once: it is then cached)"
        ) from exc
    if not is_model(architecture):
        raise WeightsError(
            f"{name}: config.json names architecture {architecture!r} unknown "
            f"to timm {timm.__version__}"
        )
    backbone_kwargs = dict(model_args)
    input_size = pretrained_cfg.get("input_size") or (3, 224, 224)
    if pretrained_cfg.get("fixed_input_size"):
        backbone_kwargs.setdefault("img_size", [int(input_size[1]), int(input_size[2])])
    config = NetConfig(backbone=architecture, pooling="none", backbone_kwargs=backbone_kwargs)
    with torch.device("meta"):
        backbone = build_backbone(config)
    data = _data_config(pretrained_cfg=pretrained_cfg)
    card = ModelCard(
        name=name,
        architecture=architecture,
        embedding_dim=backbone_out_features(backbone, "none"),
        input_size=(int(data["input_size"][1]), int(data["input_size"][2])),
        mean=cast(tuple[float, float, float], tuple(float(v) for v in data["mean"])),
        std=cast(tuple[float, float, float], tuple(float(v) for v in data["std"])),
        licence=str(pretrained_cfg.get("license") or "see model page"),
        weights_source=name,
        crop_mode=_crop_mode(data),
        summary=f"timm model {architecture} from the Hugging Face hub repository {repo}",
    )
    filename = pretrained_cfg.get("hf_hub_filename")
    filenames = (filename,) if filename else HUB_WEIGHTS_FILES
    default_file = partial(download_hub_file, repo, filenames=filenames, model=name)
    # The config says source "hf-hub", which timm would prefer over "file": clear it.
    overlay = {"source": None, "custom_load": pretrained_cfg.get("custom_load", False)}
    load = partial(
        _load_timm,
        name,
        architecture,
        config,
        default_file,
        overlay,
        pretrained_cfg=pretrained_cfg,
        **model_args,
    )
    return ModelSpec(card, config, load)
