"""Local features versus end-to-end training as the training set grows (MiewID team's study).

:func:`run_training_size` trains the end-to-end model (:func:`wildreid.training.trainer.train`)
on growing fractions of each identity's training images and scores four methods on one fixed
query / gallery split (the config's ``data`` section: its test rows are the queries, its gallery
or train rows the gallery, for every fraction):

``zero-shot``
    the base model's pretrained embeddings (computed once).
``fine-tuned``
    the model trained on the fraction's images (one per fraction).
``local``
    local-feature matching alone, no training: every query against every gallery image
    (``local_shortlist=0``, the WildlifeDatasets protocol), or against the zero-shot top-N;
    ties (e.g. pairs without a single inlier) keep the zero-shot order. Computed once.
``fusion``
    the fine-tuned model's top-B shortlist re-ordered with the local scores
    (:func:`wildreid.matching.rerank.fuse`; the CLI's default is rank fusion).

The subsets are nested and deterministic: each identity's training images are ordered by a
SHA-256 of the seed and the image id, and fraction ``f`` keeps the first
``max(1, round_half_up(f * n))`` of its ``n`` images, so a larger fraction holds every image of a
smaller one. Each fraction's subset is written as a split file that replaces the config's
``data.split`` / ``data.split_column``; everything else trains as configured. The validation
carve (``data.val_fraction``) comes out of the subset; the x axis counts the images the model is
fitted on (after the carve). The study's CLI sets ``val_fraction`` to 0 unless told otherwise.

Nothing is computed twice: local features and embeddings are cached under ``out_dir/cache``;
local pair scores are kept in one (Q, G) table (saved in the cache, keyed by the local settings
and the protocol) and only the pairs not scored yet are matched;
a fraction whose run finished (``runs/fraction-F/study.json``) is not trained again, so a study
that stopped resumes where it stopped.

``results.csv`` and the plot are rewritten after each fraction. Files: ``results.csv``
(fraction, images_per_identity, method, top1, top5, mAP, train_seconds),
``training_size.png``, ``config.yaml`` (the resolved training config),
``study.yaml`` (the study's settings), ``splits/fraction-F.csv`` and ``runs/fraction-F/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from wildreid.config import dump_config
from wildreid.data.schema import UNKNOWN_IDENTITY
from wildreid.data.splits import read_split, write_split
from wildreid.errors import ConfigError
from wildreid.evaluation.protocol import (
    EvaluationResult,
    Protocol,
    evaluate_embeddings,
    evaluate_scores,
    protocol_from_split,
    split_from_column,
)
from wildreid.files import atomic_path
from wildreid.matching.feature_cache import FeatureCache, extract_features
from wildreid.matching.rerank import RerankConfig, Reranker, fuse, shortlist_indices
from wildreid.models.embedder import EmbedderConfig
from wildreid.pipeline import embed_dataset, load_dataset
from wildreid.training.config import TrainConfig
from wildreid.training.data import prepare_training_data
from wildreid.types import Embeddings, LocalFeatures

__all__ = [
    "METHODS",
    "RESULT_COLUMNS",
    "StudyConfig",
    "StudyResult",
    "parse_fractions",
    "run_training_size",
    "training_subsets",
]

logger = logging.getLogger(__name__)

METHODS = ("zero-shot", "fine-tuned", "local", "fusion")
"""The methods of ``results.csv``, in plotting order."""

RESULT_COLUMNS = (
    "fraction",
    "images_per_identity",
    "method",
    "top1",
    "top5",
    "mAP",
    "train_seconds",
)

_DONE = "study.json"
_PAIRS_PER_CALL = 4096


def parse_fractions(text: str) -> tuple[float, ...]:
    """``"0.1,0.25,1"`` -> ``(0.1, 0.25, 1.0)``, checked as :class:`StudyConfig` does.

    Raises:
        ConfigError: an entry is not a number, or the list is empty, unsorted, repeats a value
            or leaves (0, 1].
    """
    values: list[float] = []
    for part in text.split(","):
        try:
            values.append(float(part.strip()))
        except ValueError:
            raise ConfigError(
                f"fractions: {part.strip()!r} is not a number; give e.g. 0.1,0.25,0.5,1.0"
            ) from None
    _check_fractions(tuple(values))
    return tuple(values)


def _check_fractions(fractions: Sequence[float]) -> None:
    if not fractions:
        raise ConfigError("fractions: give at least one, e.g. 0.1,0.25,0.5,1.0")
    for value in fractions:
        if not (math.isfinite(value) and 0 < value <= 1):
            raise ConfigError(f"fractions: {value:g} is outside (0, 1]")
    if len(set(fractions)) != len(fractions):
        repeated = sorted({v for v in fractions if list(fractions).count(v) > 1})
        raise ConfigError(f"fractions: {repeated[0]:g} is listed twice")
    if list(fractions) != sorted(fractions):
        raise ConfigError(f"fractions must increase, got {','.join(f'{v:g}' for v in fractions)}")


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs besides the training config.

    Attributes:
        fractions: increasing fractions in (0, 1] of each identity's training images.
        rerank: the local method (extractor, matcher, pair score); its ``shortlist`` is the
            fine-tuned model's shortlist that ``fusion`` re-orders (0: the whole gallery), its
            ``fusion`` how: ``rank`` (sum of the global and local ranks, what the CLI uses) or
            ``local`` (the local score, ties by the global one).
            ``None`` leaves out the local and fusion lines.
        local_shortlist: gallery images per query matched for the ``local`` line: 0 for every
            gallery image, else the zero-shot top-N.
        max_queries: score a deterministic sample of at most this many queries
            (:meth:`~wildreid.evaluation.protocol.Protocol.sample_queries`, the sample of
            ``wildreid evaluate --max-queries``); ``None`` for all. The gallery stays whole.
        seed: seeds the subsets (the training keeps its own ``train.seed``).
    """

    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    rerank: RerankConfig | None = None
    local_shortlist: int = 0
    max_queries: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fractions(self.fractions)
        if self.local_shortlist < 0:
            raise ConfigError(
                f"local_shortlist must be >= 0 (0: every gallery image), got {self.local_shortlist}"
            )
        if self.max_queries is not None and self.max_queries < 1:
            raise ConfigError(f"max_queries must be >= 1, got {self.max_queries}")
        if self.rerank is not None and self.rerank.fusion == "calibrated":
            # Calibrated fusion fits its calibrators on gallery-side pairs (wildreid evaluate);
            # the study does not, and fuse() would silently order the shortlist by rank.
            raise ConfigError(
                "the training-size study fuses with 'rank' or 'local', not 'calibrated'"
            )


@dataclass(frozen=True)
class StudyResult:
    """What :func:`run_training_size` wrote.

    Attributes:
        rows: the rows of ``results.csv``.
        results_csv, plot, config_yaml: the files.
        local_pairs: how many query-gallery pairs were matched with local features.
        local_seconds: extraction and matching time of the local scores.
    """

    rows: tuple[dict[str, Any], ...]
    results_csv: Path
    plot: Path
    config_yaml: Path
    local_pairs: int
    local_seconds: float


def _order_key(seed: int, image_id: str) -> str:
    return hashlib.sha256(f"wildreid.training-size\x1f{seed}\x1f{image_id}".encode()).hexdigest()


def _keep(fraction: float, n: int) -> int:
    """``max(1, round_half_up(fraction * n))`` (exact decimal arithmetic), at most ``n``."""
    return min(n, max(1, math.floor(Fraction(str(fraction)) * n + Fraction(1, 2))))


def training_subsets(
    metadata: pd.DataFrame, split: pd.DataFrame, fractions: Sequence[float], *, seed: int = 0
) -> dict[float, pd.DataFrame]:
    """Per fraction, ``split`` with only that fraction of each identity's ``train`` rows.

    The other train rows are left out of the table (the trainer reads only ``train`` rows);
    rows of the other sides are kept. Subsets are nested across fractions and every identity
    keeps at least one image. ``unknown`` training rows are left out (the trainer ignores them).

    Raises:
        ConfigError: invalid fractions.
    """
    _check_fractions(fractions)
    identity = dict(
        zip(metadata["image_id"].astype(str), metadata["identity"].astype(str), strict=True)
    )
    ids = split["image_id"].astype(str)
    on_train = split["split"].astype(str) == "train"
    by_identity: dict[str, list[str]] = {}
    for image_id in ids[on_train]:
        name = identity[image_id]
        if name != UNKNOWN_IDENTITY:
            by_identity.setdefault(name, []).append(image_id)
    ordered = {
        name: sorted(members, key=lambda i: (_order_key(seed, i), i))
        for name, members in by_identity.items()
    }
    subsets: dict[float, pd.DataFrame] = {}
    for fraction in fractions:
        kept = {i for members in ordered.values() for i in members[: _keep(fraction, len(members))]}
        mask = ~on_train | ids.isin(kept)
        subsets[fraction] = split[mask].reset_index(drop=True)
    return subsets


def _label(fraction: float) -> str:
    return f"fraction-{fraction:g}"


class _LocalScores:
    """Local pair scores of the fixed protocol, matched once per pair.

    Shapes:
        table: (Q, G) float64, ``nan`` where a pair has not been matched yet.
    """

    def __init__(
        self,
        reranker: Reranker,
        queries: Sequence[LocalFeatures],
        gallery: Sequence[LocalFeatures],
        *,
        path: Path,
    ) -> None:
        self._reranker = reranker
        self._queries = queries
        self._gallery = gallery
        self._path = path
        self.table = np.full((len(queries), len(gallery)), np.nan)
        if path.is_file():  # keyed by the settings and the protocol: see run_training_size
            self.table = np.load(path)
        self.seconds = 0.0
        self.pairs = 0

    def _save(self) -> None:
        with atomic_path(self._path) as tmp, tmp.open("wb") as handle:
            np.save(handle, self.table)

    def values(self, shortlist: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """(Q, B) the scores of each query's shortlisted gallery items (``nan`` at ``-1``),
        matching the pairs not scored yet."""
        rows, cols = np.nonzero(shortlist >= 0)
        gallery = shortlist[rows, cols]
        todo = np.isnan(self.table[rows, gallery])
        pending = list(zip(rows[todo].tolist(), gallery[todo].tolist(), strict=True))
        start = time.perf_counter()
        for first in range(0, len(pending), _PAIRS_PER_CALL):
            chunk = pending[first : first + _PAIRS_PER_CALL]
            scores, _ = self._reranker.score_pairs(
                [(self._queries[q], self._gallery[g]) for q, g in chunk]
            )
            for (q, g), value in zip(chunk, scores, strict=True):
                self.table[q, g] = value
            self._save()
            logger.info("local matching: %d / %d pairs", first + len(chunk), len(pending))
        self.seconds += time.perf_counter() - start
        self.pairs += len(pending)
        out = np.full(shortlist.shape, np.nan)
        out[rows, cols] = self.table[rows, gallery]
        return out


def _row(
    fraction: float,
    per_identity: float,
    method: str,
    result: EvaluationResult,
    train_seconds: float | None,
) -> dict[str, Any]:
    m = result.metrics
    return {
        "fraction": fraction,
        "images_per_identity": round(per_identity, 3),
        "method": method,
        "top1": round(float(m["top1"]), 4),
        "top5": round(float(m["top5"]), 4),
        "mAP": round(float(m["mAP"]), 4),
        "train_seconds": "" if train_seconds is None else round(train_seconds, 1),
    }


def _embed(
    rows: pd.DataFrame,
    root: Path,
    model: str | os.PathLike[str],
    weights: str | None,
    config: EmbedderConfig,
    cache: Path,
) -> tuple[Embeddings, tuple[tuple[str, str], ...]]:
    result = embed_dataset(
        rows, root=root, model=model, weights=weights, config=config, cache_dir=cache
    )
    return result.embeddings, result.skipped


def _train_fraction(
    config: TrainConfig,
    run_dir: Path,
    train: Callable[..., Any],
) -> float:
    """Train (or resume, or reuse) one fraction's run; its training seconds."""
    done = run_dir / _DONE
    if done.is_file():
        seconds = float(json.loads(done.read_text())["train_seconds"])
        logger.info("%s: finished before, reusing its model (%.0f s of training)", run_dir, seconds)
        return seconds
    resume = (run_dir / "last.pt").is_file()
    result = train(config, out_dir=run_dir, resume=resume)
    seconds = float(result.seconds)
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps({"train_seconds": seconds, "resumed": resume}))
    return seconds


def run_training_size(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    study: StudyConfig = StudyConfig(),
    progress: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run the training-size study (module docstring) and write its files in ``out_dir``.

    Args:
        config: the training config; its ``data`` section gives the data and the fixed split,
            its ``model.base`` / ``model.weights`` the zero-shot model, ``train.device`` the
            device for embedding too.
        out_dir: the study folder (created; a finished fraction in it is reused).
        study: fractions, local method and fusion.
        progress: called with a one-line message as each stage starts.

    Raises:
        ConfigError: invalid fractions, or a fraction leaves too few images for the sampler.
        DataError, WeightsError: as :func:`~wildreid.training.trainer.train` and
            :func:`~wildreid.pipeline.evaluate_dataset`.
    """
    from wildreid.training.trainer import train  # deferred: the trainer imports a lot
    from wildreid.viz.plots import plot_training_size

    say = progress or (lambda _message: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    data = config.data
    metadata, root = load_dataset(data.metadata, root=data.root)
    split = (
        read_split(data.split, metadata=metadata)
        if data.split is not None
        else split_from_column(metadata, str(data.split_column))
    )
    protocol = protocol_from_split(metadata, split)
    if study.max_queries is not None:
        protocol = protocol.sample_queries(study.max_queries)
    subsets = training_subsets(metadata, split, study.fractions, seed=study.seed)

    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(dump_config(config))
    with atomic_path(out / "study.yaml") as tmp:
        tmp.write_text(dump_config(study))

    # Per fraction: the split file, the rows the model is fitted on (after the validation carve).
    plans: list[tuple[float, TrainConfig, float, Path]] = []
    for fraction, subset in subsets.items():
        path = out / "splits" / f"{_label(fraction)}.csv"
        write_split(subset, path)
        fitted = prepare_training_data(
            metadata,
            subset,
            root=root,
            val_fraction=data.val_fraction,
            val_kind=data.val_kind,
            group_column=data.group_column,
            seed=config.train.seed,
        ).train
        counts = fitted["identity"].astype(str).value_counts()
        if int((counts >= 2).sum()) < config.sampler.p:
            raise ConfigError(
                f"fraction {fraction:g} leaves {int((counts >= 2).sum())} identities with 2 or "
                f"more training images ({len(fitted)} images of {len(counts)} identities), but "
                f"P x K sampling needs sampler.p={config.sampler.p} of them; use a larger "
                "fraction or a smaller sampler.p"
            )
        fraction_config = replace(config, data=replace(data, split=path, split_column=None))
        plans.append(
            (fraction, fraction_config, float(counts.mean()), out / "runs" / _label(fraction))
        )

    needed = set(protocol.query_ids) | set(protocol.gallery_ids)
    rows = metadata[metadata["image_id"].astype(str).isin(needed)]
    embed_config = EmbedderConfig(
        device=config.train.device,
        workers=config.train.workers,
        skip_bad_images=data.skip_bad_images,
    )
    say(f"zero-shot embeddings ({config.model.base})")
    zero, skipped = _embed(rows, root, config.model.base, config.model.weights, embed_config, cache)

    local: _LocalScores | None = None
    if study.rerank is not None:
        reranker = Reranker(study.rerank)
        say(f"local features ({study.rerank.method})")
        extraction = extract_features(
            rows,
            root=root,
            extractor=reranker.extractor,
            cache=FeatureCache(cache),
            skip_bad_images=data.skip_bad_images,
        )
        skipped = (*skipped, *extraction.skipped)
        protocol = protocol.without(i for i, _ in skipped)
        features = extraction.features
        key = hashlib.sha256(
            "\x1f".join(
                [
                    dump_config(replace(study.rerank, shortlist=0, fusion="local")),
                    reranker.extractor.key,
                    *protocol.query_ids,
                    "",
                    *protocol.gallery_ids,
                ]
            ).encode()
        ).hexdigest()[:16]
        local = _LocalScores(
            reranker,
            [features[i] for i in protocol.query_ids],
            [features[i] for i in protocol.gallery_ids],
            path=cache / f"local-pairs-{key}.npy",
        )
        local.seconds += extraction.seconds
    else:
        protocol = protocol.without(i for i, _ in skipped)

    zero_result = evaluate_embeddings(metadata, protocol, zero)
    local_result: EvaluationResult | None = None
    if local is not None:
        shortlist = shortlist_indices(zero_result.scores, study.local_shortlist)
        what = "every gallery image" if study.local_shortlist == 0 else "the zero-shot top-N"
        say(f"local matching against {what} ({int((shortlist >= 0).sum())} pairs)")
        scores = fuse(zero_result.scores, shortlist, local.values(shortlist), fusion="local")
        local_result = evaluate_scores(metadata, protocol, scores)

    results: list[dict[str, Any]] = []
    plot = out / "training_size.png"
    title = _title(Path(data.metadata).parent.name or "dataset", protocol, study)
    for fraction, fraction_config, per_identity, run_dir in plans:
        say(f"training on {fraction:g} of the images ({per_identity:.2f} per identity)")
        seconds = _train_fraction(fraction_config, run_dir, train)
        tuned, _ = _embed(rows, root, run_dir, None, embed_config, cache)
        tuned_result = evaluate_embeddings(metadata, protocol, tuned)
        results.append(_row(fraction, per_identity, "zero-shot", zero_result, None))
        results.append(_row(fraction, per_identity, "fine-tuned", tuned_result, seconds))
        if local is not None and local_result is not None and study.rerank is not None:
            results.append(_row(fraction, per_identity, "local", local_result, None))
            shortlist = shortlist_indices(tuned_result.scores, study.rerank.shortlist)
            fused = fuse(
                tuned_result.scores, shortlist, local.values(shortlist), fusion=study.rerank.fusion
            )
            fused_result = evaluate_scores(metadata, protocol, fused)
            results.append(_row(fraction, per_identity, "fusion", fused_result, seconds))
        _write_results(out / "results.csv", results)
        plot_training_size(pd.DataFrame(results), plot, title=title)
        logger.info(
            "fraction %g: fine-tuned top-1 %.1f%%", fraction, 100 * tuned_result.metrics["top1"]
        )

    return StudyResult(
        rows=tuple(results),
        results_csv=out / "results.csv",
        plot=plot,
        config_yaml=out / "config.yaml",
        local_pairs=0 if local is None else local.pairs,
        local_seconds=0.0 if local is None else local.seconds,
    )


def _title(dataset: str, protocol: Protocol, study: StudyConfig) -> str:
    """The plot's title: the data and what the local and fusion lines are."""
    lines = [
        f"{dataset}: {len(protocol.query_ids)} queries x {len(protocol.gallery_ids)} gallery images"
    ]
    method = study.rerank
    if method is not None:
        against = (
            "all pairs" if study.local_shortlist == 0 else f"zero-shot top-{study.local_shortlist}"
        )
        depth = "whole gallery" if method.shortlist == 0 else f"top-{method.shortlist}"
        lines.append(
            f"local: {method.method}, {method.score} score, {against}; "
            f"fusion: {method.fusion}, fine-tuned {depth}"
        )
    return "\n".join(lines)


def _write_results(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    frame = pd.DataFrame(list(rows), columns=list(RESULT_COLUMNS))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
