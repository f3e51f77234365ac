"""End-to-end workflows over files: embed a dataset, evaluate it and write the report.

These are what the CLI commands ``wildreid embed`` and ``wildreid evaluate`` call; each step is
also usable on its own (:mod:`wildreid.models`, :mod:`wildreid.evaluation`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from wildreid.data.schema import UNKNOWN_IDENTITY, check_metadata, read_metadata
from wildreid.data.splits import read_split
from wildreid.embeddings_file import load_embeddings
from wildreid.errors import ConfigError
from wildreid.evaluation.openset import OpenSetPolicy, load_policy
from wildreid.evaluation.protocol import (
    EvaluationResult,
    Protocol,
    evaluate_embeddings,
    fit_gallery_policy,
    protocol_from_split,
    split_from_column,
)
from wildreid.evaluation.report import ReportFiles, write_report
from wildreid.models.cache import EmbeddingCache
from wildreid.models.embedder import Embedder, EmbedderConfig, EmbedResult
from wildreid.models.factory import DEFAULT_MODEL, load_model
from wildreid.types import Embeddings

__all__ = [
    "CALIBRATION_FILE",
    "EvaluationRun",
    "OpenSetOptions",
    "embed_dataset",
    "evaluate_dataset",
    "load_dataset",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def load_dataset(
    metadata_path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
) -> tuple[pd.DataFrame, Path]:
    """Read and check a metadata CSV (files are checked when they are read).

    Returns:
        The table and the folder its paths are relative to (``root``, else the CSV's folder).

    Raises:
        MetadataError: the table is unreadable or invalid (every problem listed).
    """
    metadata_path = Path(metadata_path)
    frame = read_metadata(metadata_path)
    folder = Path(root) if root is not None else metadata_path.parent
    check_metadata(frame, root=folder, source=metadata_path, check_files=False)
    return frame, folder


def embed_dataset(
    metadata: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = None,
    config: EmbedderConfig = EmbedderConfig(),
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> EmbedResult:
    """Embed every row of ``metadata`` with ``model`` (see :class:`Embedder`)."""
    loaded = load_model(model, device=config.device, weights=weights)
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    embedder = Embedder(loaded, config=config, cache=cache)
    return embedder.embed_images(metadata, root=root, progress=progress)


@dataclass(frozen=True)
class EvaluationRun:
    """What :func:`evaluate_dataset` produced."""

    result: EvaluationResult
    files: ReportFiles
    skipped: tuple[tuple[str, str], ...]


CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class OpenSetOptions:
    """How an evaluation with new individuals decides known / new / review.

    Attributes:
        calibration: a saved ``calibration.json`` to reuse (same embedding space only);
            otherwise one is fitted on a carve of the gallery side and saved beside the run.
        calibrator: ``isotonic`` or ``logistic``.
        target: ``open_score`` (best BAKS x BAUS geometric mean) or ``false_new``.
        max_false_new: largest share of known calibration queries called new (``false_new``).
        review_margin: half-width of the review band in probability units.
        group_column: near-duplicate groups kept on one side of the calibration carve;
            defaults to the first ``exclude_same`` key.
        oracle: also report BAKS / BAUS at the threshold chosen on the evaluated queries
            (``oracle_*``, optimistic).
    """

    calibration: str | os.PathLike[str] | None = None
    calibrator: str = "isotonic"
    target: str = "open_score"
    max_false_new: float = 0.05
    review_margin: float = 0.0
    group_column: str | None = None
    oracle: bool = False
    seed: int = 0


def _has_new_queries(metadata: pd.DataFrame, protocol: Protocol) -> bool:
    ids, names = metadata["image_id"].astype(str), metadata["identity"].astype(str)
    identity = dict(zip(ids, names, strict=True))
    gallery = {identity[i] for i in protocol.gallery_ids}
    return any(
        identity[i] == UNKNOWN_IDENTITY or identity[i] not in gallery for i in protocol.query_ids
    )


def _open_set_policy(
    metadata: pd.DataFrame,
    protocol: Protocol,
    embeddings: Embeddings,
    options: OpenSetOptions,
    exclude_same: Sequence[str],
) -> OpenSetPolicy:
    if options.calibration is not None:
        return load_policy(options.calibration, space=embeddings.space)
    group = options.group_column or (exclude_same[0] if exclude_same else None)
    return fit_gallery_policy(
        metadata,
        protocol,
        embeddings,
        group_column=group,
        kind=options.calibrator,
        target=options.target,
        max_false_new=options.max_false_new,
        review_margin=options.review_margin,
        seed=options.seed,
    )


def evaluate_dataset(
    metadata_path: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    split_path: str | os.PathLike[str] | None = None,
    split_column: str | None = None,
    root: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = None,
    embeddings_path: str | os.PathLike[str] | None = None,
    exclude_same: Sequence[str] = (),
    threshold: float | None = None,
    open_set: OpenSetOptions | None = None,
    config: EmbedderConfig = EmbedderConfig(),
    cache_dir: str | os.PathLike[str] | None = None,
    n_examples: int = 24,
    title: str | None = None,
    progress: Progress | None = None,
) -> EvaluationRun:
    """Evaluate queries against the gallery and write ``metrics.json`` and ``report.html``.

    Queries are the ``test`` / ``query`` rows of the split; the gallery is its ``gallery`` rows
    when it has any, else its ``train`` rows. Vectors come from ``embeddings_path`` (an ``.npz``
    as ``wildreid embed`` writes, from any tool) or are computed with ``model``; only the query
    and gallery images are embedded.

    When some query is new (identity absent from the gallery) and no ``threshold`` is given,
    known / new / review decisions come from an open-set policy (``open_set``) calibrated on the
    gallery side only, saved as ``out_dir/calibration.json``; BAKS, BAUS, ``open_score``,
    ``review_fraction``, ``auto_accuracy`` and ECE before / after calibration are reported.

    Raises:
        ConfigError: not exactly one of ``split_path`` / ``split_column`` given, or both
            ``embeddings_path`` and an explicit ``weights``.
    """
    if (split_path is None) == (split_column is None):
        raise ConfigError("give exactly one of a split file (--split) or a split column")
    if embeddings_path is not None and weights is not None:
        raise ConfigError("--embeddings and --weights exclude each other")
    metadata, folder = load_dataset(metadata_path, root=root)
    split = (
        read_split(split_path, metadata=metadata)
        if split_path is not None
        else split_from_column(metadata, str(split_column))
    )
    protocol = protocol_from_split(metadata, split)
    needed = set(protocol.query_ids) | set(protocol.gallery_ids)
    skipped: tuple[tuple[str, str], ...] = ()
    if embeddings_path is not None:
        embeddings = load_embeddings(embeddings_path)
        source: dict[str, Any] = {"embeddings": str(embeddings_path)}
    else:
        rows = metadata[metadata["image_id"].isin(needed)]
        embedded = embed_dataset(
            rows,
            root=folder,
            model=model,
            weights=weights,
            config=config,
            cache_dir=cache_dir,
            progress=progress,
        )
        embeddings, skipped = embedded.embeddings, embedded.skipped
        source = {"model": str(model), "weights": str(weights) if weights else "default"}
    protocol = protocol.without(image_id for image_id, _ in skipped)
    options = open_set or OpenSetOptions()
    policy = None
    if threshold is None and _has_new_queries(metadata, protocol):
        policy = _open_set_policy(metadata, protocol, embeddings, options, exclude_same)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        policy.save(Path(out_dir) / CALIBRATION_FILE)
    result = evaluate_embeddings(
        metadata,
        protocol,
        embeddings,
        exclude_same=exclude_same,
        threshold=threshold,
        policy=policy,
        oracle=options.oracle,
    )
    report_config = {
        **source,
        "metadata": str(metadata_path),
        "split": str(split_path) if split_path is not None else f"column {split_column}",
        "queries": f"{len(protocol.query_ids)} ({protocol.query_side})",
        "gallery": f"{len(protocol.gallery_ids)} ({protocol.gallery_side})",
        "exclude_same": ", ".join(exclude_same) or "none",
        "skipped_images": len(skipped),
        "space": asdict(embeddings.space),
    }
    if policy is not None:
        report_config["open-set decisions"] = (
            f"{policy.calibration.calibrator.kind} calibration fitted on the gallery side "
            f"({CALIBRATION_FILE}), threshold for {policy.target}, review margin "
            f"{policy.review_margin:g}"
        )
    files = write_report(
        result,
        metadata=metadata,
        root=folder,
        out_dir=out_dir,
        title=title or Path(metadata_path).parent.name or "evaluation",
        config=report_config,
        n_examples=n_examples,
    )
    logger.info("wrote %s and %s", files.metrics_json, files.report_html)
    return EvaluationRun(result=result, files=files, skipped=skipped)
