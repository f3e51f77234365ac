"""Options shared by the commands that run a model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from wildreid.matching.rerank import RerankConfig
    from wildreid.models.embedder import EmbedderConfig

__all__ = [
    "BatchSizeOpt",
    "CacheDirOpt",
    "DeviceOpt",
    "FusionOpt",
    "KeypointsOpt",
    "LandmarkModelOpt",
    "LandmarksOpt",
    "MaxQueriesOpt",
    "ModelOpt",
    "PairScoreOpt",
    "PrecisionOpt",
    "RerankOpt",
    "RuntimeOpt",
    "ShortlistOpt",
    "SkipBadOpt",
    "WeightsOpt",
    "WorkersOpt",
    "WorkingSizeOpt",
    "embedder_config",
    "optional_rerank_config",
    "rerank_config",
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
    int | None, typer.Option("--workers", min=0, help="Decoding processes (default: auto).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[
    str, typer.Option("--precision", help="auto, fp32, bf16 or fp16 (see docs).")
]
RuntimeOpt = Annotated[
    str,
    typer.Option(
        "--runtime",
        help="auto, torch, onnxruntime or openvino, for the embedder and the dense network of "
        "ALIKED / DISK (LightGlue runs in torch); auto: the fastest measured on CPU, torch "
        "on GPU.",
    ),
]
SkipBadOpt = Annotated[
    bool,
    typer.Option("--skip-bad-images", help="Skip unreadable images (counted) instead of stopping."),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Reuse embeddings (and local features) of unchanged images from this folder.",
    ),
]


MaxQueriesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-queries",
        min=1,
        help="Evaluate a deterministic sample of at most N queries (seed 0).",
    ),
]


def embedder_config(
    *,
    batch_size: int,
    workers: int | None,
    device: str,
    precision: str,
    skip_bad_images: bool,
    runtime: str = "auto",
) -> EmbedderConfig:
    """The embedder configuration the options describe (validated by EmbedderConfig)."""
    from wildreid.models.embedder import EmbedderConfig  # deferred: imports torch

    return EmbedderConfig(
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,  # type: ignore[arg-type]  # EmbedderConfig validates it
        skip_bad_images=skip_bad_images,
        runtime=runtime,
    )


def _no_rerank(value: str | None) -> str | None:
    return None if value == "none" else value


RerankOpt = Annotated[
    str | None,
    typer.Option(
        "--rerank",
        help="Re-rank the global shortlist with local features: sift, rootsift, "
        "aliked-lightglue or disk-lightglue (none: global scores only, the default).",
        callback=_no_rerank,
    ),
]
ShortlistOpt = Annotated[
    int | None,
    typer.Option(
        "--shortlist",
        min=0,
        help="Global candidates re-ranked per query (0: all); default 300 for sift and "
        "rootsift, 20 for the LightGlue methods.",
    ),
]
PairScoreOpt = Annotated[
    str | None,
    typer.Option("--pair-score", help="matches, inliers or confidence (default: inliers)."),
]
FusionOpt = Annotated[
    str | None,
    typer.Option(
        "--fusion",
        help="calibrated (mean of the calibrated global and local probabilities, calibrated on "
        "the gallery side; the default), local (local score, ties by global) or rank (global + "
        "local ranks).",
    ),
]
KeypointsOpt = Annotated[
    int | None, typer.Option("--max-keypoints", min=1, help="Keypoints per image (default: 512).")
]
WorkingSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--working-size", min=16, help="Long side images are shrunk to, pixels (default: 512)."
    ),
]


def rerank_config(
    method: str,
    *,
    shortlist: int | None = None,
    pair_score: str | None = None,
    fusion: str | None = None,
    max_keypoints: int | None = None,
    working_size: int | None = None,
    device: str = "cpu",
    runtime: str = "auto",
) -> RerankConfig:
    """The re-ranking configuration the options describe; unset options keep the method's
    defaults (validated by RerankConfig)."""
    from wildreid.matching.rerank import rerank_config as build  # deferred: imports torch

    given = {
        "shortlist": shortlist,
        "score": pair_score,
        "fusion": fusion,
        "max_keypoints": max_keypoints,
        "working_size": working_size,
    }
    return build(
        method, device=device, runtime=runtime, **{k: v for k, v in given.items() if v is not None}
    )


def optional_rerank_config(
    method: str | None,
    *,
    shortlist: int | None = None,
    pair_score: str | None = None,
    fusion: str | None = None,
    max_keypoints: int | None = None,
    working_size: int | None = None,
    device: str = "cpu",
    runtime: str = "auto",
) -> RerankConfig | None:
    """:func:`rerank_config` of ``method``, or ``None`` without one (``--rerank`` not given or
    ``none``), where the tuning options must then be unset.

    Raises:
        typer.BadParameter: tuning options without a method (they are named).
    """
    tuning = {
        "--shortlist": shortlist,
        "--pair-score": pair_score,
        "--fusion": fusion,
        "--max-keypoints": max_keypoints,
        "--working-size": working_size,
    }
    if method is None or method == "none":
        given = [name for name, value in tuning.items() if value is not None]
        if given:
            raise typer.BadParameter(f"{', '.join(given)} only apply with --rerank")
        return None
    return rerank_config(
        method,
        shortlist=shortlist,
        pair_score=pair_score,
        fusion=fusion,
        max_keypoints=max_keypoints,
        working_size=working_size,
        device=device,
        runtime=runtime,
    )


LandmarksOpt = Annotated[
    str | None,
    typer.Option(
        "--landmarks",
        help="Landmark-Id models: annotated (metadata landmarks column), predicted (needs "
        "--landmark-model) or none (zero heatmaps) (default: annotated).",
    ),
]
LandmarkModelOpt = Annotated[
    Path | None,
    typer.Option("--landmark-model", help="Landmark predictor run folder (for predicted)."),
]


BodyVisibleOpt = Annotated[
    bool,
    typer.Option(
        help="Paint the synthetic body (the triangle) white under the ellipses, so its corners "
        "(the landmarks) show in the image; the paper's dataset hides it."
    ),
]
"""``--body-visible`` of the synthetic dataset (``data synth``, ``experiment landmark-id``)."""
