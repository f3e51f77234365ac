"""``wildreid demo``: synthetic data in, ranked identities and a report out, offline."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import DeviceOpt, ModelOpt, RuntimeOpt, WorkersOpt
from wildreid.cli.output import progress_callback, stdout_console
from wildreid.models.cards import DEFAULT_MODEL

__all__ = ["demo"]


def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.", file_okay=False)] = Path(
        "wildreid-demo"
    ),
    identities: Annotated[int, typer.Option(min=2, help="Identities in gallery/query.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed of the dataset.")] = 0,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    runtime: RuntimeOpt = "auto",
    workers: WorkersOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Generate a synthetic dataset, identify its queries and write the HTML report."""
    from wildreid.demo import run_demo  # deferred: imports torch
    from wildreid.models.embedder import EmbedderConfig

    with contextlib.ExitStack() as stack:

        def stage(name: str) -> Callable[[int, int], None]:
            return stack.enter_context(progress_callback(name))

        result = run_demo(
            out,
            identities=identities,
            seed=seed,
            model=model,
            config=EmbedderConfig(device=device, workers=workers, runtime=runtime),
            overwrite=overwrite,
            progress=stage,
        )
    metrics = result.evaluation.result.metrics
    decisions = sum(1 for i in result.identifications if i.decision == "known")
    stdout_console().print(
        f"identified {len(result.identifications)} queries against "
        f"{int(metrics['n_gallery'])} gallery images of {identities} identities\n"
        f"top-1 {100 * result.top1:.1f}%  top-5 {100 * result.top5:.1f}%  "
        f"(identity level; image-level mAP {100 * metrics['mAP']:.1f}%)\n"
        f"known decisions: {decisions}\n"
        f"report: {result.evaluation.files.report_html}",
        highlight=False,
    )
