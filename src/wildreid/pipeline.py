"""End-to-end workflows over files: embed a dataset, evaluate it and write the report.

These are what the CLI commands ``wildreid embed`` and ``wildreid evaluate`` call; each step is
also usable on its own (:mod:`wildreid.models`, :mod:`wildreid.evaluation`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from PIL import Image

from wildreid.data.dataset import bbox_tuple
from wildreid.data.images import load_image
from wildreid.data.schema import UNKNOWN_IDENTITY, load_dataset
from wildreid.data.splits import read_split
from wildreid.embeddings_file import load_embeddings
from wildreid.errors import ConfigError, DataError
from wildreid.evaluation.openset import (
    OpenSetPolicy,
    fit_local_fusion,
    load_policy,
)
from wildreid.evaluation.protocol import (
    EvaluationResult,
    Protocol,
    evaluate_embeddings,
    evaluate_scores,
    fit_gallery_policy,
    gallery_calibration_data,
    protocol_from_split,
    split_from_column,
)
from wildreid.evaluation.report import ReportFiles, write_report
from wildreid.matching.calibration import expected_calibration_error, reliability_curve
from wildreid.matching.feature_cache import ExtractionResult, FeatureCache, extract_features
from wildreid.matching.fusion import fuse_shortlist
from wildreid.matching.rerank import RerankConfig, Reranker, RerankResult, shortlist_recall
from wildreid.models.cache import EmbeddingCache
from wildreid.models.embedder import Embedder, EmbedderConfig, EmbedResult
from wildreid.models.factory import DEFAULT_MODEL, EmbeddingModel, load_model
from wildreid.models.heads import EmbeddingNet
from wildreid.models.landmark_embedder import LandmarkEmbedConfig, embed_with_landmarks
from wildreid.models.landmark_predictor import load_landmark_predictor
from wildreid.models.onnx_export import read_onnx
from wildreid.types import Embeddings, LocalFeatures
from wildreid.viz.keypoint_matches import render_keypoint_matches

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

    ``model`` may also be an ONNX file written by ``wildreid export`` (run with a compiled
    runtime; its vectors are in the exported model's space).

    A Landmark-Id model (its card lists landmarks) is fed heatmaps of the ``landmarks``
    source: ``annotated`` (the default; the metadata column), ``predicted`` (by the predictor
    ``landmark_model``) or ``none`` (zero heatmaps); see
    :func:`~wildreid.models.landmark_embedder.embed_with_landmarks`.

    Raises:
        ConfigError: ``weights`` given with an ONNX file, ``landmarks`` given for a model that
            takes none, or ``predicted`` without ``landmark_model``.
        WeightsError: an ONNX file without wildreid's metadata.
    """
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    if str(model).endswith(".onnx"):
        if weights is not None:
            raise ConfigError(f"--weights cannot be combined with the ONNX file {model}")
        return Embedder(read_onnx(model), config=config, cache=cache).embed_images(
            metadata, root=root, progress=progress
        )
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
    return Embedder(loaded, config=config, cache=cache).embed_images(
        metadata, root=root, progress=progress
    )


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
    """What :func:`evaluate_dataset` produced.

    Attributes:
        result: the evaluation of the final ranking (re-ranked when re-ranking ran).
        files: the report files.
        skipped: ``(image_id, reason)`` of images left out as unreadable.
        global_result: with re-ranking, the evaluation of the global ranking alone.
        rerank: with re-ranking, what it measured (see ``metrics.json``'s ``rerank``).
    """

    result: EvaluationResult
    files: ReportFiles
    skipped: tuple[tuple[str, str], ...]
    global_result: EvaluationResult | None = None
    rerank: dict[str, Any] | None = None


def _protocol_rows(metadata: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """The metadata rows of the protocol's queries and gallery, in metadata order."""
    needed = set(protocol.query_ids) | set(protocol.gallery_ids)
    return metadata[metadata["image_id"].astype(str).isin(needed)]


def _rerank(
    metadata: pd.DataFrame,
    protocol: Protocol,
    global_result: EvaluationResult,
    reranker: Reranker,
    extraction: ExtractionResult,
    *,
    exclude_same: Sequence[str],
    threshold: float | None,
    progress: Progress | None,
    calibration: _FusionCalibration | None = None,
) -> tuple[EvaluationResult, RerankResult, dict[str, Any]]:
    """Re-rank the global result's shortlists and evaluate the new ranking.

    With ``calibration`` (fusion ``calibrated``), the local scores of calibration pairs carved
    from the gallery are calibrated first, and the evaluated ranking is the fused probability.
    """
    features = extraction.features
    fused_policy = fused = None
    fusion_facts: dict[str, Any] = {}
    if calibration is not None:
        fused_policy, fusion_facts = calibration.fit(reranker, features)
    reranked = reranker.rerank(
        global_result.scores,
        [features[i] for i in protocol.query_ids],
        [features[i] for i in protocol.gallery_ids],
        progress=progress,
    )
    if calibration is not None and fused_policy is not None:
        fused = fused_policy.fuse_shortlist(
            global_result.scores, reranked.shortlist, reranked.local
        )
        result = evaluate_scores(
            metadata,
            protocol,
            global_result.scores,
            exclude_same=exclude_same,
            policy=fused_policy,
            oracle=calibration.oracle,
            calibrated=fused,
        )
        result = _with_fused_mean_calibration(result, fused_policy, global_result, reranked)
    else:
        result = evaluate_scores(
            metadata, protocol, reranked.scores, exclude_same=exclude_same, threshold=threshold
        )
    n_queries = len(protocol.query_ids)
    config = reranker.config
    summary: dict[str, Any] = {
        "method": config.method,
        "shortlist": int(reranked.shortlist.shape[1]),
        "score": config.score,
        "fusion": "local" if fused is None and config.fusion == "calibrated" else config.fusion,
        "shortlist_recall": shortlist_recall(
            reranked.shortlist,
            global_result.query_labels,
            global_result.gallery_labels,
            global_result.known,
        ),
        "rerank_seconds_per_query": reranked.seconds["rerank"] / n_queries,
        "extraction_seconds": extraction.seconds,
        "images_extracted": extraction.extracted,
        "mean_keypoints": float(np.mean([len(f) for f in features.values()]) if features else 0.0),
        **fusion_facts,
    }
    if fused_policy is not None:
        summary["fused_policy"] = fused_policy
    return result, reranked, summary


def _with_fused_mean_calibration(
    result: EvaluationResult,
    policy: OpenSetPolicy,
    global_result: EvaluationResult,
    reranked: RerankResult,
) -> EvaluationResult:
    """Add the ECE and reliability curve of the fused mean *before* its recalibration, on the
    evaluated queries' pairs (``ECE_fused_mean``; ``ECE_calibrated`` is after it), and both
    ECEs on each query's top candidate alone (``ECE_top1_fused_mean`` / ``ECE_top1_calibrated``:
    the probability a reviewer is shown; almost every pair is a negative one, which makes the
    all-pairs ECE small whatever happens near the decision)."""
    local = policy.local_calibrator
    if result.reliability is None or local is None or policy.fused_calibrator is None:
        return result
    mean = fuse_shortlist(
        global_result.scores,
        reranked.shortlist,
        reranked.local,
        global_calibrator=policy.calibration.calibrator,
        local_calibrator=local,
    )
    valid = np.isfinite(mean)
    gallery = np.asarray(result.gallery_labels, dtype=object)
    queries = np.asarray(result.query_labels, dtype=object)
    same = (queries[:, None] == gallery[None, :]) & (queries != UNKNOWN_IDENTITY)[:, None]
    # What a reviewer is shown: each query's top candidate, right or not.
    rows, top = np.arange(len(queries)), result.ranking[:, 0]
    top_right = (
        (top >= 0) & (gallery[np.maximum(top, 0)] == queries) & (queries != UNKNOWN_IDENTITY)
    )
    shown = top >= 0
    metrics = {
        **result.metrics,
        "ECE_fused_mean": expected_calibration_error(mean[valid], same[valid]),
        "ECE_top1_fused_mean": expected_calibration_error(
            mean[rows, np.maximum(top, 0)][shown], top_right[shown]
        ),
        "ECE_top1_calibrated": expected_calibration_error(
            np.asarray(result.scores, dtype=np.float64)[rows, np.maximum(top, 0)][shown],
            top_right[shown],
        ),
    }
    curves = {
        "raw cosine": result.reliability["raw cosine"],
        "fused mean (before recalibration)": reliability_curve(mean[valid], same[valid]),
        "fused, recalibrated": result.reliability["calibrated"],
    }
    return replace(result, metrics=metrics, reliability=curves)


@dataclass(frozen=True)
class _FusionCalibration:
    """What calibrated fusion needs: the global policy and its gallery-side carve."""

    policy: OpenSetPolicy
    gallery_ids: tuple[str, ...]
    scores: npt.NDArray[np.float32]
    labels: list[str]
    groups: list[str] | None
    oracle: bool

    def fit(
        self, reranker: Reranker, features: dict[str, LocalFeatures]
    ) -> tuple[OpenSetPolicy, dict[str, Any]]:
        policy, _, matched = fit_local_fusion(
            self.policy,
            self.scores,
            self.labels,
            self.groups,
            reranker,
            [features.get(i) for i in self.gallery_ids],
            self.gallery_ids,
        )
        extra = policy.calibration.extra
        facts: dict[str, Any] = {
            **matched,
            "global_calibration_open_score": extra["calibration_open_score"],
            "fused_calibration_open_score": extra["fused_calibration_open_score"],
            "fused_mean_calibration_ECE": extra["fused_mean_calibration_ECE"],
            "fused_calibration_ECE": extra["fused_calibration_ECE"],
        }
        return policy, facts


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
    rerank: RerankConfig | None = None,
    max_queries: int | None = None,
    n_examples: int = 24,
    title: str | None = None,
    progress: Progress | None = None,
    stage: Callable[[str], Progress | None] | None = None,
    landmarks: str | None = None,
    landmark_model: str | os.PathLike[str] | None = None,
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

    With ``rerank``, each query's global shortlist is re-ranked with local features
    (:mod:`wildreid.matching.rerank`; features cached in ``cache_dir`` too): the metrics are
    those of the re-ranked order, the global-only ones go under ``global`` in ``metrics.json``
    beside ``rerank`` (method, shortlist recall, time per query), and the report draws the
    matched keypoints between each example query and its best candidates.

    Args:
        max_queries: evaluate a deterministic sample of at most this many queries
            (:meth:`~wildreid.evaluation.protocol.Protocol.sample_queries`, seed 0), e.g. for
            slow re-rankers on large query sets; the gallery is unchanged.
        progress: progress of the embedding (done, total).
        stage: given a stage name (``"local features"``, ``"re-ranking"``), a progress
            callback for it, or None.

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
    if max_queries is not None:
        protocol = protocol.sample_queries(max_queries)
    skipped: tuple[tuple[str, str], ...] = ()
    if embeddings_path is not None:
        embeddings = load_embeddings(embeddings_path)
        source: dict[str, Any] = {"embeddings": str(embeddings_path)}
    else:
        embedded = embed_dataset(
            _protocol_rows(metadata, protocol),
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
        source = {
            "model": str(model),
            "weights": str(weights) if weights else "default",
            "runtime": embedded.runtime,
        }
        if landmarks is not None:
            source["landmarks"] = landmarks
    reranker = extraction = None
    if rerank is not None:
        reranker = Reranker(rerank)
        extraction = extract_features(
            _protocol_rows(metadata, protocol.without(i for i, _ in skipped)),
            root=folder,
            extractor=reranker.extractor,
            cache=FeatureCache(cache_dir) if cache_dir is not None else None,
            skip_bad_images=config.skip_bad_images,
            progress=(stage or (lambda _name: None))("local features"),
        )
        skipped = (*skipped, *extraction.skipped)
    protocol = protocol.without(image_id for image_id, _ in skipped)
    options = open_set or OpenSetOptions()
    policy = None
    has_new = _has_new_queries(metadata, protocol)
    calibrated_fusion = rerank is not None and rerank.fusion == "calibrated"
    if threshold is None and (has_new or calibrated_fusion):
        try:
            policy = _open_set_policy(metadata, protocol, embeddings, options, exclude_same)
        except (ConfigError, DataError) as exc:
            if has_new:
                raise
            logger.warning(
                "no calibration for fusion (%s); the shortlist is ordered by the local score", exc
            )
        if policy is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            policy.save(Path(out_dir) / CALIBRATION_FILE)
    fusion_calibration = None
    if calibrated_fusion and policy is not None:
        group = options.group_column or (exclude_same[0] if exclude_same else None)
        gallery_scores, gallery_labels, groups = gallery_calibration_data(
            metadata, protocol, embeddings, group_column=group
        )
        fusion_calibration = _FusionCalibration(
            policy, protocol.gallery_ids, gallery_scores, gallery_labels, groups, options.oracle
        )
    evaluated_policy = policy if has_new else None
    result = evaluate_embeddings(
        metadata,
        protocol,
        embeddings,
        exclude_same=exclude_same,
        threshold=threshold,
        policy=evaluated_policy,
        oracle=options.oracle,
    )
    global_result: EvaluationResult | None = None
    summary: dict[str, Any] | None = None
    drawer = None
    if reranker is not None and extraction is not None:
        global_result = result
        result, _, summary = _rerank(
            metadata,
            protocol,
            global_result,
            reranker,
            extraction,
            exclude_same=exclude_same,
            threshold=threshold,
            progress=(stage or (lambda _name: None))("re-ranking"),
            calibration=fusion_calibration,
        )
        if fusion_calibration is not None and summary is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            summary["fused_policy"].save(Path(out_dir) / CALIBRATION_FILE)
            del summary["fused_policy"]
        drawer = _PairDrawer(metadata, folder, reranker, extraction.features)
    report_config = {
        **source,
        "metadata": str(metadata_path),
        "split": str(split_path) if split_path is not None else f"column {split_column}",
        "queries": f"{len(protocol.query_ids)} ({protocol.query_side})"
        + ("" if max_queries is None else f", a sample of at most {max_queries}"),
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
    if rerank is not None:
        report_config["rerank"] = asdict(rerank)
    files = write_report(
        result,
        metadata=metadata,
        root=folder,
        out_dir=out_dir,
        title=title or Path(metadata_path).parent.name or "evaluation",
        config=report_config,
        n_examples=n_examples,
        sections=(
            {"global": global_result.metrics, "rerank": summary}
            if global_result is not None and summary is not None
            else {}
        ),
        pair_drawer=drawer,
    )
    logger.info("wrote %s and %s", files.metrics_json, files.report_html)
    return EvaluationRun(
        result=result,
        files=files,
        skipped=skipped,
        global_result=global_result,
        rerank=summary,
    )


class _PairDrawer:
    """Draws the matched keypoints of a query and a gallery image for the report."""

    def __init__(
        self,
        metadata: pd.DataFrame,
        root: Path,
        reranker: Reranker,
        features: dict[str, LocalFeatures],
    ) -> None:
        self._rows = metadata.set_index(metadata["image_id"].astype(str))
        self._position = {image_id: i for i, image_id in enumerate(self._rows.index)}
        self._root = root
        self._reranker = reranker
        self._features = features

    def _image(self, image_id: str, position: int) -> Image.Image:
        row = self._rows.loc[image_id]
        cell = str(row["bbox"]) if "bbox" in row.index and pd.notna(row["bbox"]) else ""
        return load_image(self._root / str(row["path"]), bbox=bbox_tuple(cell, position))

    def __call__(self, query_id: str, gallery_id: str) -> Image.Image:
        f0, f1 = self._features[query_id], self._features[gallery_id]
        _, (matches,) = self._reranker.score_pairs([(f0, f1)])
        return render_keypoint_matches(
            self._image(query_id, self._position[query_id]),
            self._image(gallery_id, self._position[gallery_id]),
            f0,
            f1,
            matches,
            height_px=160,
        )
