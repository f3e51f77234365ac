"""Options shared by the commands that run a model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from wildreid.models.embedder import EmbedderConfig

__all__ = [
    "BatchSizeOpt",
    "CacheDirOpt",
    "DeviceOpt",
    "LandmarkModelOpt",
    "LandmarksOpt",
    "ModelOpt",
    "PrecisionOpt",
    "SkipBadOpt",
    "WeightsOpt",
    "WorkersOpt",
    "embedder_config",
]

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        help="Registered name (see `wildreid models list`), timm/<name>, hf-hub:<repo>, "
        "or a checkpoint file / run folder.",
    ),
]
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="Local weights file replacing the default.")
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", min=0, help="Decoding processes [default: auto].")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[
    str, typer.Option("--precision", help="auto, fp32, bf16 or fp16 (see docs).")
]
SkipBadOpt = Annotated[
    bool,
    typer.Option("--skip-bad-images", help="Skip unreadable images (counted) instead of stopping."),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Reuse embeddings of unchanged images from this folder."),
]


def embedder_config(
    *, batch_size: int, workers: int | None, device: str, precision: str, skip_bad_images: bool
) -> EmbedderConfig:
    """The embedder configuration the options describe (validated by EmbedderConfig)."""
    from wildreid.models.embedder import EmbedderConfig  # deferred: imports torch

    return EmbedderConfig(
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,  # type: ignore[arg-type]  # EmbedderConfig validates it
        skip_bad_images=skip_bad_images,
    )


LandmarksOpt = Annotated[
    str | None,
    typer.Option(
        "--landmarks",
        help="Landmark-Id models: annotated (metadata landmarks column), predicted (needs "
        "--landmark-model) or none (zero heatmaps) [default: annotated].",
    ),
]
LandmarkModelOpt = Annotated[
    Path | None,
    typer.Option("--landmark-model", help="Landmark predictor run folder (for predicted)."),
]
