"""Fusion of calibrated pair probabilities over a shortlist.

Inputs are plain arrays so any re-ranker can call this in a few lines: for each query, the
global cosine similarity of every shortlisted gallery image, and the local pair score (matches,
inliers) of those the local matcher scored, NaN or ``-inf`` where it did not. Each score is
turned into P(same individual) by its own calibrator
(:mod:`wildreid.matching.calibration`), then the probabilities available for a pair are
combined: their mean by default, or a weighted mean with weights fitted on calibration pairs
(:func:`fit_fusion_weights`). A pair no source scored stays NaN.

The mean of two calibrated probabilities is itself not calibrated: a decisive local probability
averaged with a near-zero global one lands near 0.4 for pairs that are almost always the same
animal. An optional ``recalibrator`` (a strictly increasing calibrator fitted on the fused
probabilities of calibration pairs, see
:func:`wildreid.evaluation.openset.fuse_policy`) maps the fused value to an honest P(same);
being strictly increasing, it changes no ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from wildreid.errors import ConfigError
from wildreid.matching.calibration import Calibrator, check_pair_scores

__all__ = ["fit_fusion_weights", "fuse_probabilities", "fuse_scores", "fuse_shortlist"]

FloatArray = npt.NDArray[np.float64]


def _check_weights(weights: Sequence[float] | None, n: int) -> FloatArray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(
            f"fusion weights must be {n} finite non-negative numbers with a positive sum, got "
            f"{list(np.atleast_1d(w))}"
        )
    normalised: FloatArray = w / w.sum()
    return normalised


def fuse_probabilities(
    probabilities: Sequence[npt.ArrayLike], *, weights: Sequence[float] | None = None
) -> FloatArray:
    """Weighted mean of the probabilities available per pair (NaN = not scored).

    Args:
        probabilities: one array per score source, all of one shape.
        weights: one per source (normalised over the sources present at each pair); equal
            weights by default.

    Shapes:
        each probability array: (Q, K); return: (Q, K), NaN where no source scored the pair.

    Raises:
        ConfigError: no source, shapes differ, or invalid weights.
    """
    if not probabilities:
        raise ConfigError("fusion needs at least one probability array")
    arrays = [np.asarray(p, dtype=np.float64) for p in probabilities]
    if len({a.shape for a in arrays}) != 1:
        raise ConfigError(f"fusion inputs must share one shape, got {[a.shape for a in arrays]}")
    stack = np.stack(arrays)
    w = _check_weights(weights, stack.shape[0]).reshape((-1,) + (1,) * (stack.ndim - 1))
    present = ~np.isnan(stack)
    total = np.sum(np.where(present, w, 0.0), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fused: FloatArray = np.sum(np.where(present, w * stack, 0.0), axis=0) / total
    return np.where(total > 0, fused, np.nan)


def _calibrated(scores: npt.ArrayLike, calibrator: Calibrator) -> FloatArray:
    """Probabilities, NaN where the score is NaN or ``-inf`` (not scored)."""
    s = np.asarray(scores, dtype=np.float64)
    missing = np.isnan(s) | np.isneginf(s)
    return np.where(missing, np.nan, calibrator.probability(np.where(missing, 0.0, s)))


def fuse_scores(
    global_scores: npt.ArrayLike,
    local_scores: npt.ArrayLike,
    *,
    global_calibrator: Calibrator,
    local_calibrator: Calibrator,
    weights: Sequence[float] | None = None,
    recalibrator: Calibrator | None = None,
) -> FloatArray:
    """Calibrate global and local shortlist scores and fuse them per pair.

    Args:
        global_scores: cosine similarities of the shortlisted pairs; ``-inf`` marks a pair
            excluded from comparison, which stays ``-inf``.
        local_scores: local pair scores; NaN or ``-inf`` where the pair was not scored (then
            the global probability alone decides).
        weights: (global, local) weights; equal by default.
        recalibrator: applied to the fused probability (module docstring); none by default.

    Shapes:
        global_scores, local_scores: (Q, K). return: (Q, K) probabilities, ``-inf`` where the
        global score was ``-inf``.

    Raises:
        ConfigError: shapes differ, a global score is NaN, or invalid weights.
    """
    g = np.asarray(global_scores, dtype=np.float64)
    local = np.asarray(local_scores, dtype=np.float64)
    if g.shape != local.shape:
        raise ConfigError(
            f"global scores {g.shape} and local scores {local.shape} must cover the same pairs"
        )
    if np.isnan(g).any():
        row, column = np.argwhere(np.isnan(g))[0]
        raise ConfigError(f"global score of shortlist pair (query {row}, item {column}) is NaN")
    excluded = np.isneginf(g)
    fused = fuse_probabilities(
        [
            _calibrated(np.where(excluded, np.nan, g), global_calibrator),
            _calibrated(np.where(excluded, np.nan, local), local_calibrator),
        ],
        weights=weights,
    )
    if recalibrator is not None:
        fused = _calibrated(fused, recalibrator)
    return np.where(excluded, -np.inf, fused)


def fit_fusion_weights(
    probabilities: Sequence[npt.ArrayLike], same: npt.ArrayLike
) -> tuple[float, ...]:
    """Non-negative weights (sum 1) for :func:`fuse_probabilities`, fitted on calibration pairs.

    A logistic regression of ``same`` on the sources' probabilities over the pairs every source
    scored; negative coefficients become 0 (a source that does not help gets no say), and all
    zero falls back to equal weights.

    Shapes:
        each probability array: (P,). same: (P,) bool.

    Raises:
        DataError: too few positive or negative pairs scored by every source.
    """
    from sklearn.linear_model import LogisticRegression

    stack = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities], axis=1)
    labels = np.asarray(same, dtype=np.bool_)
    complete = ~np.isnan(stack).any(axis=1)
    check_pair_scores(stack[complete].sum(axis=1), labels[complete])
    model = LogisticRegression(max_iter=1000).fit(stack[complete], labels[complete])
    coef = np.clip(model.coef_[0], 0.0, None)
    if coef.sum() <= 0:
        return tuple(1.0 / stack.shape[1] for _ in range(stack.shape[1]))
    return tuple(float(c) for c in coef / coef.sum())


def fuse_shortlist(
    global_scores: npt.ArrayLike,
    shortlist: npt.NDArray[np.intp],
    local_scores: npt.ArrayLike,
    *,
    global_calibrator: Calibrator,
    local_calibrator: Calibrator,
    weights: Sequence[float] | None = None,
    recalibrator: Calibrator | None = None,
) -> FloatArray:
    """P(same individual) for every pair: fused where the shortlist was matched locally, the
    calibrated global score alone elsewhere.

    Args:
        global_scores: cosine similarities; ``-inf`` marks excluded pairs (kept ``-inf``).
        shortlist: the gallery column of each shortlisted candidate, ``-1`` for none.
        local_scores: the local score of each shortlisted candidate; NaN where not scored.

    Shapes:
        global_scores: (Q, G). shortlist, local_scores: (Q, K). return: (Q, G).

    Raises:
        ConfigError: as :func:`fuse_scores`, or shortlist and local scores of other shapes.
    """
    g = np.asarray(global_scores, dtype=np.float64)
    local_k = np.asarray(local_scores, dtype=np.float64)
    if shortlist.shape != local_k.shape or shortlist.shape[0] != g.shape[0]:
        raise ConfigError(
            f"shortlist {shortlist.shape} and local scores {local_k.shape} must be (Q, K) with "
            f"Q = {g.shape[0]}"
        )
    local = np.full(g.shape, np.nan)
    rows, slots = np.nonzero(shortlist >= 0)
    local[rows, shortlist[rows, slots]] = local_k[rows, slots]
    return fuse_scores(
        g,
        local,
        global_calibrator=global_calibrator,
        local_calibrator=local_calibrator,
        weights=weights,
        recalibrator=recalibrator,
    )
