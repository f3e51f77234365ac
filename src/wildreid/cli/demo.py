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
    rerank: Annotated[
        str,
        typer.Option(
            "--rerank",
            help="Local-feature re-ranking: sift, rootsift, aliked-lightglue, disk-lightglue "
            "or none.",
        ),
    ] = "sift",
) -> None:
    """Generate a synthetic dataset, identify its queries and write the HTML report."""
    from wildreid.demo import demo_rerank, run_demo  # deferred: imports torch
    from wildreid.models.embedder import EmbedderConfig
    from wildreid.types import DECISIONS

    rerank_settings = None if rerank == "none" else demo_rerank(rerank)

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
            rerank=rerank_settings,
            progress=stage,
        )
    run = result.evaluation
    metrics = run.result.metrics
    global_metrics = run.global_result.metrics if run.global_result is not None else metrics
    counts = {d: sum(i.decision == d for i in result.identifications) for d in DECISIONS}
    automatic = counts["known"] + counts["new"]
    lines = [
        f"identified {len(result.identifications)} queries against "
        f"{int(metrics['n_gallery'])} gallery images of {identities} identities",
        f"global embeddings only:  top-1 {100 * result.top1:.1f}%  "
        f"top-5 {100 * result.top5:.1f}%  (identity level; image-level mAP "
        f"{100 * global_metrics['mAP']:.1f}%)",
    ]
    if run.rerank is not None and result.reranked_top1 is not None:
        assert result.reranked_top5 is not None
        lines.append(
            f"re-ranked with {run.rerank['method']} (top {run.rerank['shortlist']}):  "
            f"top-1 {100 * result.reranked_top1:.1f}%  top-5 {100 * result.reranked_top5:.1f}%  "
            f"(mAP {100 * metrics['mAP']:.1f}%; {run.rerank['rerank_seconds_per_query']:.3f} s "
            f"per query, shortlist recall {100 * run.rerank['shortlist_recall']:.1f}%)"
        )
    lines += [
        f"decisions (calibrated on the gallery side; {len(result.absent_identities)} query "
        f"identities absent from the gallery): known {counts['known']}  new {counts['new']}  "
        f"review {counts['review']}; {result.decisions_right} of {automatic} automatic "
        "decisions right",
        f"report: {run.files.report_html}",
    ]
    stdout_console().print("\n".join(lines), highlight=False)
