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

from wildreid.data.schema import load_dataset
from wildreid.data.splits import read_split
from wildreid.embeddings_file import load_embeddings
from wildreid.errors import ConfigError
from wildreid.evaluation.protocol import (
    EvaluationResult,
    evaluate_embeddings,
    protocol_from_split,
    split_from_column,
)
from wildreid.evaluation.report import ReportFiles, write_report
from wildreid.models.cache import EmbeddingCache
from wildreid.models.embedder import Embedder, EmbedderConfig, EmbedResult
from wildreid.models.factory import DEFAULT_MODEL, EmbeddingModel, load_model
from wildreid.models.heads import EmbeddingNet
from wildreid.models.landmark_embedder import LandmarkEmbedConfig, embed_with_landmarks
from wildreid.models.landmark_predictor import load_landmark_predictor

__all__ = ["EvaluationRun", "embed_dataset", "evaluate_dataset", "load_dataset"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def embed_dataset(
    metadata: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = None,
    config: EmbedderConfig = EmbedderConfig(),
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    landmarks: str | None = None,
    landmark_model: str | os.PathLike[str] | None = None,
) -> EmbedResult:
    """Embed every row of ``metadata`` with ``model`` (see :class:`Embedder`).

    A Landmark-Id model (its card lists landmarks) is fed heatmaps of the ``landmarks``
    source: ``annotated`` (the default; the metadata column), ``predicted`` (by the predictor
    ``landmark_model``) or ``none`` (zero heatmaps); see
    :func:`~wildreid.models.landmark_embedder.embed_with_landmarks`.

    Raises:
        ConfigError: ``landmarks`` given for a model that takes none, or ``predicted``
            without ``landmark_model``.
    """
    loaded = load_model(model, device=config.device, weights=weights)
    if loaded.card.landmarks:
        return _embed_with_landmarks(
            loaded, metadata, root=root, config=config, source=landmarks, predictor=landmark_model
        )
    if landmarks not in (None, "none"):
        raise ConfigError(
            f"--landmarks {landmarks}: model {loaded.card.name} takes no landmarks (its card "
            "lists none); leave the option out"
        )
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    embedder = Embedder(loaded, config=config, cache=cache)
    return embedder.embed_images(metadata, root=root, progress=progress)


def _embed_with_landmarks(
    loaded: EmbeddingModel,
    metadata: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    config: EmbedderConfig,
    source: str | None,
    predictor: str | os.PathLike[str] | None,
) -> EmbedResult:
    net = loaded.module
    if not isinstance(net, EmbeddingNet):
        raise ConfigError(f"{loaded.card.name} lists landmarks but is not a landmark network")
    device = str(next(net.parameters()).device)
    settings = LandmarkEmbedConfig(
        source=source or "annotated", batch_size=config.batch_size, device=device
    )
    if settings.source == "predicted" and predictor is None:
        raise ConfigError("--landmarks predicted needs --landmark-model (a predictor run)")
    loaded_predictor = (
        load_landmark_predictor(predictor, device=device)
        if settings.source == "predicted" and predictor is not None
        else None
    )
    return embed_with_landmarks(
        net, loaded.space, metadata, root=root, config=settings, predictor=loaded_predictor
    )


@dataclass(frozen=True)
class EvaluationRun:
    """What :func:`evaluate_dataset` produced."""

    result: EvaluationResult
    files: ReportFiles
    skipped: tuple[tuple[str, str], ...]


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
    config: EmbedderConfig = EmbedderConfig(),
    cache_dir: str | os.PathLike[str] | None = None,
    n_examples: int = 24,
    title: str | None = None,
    progress: Progress | None = None,
    landmarks: str | None = None,
    landmark_model: str | os.PathLike[str] | None = None,
) -> EvaluationRun:
    """Evaluate queries against the gallery and write ``metrics.json`` and ``report.html``.

    Queries are the ``test`` / ``query`` rows of the split; the gallery is its ``gallery`` rows
    when it has any, else its ``train`` rows. Vectors come from ``embeddings_path`` (an ``.npz``
    as ``wildreid embed`` writes, from any tool) or are computed with ``model``; only the query
    and gallery images are embedded.

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
            landmarks=landmarks,
            landmark_model=landmark_model,
        )
        embeddings, skipped = embedded.embeddings, embedded.skipped
        source = {"model": str(model), "weights": str(weights) if weights else "default"}
        if landmarks is not None:
            source["landmarks"] = landmarks
    protocol = protocol.without(image_id for image_id, _ in skipped)
    result = evaluate_embeddings(
        metadata, protocol, embeddings, exclude_same=exclude_same, threshold=threshold
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
