"""Evaluation protocols: who is a query, who is in the gallery, and which pairs are compared.

A split (``image_id,split`` as :func:`wildreid.data.splits.read_split` returns it, or built from a
metadata column by :func:`split_from_column`) becomes a :class:`Protocol`:

* queries are the rows whose split is ``test`` or ``query``;
* the gallery is the ``gallery`` rows when the split has any (the synthetic dataset keeps its
  ``train`` rows for training only), otherwise the ``train`` rows;
* ``val`` rows, ``train`` rows next to a ``gallery`` side, and metadata rows absent from the
  split take no part.

Both sides keep the metadata's row order, so ties (broken by gallery order) are reproducible.

:func:`evaluate_embeddings` compares every query with every gallery item by cosine similarity and
computes the metrics of :mod:`wildreid.evaluation.metrics`. With ``exclude_same`` a query is not
compared with gallery items that share its value of any listed key (the same encounter, or the
same camera; a key ``a+b`` joins columns, so ``identity+sequence`` means "the same animal in the
same video"; an empty cell matches nothing): those pairs are passed to the metrics as invalid
(``valid`` mask: ranked last, never a hit, and a query whose only same-identity items are excluded
counts as a new individual), and their score in :attr:`EvaluationResult.scores` is ``-inf``.

Open-set metrics (BAKS, BAUS, new-individual AUROC) are reported when some query is new. Their
threshold is the caller's, or else the one at which at most :data:`DEFAULT_FPR` of the known
queries would be called new, chosen on the evaluated queries themselves (optimistic).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from wildreid.data.splits import SPLIT_VALUES
from wildreid.errors import ConfigError, DataError
from wildreid.evaluation.metrics import (
    UNKNOWN_LABEL,
    open_set_sweep,
    summarize,
    threshold_at_fpr,
)
from wildreid.evaluation.openset import OpenSetPolicy, decision_metrics, fit_open_set_policy
from wildreid.ids import first_repeat
from wildreid.matching.calibration import expected_calibration_error, reliability_curve
from wildreid.ranking import top_k
from wildreid.types import Embeddings

__all__ = [
    "DEFAULT_FPR",
    "EvaluationResult",
    "Protocol",
    "evaluate_embeddings",
    "evaluate_scores",
    "fit_gallery_policy",
    "gallery_calibration_data",
    "protocol_from_split",
    "split_from_column",
]

logger = logging.getLogger(__name__)

DEFAULT_FPR: Final = 0.05
"""FPR of new-individual detection at which the open-set threshold is chosen when none is given."""

_QUERY_SIDES: Final = ("query", "test")
_KS: Final = (1, 5, 10)
_RANKING_DEPTH: Final = 10
_CMC_DEPTH: Final = 20
_TOP_KEYS: Final = frozenset(f"top{k}" for k in _KS)
_SHOWN: Final = 5
_BLOCK_CELLS: Final = 1 << 22


@dataclass(frozen=True)
class Protocol:
    """Who is a query and who is in the gallery.

    Attributes:
        query_ids: query image ids, in metadata order.
        gallery_ids: gallery image ids, in metadata order.
        query_side: the split value(s) the queries come from (``test``, ``query`` or
            ``query+test``).
        gallery_side: the split value the gallery comes from (``gallery`` or ``train``).
    """

    query_ids: tuple[str, ...]
    gallery_ids: tuple[str, ...]
    query_side: str
    gallery_side: str

    def __post_init__(self) -> None:
        if not self.query_ids or not self.gallery_ids:
            raise ConfigError(
                f"a protocol needs queries and gallery items, got {len(self.query_ids)} "
                f"queries and {len(self.gallery_ids)} gallery items"
            )
        for side, ids in (("query", self.query_ids), ("gallery", self.gallery_ids)):
            repeat = first_repeat(ids)
            if repeat is not None:
                raise ConfigError(f"{side} image id {ids[repeat[1]]!r} is listed more than once")
        both = set(self.query_ids) & set(self.gallery_ids)
        if both:
            raise ConfigError(
                f"{len(both)} image id(s) are both query and gallery, e.g. {sorted(both)[0]!r}"
            )

    def sample_queries(self, n: int, *, seed: int = 0) -> Protocol:
        """This protocol with at most ``n`` queries: those first in ``sha256(f"{seed}:{id}")``
        order, kept in their original order (deterministic, independent of library versions).

        Raises:
            ConfigError: ``n < 1``.
        """
        if n < 1:
            raise ConfigError(f"the number of queries to sample must be >= 1, got {n}")
        if n >= len(self.query_ids):
            return self
        digest = {i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in self.query_ids}
        kept = set(sorted(self.query_ids, key=digest.__getitem__)[:n])
        return replace(self, query_ids=tuple(i for i in self.query_ids if i in kept))

    def without(self, image_ids: Iterable[str]) -> Protocol:
        """This protocol less ``image_ids`` on both sides (e.g. images that could not be read).

        Raises:
            ConfigError: no query or no gallery item is left.
        """
        gone = set(image_ids)
        if not gone:
            return self
        return replace(
            self,
            query_ids=tuple(i for i in self.query_ids if i not in gone),
            gallery_ids=tuple(i for i in self.gallery_ids if i not in gone),
        )


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Metrics and the ranking they come from.

    Attributes:
        metrics: :func:`~wildreid.evaluation.metrics.summarize` output (fractions in 0..1 and
            counts) plus ``excluded_pairs``; in open-set evaluations also ``threshold`` (and
            ``threshold_fpr`` when the threshold was chosen at that FPR).
        query_labels: identity of each query.
        gallery_labels: identity of each gallery item.
        known: whether each query's identity occurs among its non-excluded gallery items.

    Shapes:
        scores: (Q, G) float32 scores the ranking comes from (cosine similarities, re-ranked
            scores, or fused probabilities when ``calibrated`` was given); excluded pairs are
            ``-inf``.
        ranking: (Q, min(G, 10)) gallery indices, best first, ties by gallery order; ``-1``
            past a query's last non-excluded item.
        cmc: (min(G, 20),) CMC curve over known queries.
        known: (Q,) bool.
    """

    metrics: dict[str, float]
    query_ids: tuple[str, ...]
    gallery_ids: tuple[str, ...]
    query_labels: tuple[str, ...]
    gallery_labels: tuple[str, ...]
    scores: np.ndarray
    ranking: np.ndarray
    cmc: np.ndarray
    known: np.ndarray
    excluded_pairs: int
    reliability: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None


def _cells(column: pd.Series[Any]) -> pd.Series[str]:
    """A column as strings on a fresh 0-based index; missing cells become ``""``."""
    return pd.Series(column.to_numpy(dtype=object), dtype=object).fillna("").astype(str)


def _where(index: int) -> str:
    """The 1-based data row and CSV line of a 0-based row position."""
    return f"row {index + 1} (line {index + 2})"


def _metadata_ids(metadata: pd.DataFrame) -> pd.Series[str]:
    """The checked ``image_id`` column (non-empty, unique) on a 0-based index."""
    if "image_id" not in metadata.columns or "identity" not in metadata.columns:
        raise DataError("metadata: needs the columns image_id and identity")
    ids = _cells(metadata["image_id"])
    empty = ids.str.strip() == ""
    if empty.any():
        raise DataError(f"metadata: {_where(int(np.argmax(empty)))}: image_id is empty")
    repeat = first_repeat(ids)
    if repeat is not None:
        at = repeat[1]
        raise DataError(f"metadata: {_where(at)}: image_id {ids[at]!r} repeats an earlier row")
    return ids


def split_from_column(metadata: pd.DataFrame, column: str) -> pd.DataFrame:
    """The split stored in a metadata column, as the ``image_id,split`` table of ``read_split``.

    Raises:
        ConfigError: ``column`` is not a metadata column.
        DataError: an image id is empty or repeated, or a cell is not one of the split values
            (the message names the column and row; use ``val`` for rows to leave out).
    """
    if column not in metadata.columns:
        raise ConfigError(
            f"split column {column!r} is not a metadata column "
            f"(columns: {', '.join(map(str, metadata.columns))})"
        )
    ids = _metadata_ids(metadata)
    values = _cells(metadata[column])
    bad = ~values.isin(SPLIT_VALUES)
    if bad.any():
        at = int(np.argmax(bad))
        raise DataError(
            f"metadata column {column!r}: {_where(at)}: split value {values[at]!r} is not one of "
            f"{', '.join(SPLIT_VALUES)} (val rows are left out of the evaluation)"
        )
    return pd.DataFrame({"image_id": ids, "split": values})


def protocol_from_split(metadata: pd.DataFrame, split: pd.DataFrame) -> Protocol:
    """Queries and gallery from a split (rules in the module docstring).

    Raises:
        DataError: the split names image ids absent from the metadata, or lacks its columns.
        ConfigError: the split has no query (``test``/``query``) or no gallery
            (``gallery``/``train``) rows.
    """
    if "image_id" not in split.columns or "split" not in split.columns:
        raise DataError("split: needs the columns image_id and split")
    ids = _metadata_ids(metadata)
    side = dict(zip(_cells(split["image_id"]), _cells(split["split"]), strict=True))
    id_set = set(ids)
    absent = [image_id for image_id in side if image_id not in id_set]
    if absent:
        raise DataError(
            f"split: {len(absent)} image id(s) not in the metadata, e.g. "
            f"{', '.join(map(repr, absent[:_SHOWN]))}"
        )
    sides = ids.map(side).fillna("")
    present = set(sides)
    query_side = "+".join(s for s in _QUERY_SIDES if s in present)
    gallery_side = "gallery" if "gallery" in present else "train"
    if not query_side:
        raise ConfigError("the split has no query rows; mark queries as 'test' or 'query'")
    if gallery_side not in present:
        raise ConfigError("the split has no gallery rows; mark them as 'gallery' or 'train'")
    return Protocol(
        query_ids=tuple(ids[sides.isin(_QUERY_SIDES)]),
        gallery_ids=tuple(ids[sides == gallery_side]),
        query_side=query_side,
        gallery_side=gallery_side,
    )


def _lookup(
    metadata: pd.DataFrame, ids: Sequence[str], columns: Sequence[str], role: str
) -> pd.DataFrame:
    """The metadata ``columns`` (as strings) of ``ids``, in that order."""
    table = pd.DataFrame({c: _cells(metadata[c]) for c in columns})
    table.index = pd.Index(_metadata_ids(metadata))
    absent = [i for i in ids if i not in table.index]
    if absent:
        raise DataError(
            f"{len(absent)} {role} image id(s) are not in the metadata, e.g. "
            f"{', '.join(map(repr, absent[:_SHOWN]))}; use the metadata the split was made from"
        )
    return table.loc[list(ids)].reset_index(drop=True)


def _unit_vectors(embeddings: Embeddings, ids: Sequence[str], role: str) -> npt.NDArray[np.float32]:
    """(N, D) float32 L2-normalised vectors of ``ids``."""
    present = set(embeddings.image_ids)
    missing = [i for i in ids if i not in present]
    if missing:
        raise ConfigError(
            f"{len(missing)} {role} image(s) have no embedding, e.g. "
            f"{', '.join(map(repr, missing[:_SHOWN]))}; run `wildreid embed` on the whole "
            "metadata (queries and gallery) first"
        )
    vectors = embeddings.select(tuple(ids)).vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ConfigError(f"the embedding of {role} image {ids[zero[0]]!r} is the zero vector")
    unit: npt.NDArray[np.float32] = (vectors / norms).astype(np.float32)
    return unit


def _key_values(rows: pd.DataFrame, key: tuple[str, ...]) -> pd.Series[Any]:
    """The key's value per row (columns joined); missing (NaN) where any part is empty."""
    parts = [rows[column].str.strip() for column in key]
    joined = (
        parts[0].str.cat(pd.concat(parts[1:], axis=1), sep="\x1f") if len(parts) > 1 else parts[0]
    )
    empty = np.logical_or.reduce([part == "" for part in parts])
    return joined.where(~empty)


def _exclusions(
    queries: pd.DataFrame, gallery: pd.DataFrame, keys: Sequence[tuple[str, ...]]
) -> npt.NDArray[np.bool_]:
    """(Q, G) bool: True where the pair has the same non-empty value of any key.

    A key is one column (``encounter``) or several (``identity+sequence``: all must agree).
    """
    excluded = np.zeros((len(queries), len(gallery)), dtype=np.bool_)
    for key in keys:
        values = pd.concat(
            [_key_values(queries, key), _key_values(gallery, key)], ignore_index=True
        )
        codes, _ = pd.factorize(values, use_na_sentinel=True)
        query_codes, gallery_codes = codes[: len(queries)], codes[len(queries) :]
        same = query_codes[:, None] == gallery_codes[None, :]
        excluded |= same & (query_codes[:, None] >= 0)  # empty cells (code -1) never match
    return excluded


def _top_ranking(
    scores: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_]
) -> npt.NDArray[np.intp]:
    """(Q, min(G, 10)) best gallery indices, ties by gallery order, -1 for excluded items.

    ``scores`` holds ``-inf`` at the excluded pairs, so they sort last.
    """
    n_queries, n_gallery = scores.shape
    ranking = np.empty((n_queries, min(n_gallery, _RANKING_DEPTH)), dtype=np.intp)
    step = max(1, _BLOCK_CELLS // n_gallery)
    for start in range(0, n_queries, step):
        rows = slice(start, start + step)
        top = top_k(scores[rows], _RANKING_DEPTH)
        ranking[rows] = np.where(np.take_along_axis(valid[rows], top, axis=1), top, -1)
    return ranking


def _threshold_at_fpr(
    scores: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_], known: npt.NDArray[np.bool_]
) -> float:
    """:func:`~wildreid.evaluation.metrics.threshold_at_fpr` at :data:`DEFAULT_FPR`.

    It depends only on each query's top-1 score and whether the query is known, so it is
    computed on that one-column summary (known queries match its single gallery label, new ones
    are ``"unknown"``), which spares ranking the whole gallery once more.
    """
    top1 = scores.max(axis=1, initial=-np.inf, where=valid)[:, None]
    queries = np.where(known, "known", UNKNOWN_LABEL)
    return threshold_at_fpr(top1, queries, ["known"], fpr=DEFAULT_FPR)


def _known(
    labels: tuple[Sequence[str], Sequence[str]], valid: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """(Q,) whether each query's identity occurs among its non-excluded gallery items."""
    codes, _ = pd.factorize(pd.Series([*labels[0], *labels[1]], dtype=object))
    query_codes, gallery_codes = codes[: len(labels[0])], codes[len(labels[0]) :]
    same = (query_codes[:, None] == gallery_codes[None, :]) & valid
    named = np.array([label != UNKNOWN_LABEL for label in labels[0]], dtype=np.bool_)
    known: npt.NDArray[np.bool_] = same.any(axis=1) & named
    return known


def _same_identity(labels: tuple[Sequence[str], Sequence[str]]) -> npt.NDArray[np.bool_]:
    """(Q, G) True where query and gallery item are the same named individual."""
    codes, _ = pd.factorize(pd.Series([*labels[0], *labels[1]], dtype=object))
    query_codes, gallery_codes = codes[: len(labels[0])], codes[len(labels[0]) :]
    named = np.array([label != UNKNOWN_LABEL for label in labels[0]], dtype=np.bool_)
    same: npt.NDArray[np.bool_] = (query_codes[:, None] == gallery_codes[None, :]) & named[:, None]
    return same


def _calibration_metrics(
    policy: OpenSetPolicy,
    probability: npt.NDArray[Any],
    scores: npt.NDArray[Any],
    same: npt.NDArray[np.bool_],
    valid: npt.NDArray[np.bool_],
) -> dict[str, float]:
    """ECE of raw cosine (clipped to [0, 1]) and of the calibrated probability, on the pairs
    of the evaluated queries (never used to fit anything)."""
    pairs = same[valid]
    return {
        "ECE_raw": expected_calibration_error(np.clip(scores[valid], 0.0, 1.0), pairs),
        "ECE_calibrated": expected_calibration_error(probability[valid], pairs),
        "review_margin": policy.review_margin,
    }


def _decision_facts(
    policy: OpenSetPolicy,
    probability: npt.NDArray[Any],
    labels: tuple[Sequence[str], Sequence[str]],
    ranking: npt.NDArray[np.intp],
    known: npt.NDArray[np.bool_],
) -> dict[str, float]:
    top = ranking[:, 0]
    rows = np.arange(len(top))
    gallery = np.array(labels[1], dtype=object)
    correct = (top >= 0) & (gallery[np.maximum(top, 0)] == np.array(labels[0], dtype=object))
    top_probability = np.where(top >= 0, probability[rows, np.maximum(top, 0)], -np.inf)
    return decision_metrics(top_probability, correct, known, policy)


def _reliability(
    probability: npt.NDArray[Any], scores: npt.NDArray[Any], same: npt.NDArray[np.bool_]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {
        "raw cosine": reliability_curve(np.clip(scores, 0.0, 1.0), same),
        "calibrated": reliability_curve(probability, same),
    }


def fit_gallery_policy(
    metadata: pd.DataFrame,
    protocol: Protocol,
    embeddings: Embeddings,
    *,
    group_column: str | None = None,
    **options: Any,
) -> OpenSetPolicy:
    """The open-set policy fitted on a carve of the gallery side only (never the queries).

    Args:
        group_column: metadata column (or columns joined by ``+``) of near-duplicate groups
            kept on one side of the carve; every image is its own group by default.
        options: keyword options of :func:`~wildreid.evaluation.openset.fit_open_set_policy`.

    Raises:
        ConfigError: ``group_column`` is not a metadata column, or invalid options.
        DataError: too few calibration pairs.
    """
    scores, labels, groups = gallery_calibration_data(
        metadata, protocol, embeddings, group_column=group_column
    )
    return fit_open_set_policy(scores, labels, space=embeddings.space, groups=groups, **options)


def gallery_calibration_data(
    metadata: pd.DataFrame,
    protocol: Protocol,
    embeddings: Embeddings,
    *,
    group_column: str | None = None,
) -> tuple[npt.NDArray[np.float32], list[str], list[str] | None]:
    """Gallery x gallery cosine scores, gallery identities and near-duplicate groups.

    Raises:
        ConfigError: ``group_column`` is not a metadata column.
    """
    key = tuple(group_column.split("+")) if group_column else ()
    missing = [c for c in key if c not in metadata.columns]
    if missing:
        raise ConfigError(
            f"group column {missing[0]!r} is not a metadata column "
            f"(columns: {', '.join(map(str, metadata.columns))})"
        )
    rows = _lookup(metadata, protocol.gallery_ids, ["identity", *key], "gallery")
    vectors = _unit_vectors(embeddings, protocol.gallery_ids, "gallery")
    groups = None
    if key:
        values = _key_values(rows, key)
        # An empty group cell makes the image a group of its own.
        groups = [
            str(v) if isinstance(v, str) else f"\x00{i}" for i, v in enumerate(values.tolist())
        ]
    return vectors @ vectors.T, list(rows["identity"]), groups


def evaluate_embeddings(
    metadata: pd.DataFrame,
    protocol: Protocol,
    embeddings: Embeddings,
    *,
    exclude_same: Sequence[str] = (),
    threshold: float | None = None,
    open_set: bool | None = None,
    policy: OpenSetPolicy | None = None,
    oracle: bool = False,
) -> EvaluationResult:
    """Rank the gallery for every query by cosine similarity and compute the metrics.

    The cosine similarities go to :func:`evaluate_scores`, whose arguments and result these are.

    Raises:
        ConfigError: an image has no embedding, or as :func:`evaluate_scores`.
        DataError: as :func:`evaluate_scores`.
    """
    for ids, role in ((protocol.query_ids, "query"), (protocol.gallery_ids, "gallery")):
        _lookup(metadata, ids, ["identity"], role)  # names ids absent from the metadata first
    scores = (
        _unit_vectors(embeddings, protocol.query_ids, "query")
        @ _unit_vectors(embeddings, protocol.gallery_ids, "gallery").T
    )
    return evaluate_scores(
        metadata,
        protocol,
        scores,
        exclude_same=exclude_same,
        threshold=threshold,
        open_set=open_set,
        policy=policy,
        oracle=oracle,
    )


def evaluate_scores(
    metadata: pd.DataFrame,
    protocol: Protocol,
    scores: npt.NDArray[np.float32],
    *,
    exclude_same: Sequence[str] = (),
    threshold: float | None = None,
    open_set: bool | None = None,
    policy: OpenSetPolicy | None = None,
    oracle: bool = False,
    calibrated: npt.NDArray[np.float64] | None = None,
) -> EvaluationResult:
    """Rank the gallery for every query by ``scores`` (higher is more similar) and compute the
    metrics.

    Args:
        metadata: the metadata table (``image_id``, ``identity`` and the ``exclude_same``
            columns are used).
        protocol: queries and gallery, e.g. from :func:`protocol_from_split`.
        scores: (Q, G) pair scores, queries and gallery in protocol order: cosine
            similarities, or re-ranked scores (:mod:`wildreid.matching.rerank`). Not modified.
        exclude_same: keys: a metadata column, or columns joined by ``+``; a gallery item
            sharing the query's non-empty value of any key is not compared with that query
            (see the module docstring).
        threshold: open-set decision threshold on the cosine similarity (top-1 score
            ``>= threshold`` means known). ``None`` chooses, in open-set evaluations, the
            threshold at which at most :data:`DEFAULT_FPR` of the known queries are called new,
            on these very queries: an optimistic (oracle) choice; pass a threshold calibrated on
            other data for unbiased BAKS/BAUS. A choice of ``-inf`` (no threshold reaches that
            FPR) is recorded as ``-1.0``, the lowest cosine, which equally accepts every query.
        open_set: whether to report BAUS, ``new_auroc`` and the threshold with BAKS. ``None``:
            when some query is new (identity absent from its gallery, or ``"unknown"``).
            ``True`` requires a new query; ``False`` leaves them out.
        policy: an open-set policy fitted on the gallery side
            (:func:`fit_gallery_policy`): the metrics are computed on its calibrated
            probabilities (same ranking: the calibration is strictly increasing) and BAKS /
            BAUS at its threshold, with ``open_score``, ``review_fraction``,
            ``auto_accuracy`` and ``ECE_raw`` / ``ECE_calibrated``.
        oracle: also report ``oracle_BAKS`` / ``oracle_BAUS`` / ``oracle_open_score`` at the
            threshold chosen on these queries (optimistic), beside the policy's numbers.
        calibrated: (Q, G) probabilities already calibrated and fused (re-ranking); used
            instead of ``policy``'s calibration of ``scores``.

    Returns:
        The result; ``metrics`` holds ``top1``, ``top5``, ``top10``, ``mAP``, ``mINP``, the
        counts ``n_queries``, ``n_gallery``, ``n_known_queries``, ``n_new_queries``,
        ``excluded_pairs``; open-set: ``BAKS``, ``BAUS``, ``new_auroc``, ``threshold`` and,
        when the threshold was chosen here, ``threshold_fpr``. A threshold given for a
        closed-set evaluation adds ``BAKS`` and ``threshold``.

    Raises:
        ConfigError: an ``exclude_same`` column is missing, an image has no embedding, a query
            has nothing left to compare with, no query is known, ``open_set=True`` without new
            queries, or ``threshold`` is given with ``open_set=False``.
        DataError: protocol ids are missing from the metadata, or metadata ids are not unique.
    """
    if threshold is not None and open_set is False:
        raise ConfigError("a threshold was given with open_set=False; drop one of them")
    keys = [tuple(key.split("+")) for key in dict.fromkeys(exclude_same)]
    needed = list(dict.fromkeys(column for key in keys for column in key))
    missing = [c for c in ("identity", *needed) if c not in metadata.columns]
    if missing:
        raise ConfigError(
            f"column {missing[0]!r} is not a metadata column "
            f"(columns: {', '.join(map(str, metadata.columns))})"
        )
    columns = ["identity", *(c for c in needed if c != "identity")]
    queries = _lookup(metadata, protocol.query_ids, columns, "query")
    gallery = _lookup(metadata, protocol.gallery_ids, columns, "gallery")
    expected = (len(protocol.query_ids), len(protocol.gallery_ids))
    if scores.shape != expected:
        raise ConfigError(f"scores of shape {scores.shape}, but the protocol has {expected}")
    scores = np.array(scores, dtype=np.float32)
    if np.isnan(scores).any():
        q, g = np.argwhere(np.isnan(scores))[0]
        raise ConfigError(
            f"the score of query {protocol.query_ids[q]!r} and gallery item "
            f"{protocol.gallery_ids[g]!r} is NaN"
        )
    valid = ~_exclusions(queries, gallery, keys)
    lonely = np.flatnonzero(~valid.any(axis=1))
    if lonely.size:
        shown = ", ".join(repr(protocol.query_ids[i]) for i in lonely[:_SHOWN])
        raise ConfigError(
            f"{lonely.size} query image(s) share {' or '.join(columns[1:])} with every gallery "
            f"item, so nothing is left to compare them with, e.g. {shown}; exclude fewer columns"
        )
    labels = (tuple(queries["identity"]), tuple(gallery["identity"]))
    known = _known(labels, valid)
    has_new = not known.all()
    if open_set and not has_new:
        raise ConfigError(
            "open-set metrics need a new query (identity absent from the gallery, or "
            f"{UNKNOWN_LABEL!r}), but every query is known; use open_set=None or False"
        )
    if policy is not None and threshold is not None:
        raise ConfigError("a threshold and a calibrated policy were both given; drop one")
    extra: dict[str, float] = {}
    oracle_threshold: float | None = None
    # The oracle thresholds what is ranked: fused probabilities when given (any other
    # calibration is strictly increasing, so the scores themselves do).
    oracle_scores = scores if calibrated is None else np.where(valid, calibrated, -np.inf)
    if has_new and open_set is not False and (oracle or (threshold is None and policy is None)):
        chosen = _threshold_at_fpr(oracle_scores, valid, known)
        oracle_threshold = -1.0 if math.isinf(chosen) else chosen
        extra["threshold_fpr" if policy is None else "oracle_threshold_fpr"] = DEFAULT_FPR
    if threshold is None and policy is None:
        threshold = oracle_threshold
    ranked_scores: npt.NDArray[Any] = scores
    if policy is not None:
        ranked_scores = (
            policy.probability(np.where(valid, scores, -np.inf))
            if calibrated is None
            else np.where(valid, calibrated, -np.inf)
        )
        threshold = policy.threshold if open_set is not False else None
    # One ranking gives every metric and the CMC curve (top-k for k = 1..depth).
    depth = min(len(gallery), _CMC_DEPTH)
    ks = sorted({*_KS, *range(1, depth + 1)})
    ranked = summarize(ranked_scores, *labels, ks=ks, threshold=threshold, valid=valid)
    curve = np.array([ranked[f"top{k}"] for k in range(1, depth + 1)])
    metrics = {k: v for k, v in ranked.items() if not k.startswith("top") or k in _TOP_KEYS}
    if open_set is False:
        metrics.pop("new_auroc", None)
    if threshold is not None:
        extra["threshold"] = float(threshold)
    if "BAKS" in metrics and "BAUS" in metrics:
        extra["open_score"] = math.sqrt(metrics["BAKS"] * metrics["BAUS"])
    excluded_pairs = int(valid.size - np.count_nonzero(valid))
    scores[~valid] = -np.inf
    # Fused probabilities order the gallery differently from the scores; any other
    # calibration is strictly increasing, so the scores' order is the ranked one.
    ordered = scores if calibrated is None else np.asarray(ranked_scores, dtype=np.float32)
    ranking = _top_ranking(ordered, valid)
    reliability = None
    if policy is not None:
        same = _same_identity(labels) & valid
        extra.update(_calibration_metrics(policy, ranked_scores, scores, same, valid))
        extra.update(_decision_facts(policy, ranked_scores, labels, ranking, known))
        reliability = _reliability(ranked_scores[valid], scores[valid], same[valid])
        if oracle and oracle_threshold is not None:
            baks, baus = open_set_sweep(
                oracle_scores, *labels, thresholds=[oracle_threshold], valid=valid
            )
            extra.update(
                oracle_threshold=oracle_threshold,
                oracle_BAKS=float(baks[0]),
                oracle_BAUS=float(baus[0]),
                oracle_open_score=float(np.sqrt(baks[0] * baus[0])),
            )
    metrics = {**metrics, **extra, "excluded_pairs": excluded_pairs}
    logger.info(
        "Evaluated %d queries against %d gallery items (%d pairs excluded): top-1 %.3f, mAP %.3f",
        len(protocol.query_ids),
        len(protocol.gallery_ids),
        excluded_pairs,
        metrics["top1"],
        metrics["mAP"],
    )
    return EvaluationResult(
        metrics=metrics,
        query_ids=protocol.query_ids,
        gallery_ids=protocol.gallery_ids,
        query_labels=labels[0],
        gallery_labels=labels[1],
        scores=ordered,
        ranking=ranking,
        cmc=curve,
        known=known,
        excluded_pairs=excluded_pairs,
        reliability=reliability,
    )
