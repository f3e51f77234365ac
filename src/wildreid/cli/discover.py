"""``wildreid discover``: cluster the queries judged new into candidate individuals."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import (
    CacheDirOpt,
    DeviceOpt,
    KeypointsOpt,
    MaxQueriesOpt,
    ModelOpt,
    PairScoreOpt,
    RerankOpt,
    ShortlistOpt,
    WorkingSizeOpt,
    optional_rerank_config,
)
from wildreid.cli.output import echo_json, progress_callback, stdout_console
from wildreid.models.cards import DEFAULT_MODEL

__all__ = ["discover"]


def discover(
    metadata: Annotated[Path, typer.Option("--metadata", help="Metadata CSV.", dir_okay=False)],
    split: Annotated[
        Path, typer.Option("--split", help="Split CSV (image_id,split).", dir_okay=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder.", file_okay=False)],
    embeddings: Annotated[
        Path | None,
        typer.Option("--embeddings", help="Precomputed .npz instead of a model."),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    group_column: Annotated[
        str | None,
        typer.Option(help="Near-duplicate groups (e.g. clip) kept on one side of calibration."),
    ] = None,
    root: Annotated[
        Path | None, typer.Option(help="Folder image paths are relative to (default: CSV's).")
    ] = None,
    max_queries: MaxQueriesOpt = None,
    rerank: RerankOpt = None,
    shortlist: ShortlistOpt = None,
    pair_score: PairScoreOpt = None,
    max_keypoints: KeypointsOpt = None,
    working_size: WorkingSizeOpt = None,
    device: DeviceOpt = "auto",
    cache_dir: CacheDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """Cluster the queries judged new (calibrated on the gallery side) into individuals.

    With --rerank, the known / new decisions come from the fused probabilities as in
    `wildreid evaluate --rerank`, and the clustering graph (and the graph the cut is chosen on)
    is the recalibrated mean of the calibrated global and local probabilities of every pair.
    """
    from wildreid.discover import discover_dataset  # deferred: imports torch

    settings = optional_rerank_config(
        rerank,
        shortlist=shortlist,
        pair_score=pair_score,
        max_keypoints=max_keypoints,
        working_size=working_size,
        device=device,
    )
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(progress_callback("embedding"))

        def stage(name: str) -> Callable[[int, int], None]:
            return stack.enter_context(progress_callback(name))

        run = discover_dataset(
            metadata,
            split_path=split,
            out_dir=out,
            embeddings_path=embeddings,
            model=model,
            group_column=group_column,
            root=root,
            rerank=settings,
            cache_dir=cache_dir,
            max_queries=max_queries,
            progress=progress,
            stage=stage,
        )
    if as_json:
        echo_json(run.metrics)
        return
    m = run.metrics
    lines = [
        f"graph: {m['graph']}"
        + (
            f" (global + {m['rerank']['method']}, recalibrated mean)"
            if m["graph"] == "fused"
            else ""
        ),
        f"{m['n_judged_new']} of {m['n_queries']} queries judged new ({m['n_truly_new']} are); "
        f"cut {m['cut']:.3f} chosen on calibration data (AMI {m['calibration']['AMI']:.3f})",
    ]
    for key in ("judged_new", "all_queries"):
        if key in m:
            f = m[key]
            lines.append(
                f"{key}: ARI {f['ARI']:.3f}  AMI {f['AMI']:.3f}  individuals predicted "
                f"{int(f['n_predicted_individuals'])} vs true {int(f['n_true_individuals'])}"
            )
    lines.append(f"wrote {run.clusters_csv} and {run.metrics_json}")
    stdout_console().print("\n".join(lines), highlight=False)
