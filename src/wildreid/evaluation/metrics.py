"""Re-identification metrics computed from a query x gallery score matrix.

Every public function takes the same three inputs:

* ``scores``: a ``(Q, G)`` real-valued matrix; ``scores[i, j]`` says how similar query ``i`` is to
  gallery item ``j``. **Higher means more similar.** For a distance matrix, pass
  ``similarity_from_distance(distances)`` and negate any threshold (``threshold=-max_distance``).
* ``query_labels``: ``Q`` identity strings, one per query.
* ``gallery_labels``: ``G`` identity strings, one per gallery item.

Ranking and ties:
    For every query the gallery is ranked by descending score. Equal scores are ordered by gallery
    position (the earlier column ranks first; a stable argsort of ``-scores``), so every metric is
    deterministic. The top-1 gallery item used by the open-set metrics comes from the same ranking.

Closed-set metrics (:func:`cmc`, :func:`top_k_accuracy`, :func:`precision_at_k`,
:func:`mean_average_precision`, :func:`mean_inverse_negative_penalty`):
    Only *known* queries count: queries whose identity occurs in the gallery. Queries of new
    individuals can never be matched and are left out (as in torchreid and pytorch-metric-learning);
    if no query is known, a :class:`~wildreid.errors.ConfigError` is raised.

Open-set metrics (:func:`baks`, :func:`baus`, :func:`new_individual_auroc`, :func:`tpr_at_fpr`,
:func:`threshold_at_fpr`):
    A query is *new* when its identity does not occur in the gallery. With a decision threshold the
    prediction for a query is the identity of its top-1 gallery item if the top-1 score is
    ``>= threshold``, otherwise "new individual".

The label ``"unknown"`` (:data:`UNKNOWN_LABEL`) marks an animal whose identity was not recorded:
    * a gallery item labelled ``"unknown"`` is never a correct match for any query, and predicting
      its identity is never correct (not even for a query of a new individual);
    * a query labelled ``"unknown"`` is a new individual; for :func:`baus` each such query forms its
      own identity group, because two unidentified animals are not the same animal.

Excluded pairs:
    Every public function also takes ``valid``, an optional boolean ``(Q, G)`` mask. A pair with
    ``valid[i, j] == False`` is removed from query ``i``'s gallery (e.g. a photo of the same
    encounter): it ranks after every valid item whatever its score (which may be anything, even
    ``-inf``), it is never a hit, and it does not make the query known, so a query whose every
    same-identity gallery item is excluded is new. Every query needs at least one valid item.
    ``precision@k`` still divides by ``k``.

All metric values are fractions in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score, roc_curve

from wildreid.errors import ConfigError
from wildreid.ranking import top_k

__all__ = [
    "UNKNOWN_LABEL",
    "baks",
    "baus",
    "cmc",
    "mean_average_precision",
    "mean_inverse_negative_penalty",
    "new_individual_auroc",
    "open_set_sweep",
    "precision_at_k",
    "similarity_from_distance",
    "summarize",
    "threshold_at_fpr",
    "top_k_accuracy",
    "tpr_at_fpr",
]

UNKNOWN_LABEL: Final = "unknown"
"""Identity label of an animal whose identity was not recorded."""

Labels: TypeAlias = Sequence[str] | npt.NDArray[Any]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
IntArray: TypeAlias = npt.NDArray[np.intp]
FloatArray: TypeAlias = npt.NDArray[np.float64]

# Ranking works on blocks of queries so that its temporaries stay near this many cells.
_BLOCK_CELLS: Final = 1 << 22
# Integer codes that can never equal the (non-negative) code of a named identity, nor each other.
_GALLERY_UNKNOWN: Final = -1
_QUERY_UNKNOWN: Final = -2
_PREDICTED_NEW: Final = -3


@dataclass(frozen=True)
class _Ranking:
    """The gallery ranked for every query, with identities encoded as integers.

    Shapes:
        matches: (Q, G); ``matches[i, r]`` is True when the gallery item at rank ``r + 1`` for
            query ``i`` has the identity of query ``i``.
        top1_index: (Q,) gallery column ranked first for each query.
        top1_score: (Q,) score of that column.
        query_codes: (Q,) identity codes; ``_QUERY_UNKNOWN`` for ``"unknown"``.
        gallery_codes: (G,) identity codes; ``_GALLERY_UNKNOWN`` for ``"unknown"``.
        known: (Q,) True for queries whose identity occurs among their valid gallery items.
    """

    matches: BoolArray
    top1_index: IntArray
    top1_score: FloatArray
    query_codes: IntArray
    gallery_codes: IntArray
    known: BoolArray


def similarity_from_distance(distances: npt.ArrayLike) -> FloatArray:
    """Turn a distance matrix (lower is more similar) into scores for this module.

    A distance threshold ``d`` becomes the score threshold ``-d``.

    Args:
        distances: (Q, G) distances between queries and gallery items.

    Returns:
        ``-distances`` as float64.
    """
    return np.negative(np.asarray(distances, dtype=np.float64))


def _as_labels(labels: Labels, name: str) -> npt.NDArray[np.str_]:
    """Check that ``labels`` is a non-empty 1-D sequence of strings and return it as an array."""
    array = np.asarray(labels, dtype=object)
    if array.ndim != 1:
        raise ConfigError(
            f"{name} must be a 1-D sequence of identity strings, got an array of shape "
            f"{array.shape}; pass one label per row (queries) or column (gallery) of scores"
        )
    if array.size == 0:
        raise ConfigError(f"{name} is empty; pass at least one identity label")
    not_strings = [value for value in array if not isinstance(value, str)]
    if not_strings:
        raise ConfigError(
            f"{name} must hold identity strings, but {len(not_strings)} label(s) are not "
            f"strings (first: {not_strings[0]!r} of type {type(not_strings[0]).__name__}); "
            "convert identities with str() before evaluating"
        )
    return array.astype(np.str_)


def _as_valid(valid: npt.ArrayLike | None, n_queries: int, n_gallery: int) -> BoolArray | None:
    """Check that ``valid`` is a boolean (Q, G) mask leaving every query a gallery item."""
    if valid is None:
        return None
    array = np.asarray(valid)
    if array.dtype != np.bool_ or array.shape != (n_queries, n_gallery):
        raise ConfigError(
            f"valid must be a boolean matrix of shape ({n_queries}, {n_gallery}), got dtype "
            f"{array.dtype} and shape {array.shape}; pass False for the excluded pairs"
        )
    empty = np.flatnonzero(~array.any(axis=1))
    if empty.size:
        raise ConfigError(
            f"{empty.size} query row(s) have no valid gallery item (first: row {empty[0]}); "
            "every query needs at least one gallery item it may be compared with"
        )
    return array


def _as_scores(
    scores: npt.ArrayLike, n_queries: int, n_gallery: int, valid: BoolArray | None = None
) -> npt.NDArray[Any]:
    """Check that ``scores`` is a real (Q, G) matrix, finite where ``valid`` (or everywhere);
    integer input becomes float64."""
    array = np.asarray(scores)
    if array.dtype.kind not in "fiu":
        raise ConfigError(
            f"scores must be a real-valued numeric matrix, got dtype {array.dtype}; "
            "pass similarity scores as floats"
        )
    if array.shape != (n_queries, n_gallery):
        raise ConfigError(
            f"scores has shape {array.shape} but the labels need ({n_queries}, {n_gallery}), "
            "i.e. (len(query_labels), len(gallery_labels)); pass one row per query and one "
            "column per gallery item"
        )
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    bad = ~np.isfinite(array)
    n_bad = int(np.count_nonzero(bad if valid is None else bad & valid))
    if n_bad:
        raise ConfigError(
            f"scores contains {n_bad} non-finite value(s) (NaN or infinity); "
            "fix or drop the affected queries or gallery items before evaluating"
        )
    return array


def _encode(
    query_labels: npt.NDArray[np.str_], gallery_labels: npt.NDArray[np.str_]
) -> tuple[IntArray, IntArray]:
    """Map identity strings to integer codes shared by queries and gallery.

    ``"unknown"`` gets a different negative code on each side, so it never matches anything.
    """
    names, codes = np.unique(np.concatenate([query_labels, gallery_labels]), return_inverse=True)
    codes = codes.astype(np.intp)
    query_codes, gallery_codes = codes[: len(query_labels)], codes[len(query_labels) :]
    unknown = np.flatnonzero(names == UNKNOWN_LABEL)
    if unknown.size:
        query_codes = np.where(query_codes == unknown[0], _QUERY_UNKNOWN, query_codes)
        gallery_codes = np.where(gallery_codes == unknown[0], _GALLERY_UNKNOWN, gallery_codes)
    return query_codes, gallery_codes


def _rank(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    valid: npt.ArrayLike | None = None,
) -> _Ranking:
    """Validate the inputs and rank the gallery for every query (the one ranking all metrics use).

    Invalid pairs (``valid`` False) are ranked last, in gallery order, and are never hits.

    Raises:
        ConfigError: if labels are not non-empty 1-D string sequences, ``scores`` is not a real
            matrix of shape ``(len(query_labels), len(gallery_labels))`` finite on valid pairs,
            or ``valid`` is not a boolean mask of that shape with a valid item in every row.
    """
    queries = _as_labels(query_labels, "query_labels")
    gallery = _as_labels(gallery_labels, "gallery_labels")
    mask = _as_valid(valid, len(queries), len(gallery))
    values = _as_scores(scores, len(queries), len(gallery), mask)
    query_codes, gallery_codes = _encode(queries, gallery)
    n_queries, n_gallery = values.shape
    matches = np.empty((n_queries, n_gallery), dtype=np.bool_)
    top1_index = np.empty(n_queries, dtype=np.intp)
    step = max(1, _BLOCK_CELLS // n_gallery)
    for start in range(0, n_queries, step):
        block = slice(start, start + step)
        block_values = (
            values[block] if mask is None else np.where(mask[block], values[block], -np.inf)
        )
        order = top_k(block_values, n_gallery)
        hits = gallery_codes[order] == query_codes[block, None]
        if mask is not None:
            hits &= np.take_along_axis(mask[block], order, axis=1)
        matches[block] = hits
        top1_index[block] = order[:, 0]
    top1_score = values[np.arange(n_queries), top1_index].astype(np.float64)
    # Equals np.isin(query_codes, gallery_codes) when every pair is valid.
    known: BoolArray = np.asarray(matches.any(axis=1))
    return _Ranking(matches, top1_index, top1_score, query_codes, gallery_codes, known)


def _known_matches(ranking: _Ranking) -> BoolArray:
    """Rows of ``ranking.matches`` for known queries, shape (Q_known, G).

    Raises:
        ConfigError: if no query identity occurs in the gallery.
    """
    known = ranking.known
    if not known.any():
        raise ConfigError(
            f"none of the {known.size} query identities occurs in the gallery, so closed-set "
            "metrics are undefined; check that queries and gallery use the same identity names"
        )
    return ranking.matches[known]


def _check_positive_int(value: int, name: str) -> int:
    """Return ``value`` if it is an integer >= 1, else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _cmc(matches: BoolArray, max_rank: int) -> FloatArray:
    """CMC curve up to ``max_rank`` from known-query matches of shape (Q_known, G)."""
    first_hit_rank = np.argmax(matches, axis=1) + 1
    counts = np.bincount(first_hit_rank, minlength=max_rank + 1)[1 : max_rank + 1]
    curve: FloatArray = np.cumsum(counts) / matches.shape[0]
    return curve


def _top_k(matches: BoolArray, k: int) -> float:
    """Fraction of known queries with a hit among the top ``k`` (the CMC curve at rank ``k``)."""
    return float(_cmc(matches, _check_positive_int(k, "k"))[-1])


def _mean_average_precision(matches: BoolArray) -> float:
    """Mean over rows of AP = mean over hits of the precision at each hit's rank.

    Shapes:
        matches: (Q_known, G); every row has at least one hit.
    """
    rows, columns = np.nonzero(matches)  # row-major, so the hits of a row are in rank order
    n_hits = np.count_nonzero(matches, axis=1)
    row_start = np.cumsum(n_hits) - n_hits
    hits_so_far = np.arange(rows.size) - row_start[rows] + 1
    precision = hits_so_far / (columns + 1)
    ap = np.bincount(rows, weights=precision, minlength=matches.shape[0]) / n_hits
    return float(np.mean(ap))


def _mean_inverse_negative_penalty(matches: BoolArray) -> float:
    """Mean over queries of INP = |G_q| / rank of the last positive; matches is (Q_known, G)."""
    last_hit_rank = matches.shape[1] - np.argmax(matches[:, ::-1], axis=1)
    return float(np.mean(np.count_nonzero(matches, axis=1) / last_hit_rank))


def _precision_at_k(matches: BoolArray, k: int) -> float:
    """Mean fraction of the top-k gallery items that share the query's identity."""
    if k > matches.shape[1]:
        raise ConfigError(
            f"k={k} exceeds the gallery size {matches.shape[1]}; use k <= {matches.shape[1]}"
        )
    return float(np.mean(np.count_nonzero(matches[:, :k], axis=1) / k))


def cmc(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    max_rank: int | None = None,
    valid: npt.ArrayLike | None = None,
) -> FloatArray:
    """Cumulative matching characteristic over known queries.

    Entry ``k - 1`` is the fraction of known queries whose first correct gallery item is at
    rank ``<= k``.

    Args:
        scores: (Q, G) similarity scores, higher is more similar.
        query_labels: (Q,) query identities.
        gallery_labels: (G,) gallery identities.
        max_rank: length of the curve; defaults to the gallery size.
        valid: (Q, G) mask of the pairs to compare; see "Excluded pairs" in the module docstring.

    Returns:
        The non-decreasing curve, shape ``(max_rank,)``.

    Raises:
        ConfigError: on invalid inputs, ``max_rank < 1``, or if no query is known.
    """
    matches = _known_matches(_rank(scores, query_labels, gallery_labels, valid))
    depth = matches.shape[1] if max_rank is None else _check_positive_int(max_rank, "max_rank")
    return _cmc(matches, depth)


def top_k_accuracy(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    k: int,
    valid: npt.ArrayLike | None = None,
) -> float:
    """Fraction of known queries with a same-identity gallery image among the top ``k``.

    Raises:
        ConfigError: on invalid inputs, ``k < 1``, or if no query is known.
    """
    return _top_k(_known_matches(_rank(scores, query_labels, gallery_labels, valid)), k)


def precision_at_k(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    k: int,
    valid: npt.ArrayLike | None = None,
) -> float:
    """Mean over known queries of the fraction of the top-``k`` gallery items of their identity.

    Raises:
        ConfigError: on invalid inputs, ``k`` outside ``1..G``, or if no query is known.
    """
    matches = _known_matches(_rank(scores, query_labels, gallery_labels, valid))
    return _precision_at_k(matches, _check_positive_int(k, "k"))


def mean_average_precision(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    valid: npt.ArrayLike | None = None,
) -> float:
    """Mean over known queries of AP over the fully ranked gallery (Market-1501 definition).

    AP of a query is the mean, over its same-identity gallery items, of the precision at the rank
    of each such item.

    Raises:
        ConfigError: on invalid inputs or if no query is known.
    """
    return _mean_average_precision(
        _known_matches(_rank(scores, query_labels, gallery_labels, valid))
    )


def mean_inverse_negative_penalty(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    valid: npt.ArrayLike | None = None,
) -> float:
    """mINP (Ye et al., 2021): mean over known queries of ``|G_q| / R_hard``.

    ``|G_q|`` is the number of same-identity gallery items and ``R_hard`` the rank of the last one.

    Raises:
        ConfigError: on invalid inputs or if no query is known.
    """
    matches = _known_matches(_rank(scores, query_labels, gallery_labels, valid))
    return _mean_inverse_negative_penalty(matches)


def _check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float if it is a real number other than NaN."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
        raise ConfigError(f"threshold must be a number, got {threshold!r}")
    if math.isnan(threshold):
        raise ConfigError("threshold is NaN; pass a score threshold such as 0.5")
    return float(threshold)


def _predictions(ranking: _Ranking, threshold: float) -> IntArray:
    """(Q,) predicted identity codes: the top-1 identity, or ``_PREDICTED_NEW`` below threshold."""
    accepted = ranking.top1_score >= _check_threshold(threshold)
    return np.where(accepted, ranking.gallery_codes[ranking.top1_index], _PREDICTED_NEW)


def _balanced_mean(correct: BoolArray, groups: IntArray) -> float:
    """Mean over groups of the per-group fraction of ``correct``."""
    _, group_index = np.unique(groups, return_inverse=True)
    per_group = np.bincount(group_index, weights=correct) / np.bincount(group_index)
    return float(np.mean(per_group))


def _require(selected: BoolArray, what: str, metric: str) -> None:
    """Raise ConfigError if ``selected`` has no True entry."""
    if not selected.any():
        raise ConfigError(f"{metric} needs at least one {what} query, but there are none")


def _baks(ranking: _Ranking, threshold: float) -> float:
    known = ranking.known
    _require(known, "known (identity in the gallery)", "BAKS")
    correct = _predictions(ranking, threshold) == ranking.query_codes
    return _balanced_mean(correct[known], ranking.query_codes[known])


def _baus(ranking: _Ranking, threshold: float) -> float:
    new = ~ranking.known
    _require(new, "new (identity not in the gallery)", "BAUS")
    correct = _predictions(ranking, threshold) == _PREDICTED_NEW
    codes = ranking.query_codes
    # Each "unknown" query is its own group; negative ids never collide with identity codes >= 0.
    groups = np.where(codes == _QUERY_UNKNOWN, -1 - np.arange(codes.size), codes)
    return _balanced_mean(correct[new], groups[new])


def baks(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    threshold: float,
    valid: npt.ArrayLike | None = None,
) -> float:
    """Balanced accuracy on known samples (BAKS, as in wildlife-tools).

    Mean over known identities of the fraction of their queries whose prediction is their own
    identity (top-1 identity with top-1 score ``>= threshold``).

    Raises:
        ConfigError: on invalid inputs, a NaN threshold, or if no query is known.
    """
    return _baks(_rank(scores, query_labels, gallery_labels, valid), threshold)


def baus(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    threshold: float,
    valid: npt.ArrayLike | None = None,
) -> float:
    """Balanced accuracy on unknown samples (BAUS, as in wildlife-tools).

    Mean over new identities of the fraction of their queries predicted "new individual" (top-1
    score ``< threshold``). Each query labelled ``"unknown"`` is a group of its own.

    Raises:
        ConfigError: on invalid inputs, a NaN threshold, or if no query is new.
    """
    return _baus(_rank(scores, query_labels, gallery_labels, valid), threshold)


def open_set_sweep(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    thresholds: npt.ArrayLike,
    valid: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """BAKS and BAUS at each of many thresholds, from one ranking.

    Shapes:
        thresholds: (T,). return: BAKS (T,) and BAUS (T,).

    Raises:
        ConfigError: on invalid inputs, a NaN threshold, or unless there are both known and new
            queries.
    """
    ranking = _rank(scores, query_labels, gallery_labels, valid)
    values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    baks_values = np.array([_baks(ranking, float(t)) for t in values])
    baus_values = np.array([_baus(ranking, float(t)) for t in values])
    return baks_values, baus_values


def _new_detection(ranking: _Ranking) -> tuple[BoolArray, FloatArray]:
    """(is_new, new_score = -top-1 score); raises ConfigError unless both kinds of query exist."""
    is_new = ~ranking.known
    n_new = int(np.count_nonzero(is_new))
    if n_new in (0, is_new.size):
        raise ConfigError(
            "new-individual detection needs both known and new queries, got "
            f"{is_new.size - n_new} known and {n_new} new; add queries of both kinds"
        )
    return is_new, -ranking.top1_score


def _new_auroc(ranking: _Ranking) -> float:
    is_new, new_score = _new_detection(ranking)
    return float(roc_auc_score(is_new, new_score))


def _operating_point(ranking: _Ranking, fpr: float) -> tuple[float, float]:
    """(TPR, ROC threshold on the new-score) of the best point with FPR <= ``fpr``."""
    if isinstance(fpr, bool) or not isinstance(fpr, int | float | np.number) or not 0 < fpr <= 1:
        raise ConfigError(f"fpr must be a number in (0, 1], got {fpr!r}")
    is_new, new_score = _new_detection(ranking)
    fprs, tprs, thresholds = roc_curve(is_new, new_score, drop_intermediate=False)
    allowed = np.flatnonzero(fprs <= fpr)  # never empty: the first point has FPR 0
    best = allowed[np.argmax(tprs[allowed])]
    return float(tprs[best]), float(thresholds[best])


def new_individual_auroc(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    valid: npt.ArrayLike | None = None,
) -> float:
    """AUROC of telling new from known queries, scoring "new" by the negated top-1 score.

    Raises:
        ConfigError: on invalid inputs or unless there are both known and new queries.
    """
    return _new_auroc(_rank(scores, query_labels, gallery_labels, valid))


def tpr_at_fpr(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    fpr: float,
    valid: npt.ArrayLike | None = None,
) -> float:
    """TPR of new-individual detection at the best threshold whose FPR is at most ``fpr``.

    TPR is the fraction of new queries called new, FPR the fraction of known queries called new.
    No interpolation: the result is the largest TPR among ROC points with FPR ``<= fpr``.

    Raises:
        ConfigError: on invalid inputs, ``fpr`` outside (0, 1], or unless there are both known
            and new queries.
    """
    return _operating_point(_rank(scores, query_labels, gallery_labels, valid), fpr)[0]


def threshold_at_fpr(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    fpr: float,
    valid: npt.ArrayLike | None = None,
) -> float:
    """Smallest score threshold that realises the operating point of :func:`tpr_at_fpr`.

    With it, queries with top-1 score ``< threshold`` are called new; use it for :func:`baks`
    and :func:`baus`. Returns ``-inf`` when the point calls no query new.

    Raises:
        ConfigError: as for :func:`tpr_at_fpr`.
    """
    _, roc_threshold = _operating_point(_rank(scores, query_labels, gallery_labels, valid), fpr)
    if math.isinf(roc_threshold):
        return -math.inf
    # roc_curve calls a query new when -top1 >= t, i.e. top1 <= -t; here new means top1 < thr.
    return float(np.nextafter(-roc_threshold, math.inf))


def summarize(
    scores: npt.ArrayLike,
    query_labels: Labels,
    gallery_labels: Labels,
    *,
    ks: Iterable[int] = (1, 5, 10),
    threshold: float | None = None,
    valid: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Compute the usual metrics from one ranking.

    Keys: ``top{k}`` for each ``k`` in ``ks``, ``mAP``, ``mINP``; ``BAKS`` when ``threshold`` is
    given; ``BAUS`` when ``threshold`` is given and some query is new; ``new_auroc`` when some
    query is new; and the counts ``n_queries``, ``n_known_queries``, ``n_new_queries``,
    ``n_gallery``.

    Raises:
        ConfigError: on invalid inputs, a ``k < 1``, or if no query is known.
    """
    ranking = _rank(scores, query_labels, gallery_labels, valid)
    matches = _known_matches(ranking)
    summary = {f"top{k}": _top_k(matches, k) for k in ks}
    summary["mAP"] = _mean_average_precision(matches)
    summary["mINP"] = _mean_inverse_negative_penalty(matches)
    n_queries, n_known = ranking.matches.shape[0], matches.shape[0]
    if threshold is not None:
        summary["BAKS"] = _baks(ranking, threshold)
        if n_known < n_queries:
            summary["BAUS"] = _baus(ranking, threshold)
    if n_known < n_queries:
        summary["new_auroc"] = _new_auroc(ranking)
    summary["n_queries"] = n_queries
    summary["n_known_queries"] = n_known
    summary["n_new_queries"] = n_queries - n_known
    summary["n_gallery"] = ranking.matches.shape[1]
    return summary
