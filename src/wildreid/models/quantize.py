"""int8 post-training quantization of an exported embedding model, calibrated on the user's images.

OpenVINO's NNCF (``nncf.quantize`` on the ONNX graph: its default "performance" preset, per-channel
int8 weights, activation ranges from calibration statistics, fast bias correction) runs the fp32
graph on calibration images taken from the user's own gallery (preprocessed exactly as the
embedder does) and writes a QDQ graph that both ONNX Runtime and OpenVINO run in int8.

Why NNCF and not ONNX Runtime's own static quantizer: on EfficientNet-Lite0 and 16 held-out
LionData photos, ORT's quantizer gave vectors at cosine 0.58-0.83 (worst image) from torch's
whatever its settings (min-max, percentile, reduced range, depthwise convolutions left in fp32),
NNCF 0.95 (mean 0.97): its bias correction undoes the shift that quantizing the small depthwise
kernels introduces (docs/benchmarks.md).

int8 vectors are *not* in the fp32 model's space (they differ by more than rounding), so the
quantized file gets its own :class:`~wildreid.types.EmbeddingSpace`: model ``<name>@int8``,
weights SHA-256 of the quantized graph. Caches and indexes keep the two apart. Measure the
accuracy change on your data before switching (docs/benchmarks.md has LionData's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wildreid.data.dataset import ImageDataset, iterate_batches
from wildreid.data.transforms import Resize, normalize
from wildreid.errors import ConfigError, DataError, WeightsError
from wildreid.files import atomic_path
from wildreid.models.cards import ModelCard
from wildreid.models.onnx_export import (
    ExportCheck,
    check_onnx,
    onnx_model_proto,
    set_metadata,
)
from wildreid.models.runtimes import import_runtime
from wildreid.types import EmbeddingSpace

__all__ = ["INT8_MIN_COSINE", "calibration_batches", "quantize_int8"]

logger = logging.getLogger(__name__)

INT8_MIN_COSINE = 0.9
"""An int8 graph whose vectors point elsewhere than torch's (cosine below this on held-out
calibration images) is broken, not merely less precise: it is not written."""


def _import_nncf() -> Any:
    """NNCF, or a ConfigError saying what to install."""
    try:
        import nncf  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError(
            "int8 quantization needs the Python package 'nncf', which is not installed: "
            "`pip install nncf` (or `uv add nncf`)"
        ) from exc
    return nncf


def calibration_batches(
    metadata: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    space: EmbeddingSpace,
    n_images: int = 128,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Up to ``n_images`` rows spread evenly over ``metadata``, preprocessed as the embedder does.

    Shapes:
        returns: batches (b, 3, H, W) float32, normalised.

    Raises:
        DataError: no row is readable (unreadable rows are skipped).
    """
    if n_images < 1:
        raise ConfigError(f"calibration needs at least 1 image, got {n_images}")
    picks = np.unique(np.linspace(0, len(metadata) - 1, min(n_images, len(metadata))).astype(int))
    resize = Resize.from_space(space)
    dataset = ImageDataset(
        Path(root), metadata, transform=resize, target_size=resize.target_size,
        indices=picks.tolist(),
    )  # fmt: skip
    batches = []
    for batch in iterate_batches(dataset, batch_size=batch_size):
        if batch.images is not None:
            images = normalize(batch.images, mean=space.mean, std=space.std)
            batches.append(images.numpy().astype(np.float32))
    if not batches:
        raise DataError("none of the calibration images could be read; check --calibration")
    return batches


def quantize_int8(
    module: Any,
    out: str | os.PathLike[str],
    *,
    space: EmbeddingSpace,
    card: ModelCard,
    calibration: list[np.ndarray],
) -> tuple[EmbeddingSpace, ExportCheck]:
    """Export ``module``, quantize it to int8 with ``calibration`` batches, write ``out``.

    The last batch is held out of the calibration to check the int8 graph against torch (fp32)
    on the user's own kind of image (one batch only: it serves both). Synthetic check images
    (noise, gradients) fall outside the activation ranges calibrated on photos, where int8
    clips, so they would judge the graph on inputs it never meets.

    Returns:
        The int8 file's space and its check against torch (fp32) on the held-out images.

    Raises:
        WeightsError: the network does not export, or the int8 graph fails
            :data:`INT8_MIN_COSINE` (``out`` left as it was).
        ConfigError: onnxruntime is missing.
    """
    import onnx

    import_runtime("onnxruntime")  # the check runs the int8 graph in ONNX Runtime
    nncf = _import_nncf()
    images = [
        batch[i : i + 1] for batch in calibration[:-1] or calibration for i in range(len(batch))
    ]
    fp32 = onnx_model_proto(module, space, card)
    proto = nncf.quantize(
        fp32,
        nncf.Dataset(images, lambda image: {"images": image}),
        subset_size=len(images),
    )
    del proto.metadata_props[:]
    digest = hashlib.sha256(proto.SerializeToString()).hexdigest()
    int8_space = dataclasses.replace(space, model=f"{space.model}@int8", weights_sha256=digest)
    int8_card = dataclasses.replace(
        card, name=int8_space.model, weights_source=f"int8 of {card.weights_source}",
        weights_sha256=digest, summary=f"int8 (ONNX Runtime static quantization) of {card.name}",
    )  # fmt: skip
    set_metadata(proto, int8_space, int8_card)
    out = Path(out)
    with atomic_path(out) as path:
        onnx.save(proto, os.fspath(path))
        check = check_onnx(
            module,
            path,
            space,
            min_cosine=INT8_MIN_COSINE,
            max_rel_diff=np.inf,
            images=calibration[-1],
        )
        if not check.passed:
            raise WeightsError(
                f"{space.model}: the int8 graph does not reproduce torch ({check.describe()}); "
                f"{out} was not written. Try more or other --calibration images"
            )
    logger.info("wrote %s (int8): %s", out, check.describe())
    return int8_space, check
