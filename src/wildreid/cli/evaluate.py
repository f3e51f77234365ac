"""``wildreid evaluate``: metrics.json and report.html for a dataset and split."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import (
    BatchSizeOpt,
    CacheDirOpt,
    DeviceOpt,
    FusionOpt,
    KeypointsOpt,
    LandmarkModelOpt,
    LandmarksOpt,
    MaxQueriesOpt,
    ModelOpt,
    PairScoreOpt,
    PrecisionOpt,
    RerankOpt,
    RuntimeOpt,
    ShortlistOpt,
    SkipBadOpt,
    WeightsOpt,
    WorkersOpt,
    WorkingSizeOpt,
    embedder_config,
    optional_rerank_config,
)
from wildreid.cli.output import echo_json, progress_callback, stdout_console
from wildreid.models.cards import DEFAULT_MODEL

__all__ = ["evaluate"]

_SHOWN = (
    "top1",
    "top5",
    "top10",
    "mAP",
    "mINP",
    "BAKS",
    "BAUS",
    "open_score",
    "review_fraction",
    "auto_accuracy",
    "new_auroc",
    "ECE_raw",
    "ECE_fused_mean",
    "ECE_calibrated",
    "ECE_top1_fused_mean",
    "ECE_top1_calibrated",
)
_ORACLE = ("oracle_BAKS", "oracle_BAUS", "oracle_open_score")


def evaluate(
    metadata: Annotated[Path, typer.Option("--metadata", help="Metadata CSV.", dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="Output folder.", file_okay=False)],
    split: Annotated[
        Path | None, typer.Option("--split", help="Split CSV (image_id,split).", dir_okay=False)
    ] = None,
    split_column: Annotated[
        str | None, typer.Option("--split-column", help="Metadata column holding the split.")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    weights: WeightsOpt = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(
            "--embeddings", help="Precomputed .npz (image_id, vectors) instead of a model."
        ),
    ] = None,
    exclude_same: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-same",
            help="Metadata column (repeatable, e.g. encounter): gallery items sharing the "
            "query's value are not compared with it.",
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Open-set threshold on the cosine score (default: at 5% FPR)."),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            help="Saved calibration.json to reuse (default: fit one on the gallery side).",
            dir_okay=False,
        ),
    ] = None,
    calibrator: Annotated[
        str, typer.Option(help="Score calibrator: isotonic or logistic.")
    ] = "isotonic",
    target: Annotated[
        str,
        typer.Option(help="Threshold target: open_score (best BAKS x BAUS) or false_new."),
    ] = "open_score",
    max_false_new: Annotated[
        float, typer.Option(help="Largest share of known queries called new (false_new).")
    ] = 0.05,
    review_margin: Annotated[
        float, typer.Option(help="Half-width of the review band, in probability units.")
    ] = 0.0,
    group_column: Annotated[
        str | None,
        typer.Option(
            help="Near-duplicate groups (e.g. clip) kept on one side of the calibration carve."
        ),
    ] = None,
    oracle_threshold: Annotated[
        bool,
        typer.Option(
            "--oracle-threshold",
            help="Also report BAKS/BAUS at a threshold chosen on the queries (optimistic).",
        ),
    ] = False,
    root: Annotated[
        Path | None, typer.Option(help="Folder image paths are relative to (default: CSV's).")
    ] = None,
    examples: Annotated[int, typer.Option(min=0, help="Queries shown in the report.")] = 24,
    max_queries: MaxQueriesOpt = None,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    runtime: RuntimeOpt = "auto",
    skip_bad_images: SkipBadOpt = False,
    cache_dir: CacheDirOpt = None,
    rerank: RerankOpt = None,
    shortlist: ShortlistOpt = None,
    pair_score: PairScoreOpt = None,
    fusion: FusionOpt = None,
    max_keypoints: KeypointsOpt = None,
    working_size: WorkingSizeOpt = None,
    landmarks: LandmarksOpt = None,
    landmark_model: LandmarkModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """Evaluate queries (split test/query) against the gallery (gallery rows, else train).

    With --rerank, each query's global shortlist is re-ranked with local feature matching;
    metrics.json then holds the re-ranked metrics, the global-only ones under "global" and the
    shortlist recall and time per query under "rerank". On a split with new individuals the
    known / new decisions use a calibration fitted on the gallery side (calibration.json).
    """
    import contextlib

    from wildreid.pipeline import OpenSetOptions, evaluate_dataset  # deferred: imports torch

    config = embedder_config(
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        skip_bad_images=skip_bad_images,
        runtime=runtime,
    )
    rerank_settings = optional_rerank_config(
        rerank,
        shortlist=shortlist,
        pair_score=pair_score,
        fusion=fusion,
        max_keypoints=max_keypoints,
        working_size=working_size,
        device=device,
        runtime=runtime,
    )
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(progress_callback("embedding"))

        def stage(name: str) -> Callable[[int, int], None]:
            return stack.enter_context(progress_callback(name))

        run = evaluate_dataset(
            metadata,
            out_dir=out,
            split_path=split,
            split_column=split_column,
            root=root,
            model=model,
            weights=weights,
            embeddings_path=embeddings,
            exclude_same=tuple(exclude_same or ()),
            threshold=threshold,
            open_set=OpenSetOptions(
                calibration=calibration,
                calibrator=calibrator,
                target=target,
                max_false_new=max_false_new,
                review_margin=review_margin,
                group_column=group_column,
                oracle=oracle_threshold,
            ),
            config=config,
            cache_dir=cache_dir,
            landmarks=landmarks,
            landmark_model=landmark_model,
            n_examples=examples,
            rerank=rerank_settings,
            max_queries=max_queries,
            progress=progress,
            stage=stage,
        )
    metrics = run.result.metrics
    if as_json:
        if run.global_result is None:
            echo_json(metrics)
        else:
            echo_json({**metrics, "global": run.global_result.metrics, "rerank": run.rerank})
        return
    lines = [f"{int(metrics['n_queries'])} queries vs {int(metrics['n_gallery'])} gallery images"]
    if run.global_result is not None and run.rerank is not None:
        lines.append(f"global only:  {_shown(run.global_result.metrics)}")
        lines.append(
            f"re-ranked ({run.rerank['method']}, top {run.rerank['shortlist']}): {_shown(metrics)}"
        )
        lines.append(
            f"shortlist recall {100 * run.rerank['shortlist_recall']:.1f}%, "
            f"{run.rerank['rerank_seconds_per_query']:.3f} s per query to re-rank, "
            f"{run.rerank['images_extracted']} image(s) extracted in "
            f"{run.rerank['extraction_seconds']:.1f} s"
        )
    else:
        lines.append(_shown(metrics))
    if "ECE_calibrated" in metrics:
        lines.append(
            f"honest decisions: threshold {metrics['threshold']:.4f} on P(same), fitted on the "
            "gallery side only"
        )
    oracle = "  ".join(f"{k} {100 * metrics[k]:.1f}%" for k in _ORACLE if k in metrics)
    if oracle:
        lines.append(f"ORACLE (threshold chosen on these queries, optimistic): {oracle}")
    lines.append(f"wrote {run.files.metrics_json} and {run.files.report_html}")
    stdout_console().print("\n".join(lines), highlight=False)


def _shown(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {100 * metrics[k]:.1f}%" for k in _SHOWN if k in metrics)
