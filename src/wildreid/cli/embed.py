"""``wildreid embed``: embed a dataset into an ``.npz`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import (
    BatchSizeOpt,
    CacheDirOpt,
    DeviceOpt,
    LandmarkModelOpt,
    LandmarksOpt,
    ModelOpt,
    PrecisionOpt,
    RuntimeOpt,
    SkipBadOpt,
    WeightsOpt,
    WorkersOpt,
    embedder_config,
)
from wildreid.cli.output import progress_callback, stdout_console
from wildreid.models.cards import DEFAULT_MODEL

__all__ = ["embed"]


def embed(
    metadata: Annotated[Path, typer.Argument(help="Metadata CSV.", dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="Embeddings .npz to write.", dir_okay=False)],
    model: ModelOpt = DEFAULT_MODEL,
    weights: WeightsOpt = None,
    root: Annotated[
        Path | None, typer.Option(help="Folder image paths are relative to (default: CSV's).")
    ] = None,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    runtime: RuntimeOpt = "auto",
    skip_bad_images: SkipBadOpt = False,
    cache_dir: CacheDirOpt = None,
    landmarks: LandmarksOpt = None,
    landmark_model: LandmarkModelOpt = None,
) -> None:
    """Embed every image of a dataset (its bbox crop where given) with one model."""
    from wildreid.data.schema import load_dataset
    from wildreid.embeddings_file import save_embeddings  # deferred: imports torch
    from wildreid.pipeline import embed_dataset

    frame, folder = load_dataset(metadata, root=root)
    config = embedder_config(
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        skip_bad_images=skip_bad_images,
        runtime=runtime,
    )
    with progress_callback("embedding") as progress:
        result = embed_dataset(
            frame,
            root=folder,
            model=model,
            weights=weights,
            config=config,
            cache_dir=cache_dir,
            landmarks=landmarks,
            landmark_model=landmark_model,
            progress=progress,
        )
    save_embeddings(result.embeddings, out)
    for image_id, reason in result.skipped:
        typer.echo(f"skipped {image_id}: {reason}", err=True)
    embeddings = result.embeddings
    stdout_console().print(
        f"wrote {out}: {len(embeddings)} vectors of dim {embeddings.dim} "
        f"({result.n_computed} computed, {result.n_cached} cached, "
        f"{len(result.skipped)} skipped) in {result.seconds:.1f} s\n"
        f"space: {embeddings.space.describe()}  runtime: {result.runtime}",
        highlight=False,
    )
