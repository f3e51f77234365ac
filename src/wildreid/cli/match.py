"""``wildreid match``: compare two photos with local features and show the evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wildreid.cli.options import (
    KeypointsOpt,
    PairScoreOpt,
    RuntimeOpt,
    WorkingSizeOpt,
    rerank_config,
)
from wildreid.cli.output import echo_json, stdout_console

__all__ = ["match"]


def match(
    image1: Annotated[Path, typer.Argument(help="First image.", dir_okay=False)],
    image2: Annotated[Path, typer.Argument(help="Second image.", dir_okay=False)],
    matcher: Annotated[
        str,
        typer.Option("--matcher", help="sift, rootsift, aliked-lightglue or disk-lightglue."),
    ] = "aliked-lightglue",
    viz: Annotated[
        Path | None,
        typer.Option(
            "--viz", help="Write the two images with their matches drawn (PNG).", dir_okay=False
        ),
    ] = None,
    pair_score: PairScoreOpt = None,
    max_keypoints: KeypointsOpt = None,
    working_size: WorkingSizeOpt = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    runtime: RuntimeOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Match two images: keypoints, matches, geometric inliers and time; --viz draws them."""
    from wildreid.data.images import load_image  # deferred: imports torch via matching
    from wildreid.files import atomic_path
    from wildreid.matching.rerank import Reranker
    from wildreid.viz.keypoint_matches import render_keypoint_matches

    config = rerank_config(
        matcher,
        pair_score=pair_score,
        max_keypoints=max_keypoints,
        working_size=working_size,
        device=device,
        runtime=runtime,
    )
    first, second = load_image(image1), load_image(image2)
    reranker = Reranker(config)
    comparison = reranker.compare(first, second)
    result = {
        "image1": str(image1),
        "image2": str(image2),
        "matcher": matcher,
        "keypoints1": len(comparison.features0),
        "keypoints2": len(comparison.features1),
        "matches": len(comparison.matches),
        "inliers": comparison.matches.n_inliers,
        "score": comparison.score,
        "pair_score": config.score,
        "runtime": getattr(reranker.extractor, "runtime", "opencv"),  # SIFT: OpenCV
        "seconds": comparison.seconds,
    }
    if viz is not None:
        picture = render_keypoint_matches(
            first,
            second,
            comparison.features0,
            comparison.features1,
            comparison.matches,
            caption=(
                f"{matcher}: {len(comparison.matches)} matches, "
                f"{comparison.matches.n_inliers} inliers ({config.geometry})"
            ),
        )
        with atomic_path(viz) as tmp:
            picture.save(tmp, format="PNG")
        result["viz"] = str(viz)
    if as_json:
        echo_json(result)
        return
    seconds = comparison.seconds
    lines = [
        f"{matcher}: {result['keypoints1']} and {result['keypoints2']} keypoints, "
        f"{result['matches']} matches, {result['inliers']} geometric inliers "
        f"({config.geometry})",
        f"time: {1000 * seconds['extract']:.0f} ms extraction (both images), "
        f"{1000 * seconds['match']:.0f} ms matching and verification",
    ]
    if viz is not None:
        lines.append(f"wrote {viz}")
    stdout_console().print("\n".join(lines), highlight=False)
