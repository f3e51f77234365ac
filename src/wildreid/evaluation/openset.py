"""Honest open-set decisions: calibration and thresholds fitted on the gallery side only.

The queries being evaluated never choose their own threshold. :func:`carve_calibration` splits
the *gallery* (or training) images into calibration queries and a calibration gallery:

- a share ``new_fraction`` of the named identities become *pseudo-new*: all their images are
  calibration queries, so the calibration gallery lacks them;
- of every other identity with at least two groups, about ``query_fraction`` of its groups
  (at least one, never all) become calibration queries; an identity with one group stays in
  the calibration gallery;
- a group (clip, encounter; by default every image is its own group) is never split, so
  near-duplicate photos are never paired across the two sides, and no image is paired with
  itself; images of identity ``"unknown"`` take no part.

:func:`fit_open_set_policy` fits a :class:`~wildreid.matching.calibration.Calibrator` on every
calibration query x calibration gallery pair (P(same individual) from the cosine score), then
chooses the threshold on the calibrated top-1 probability of the calibration queries for a
stated target: ``"open_score"`` maximises the geometric mean of BAKS and BAUS, ``"false_new"``
calls the most queries new while at most ``max_false_new`` of the known ones are. An optional
review band of half-width ``review_margin`` (probability units) around the threshold sends the
uncertain queries to a person (see :func:`wildreid.matching.identification.decide`).

The resulting :class:`OpenSetPolicy` is saved as ``calibration.json`` beside a run and reloaded
for the same embedding space only.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from wildreid.errors import ConfigError, DataError
from wildreid.evaluation.metrics import UNKNOWN_LABEL, open_set_sweep, threshold_at_fpr
from wildreid.matching.calibration import (
    MIN_PAIRS,
    Calibrator,
    ScoreCalibration,
    calibrator_from_dict,
    expected_calibration_error,
    fit_calibrator,
    load_calibration,
)
from wildreid.matching.fusion import fuse_scores, fuse_shortlist
from wildreid.matching.identification import decide_scores
from wildreid.matching.rerank import Reranker
from wildreid.types import EmbeddingSpace, LocalFeatures

__all__ = [
    "FUSION_CALIBRATION_QUERIES",
    "GLOBAL_MATCHER",
    "TARGETS",
    "OpenSetPolicy",
    "Target",
    "carve_calibration",
    "choose_threshold",
    "decision_metrics",
    "fit_local_fusion",
    "fit_open_set_policy",
    "fuse_policy",
    "load_policy",
]

logger = logging.getLogger(__name__)

Target = Literal["open_score", "false_new"]
TARGETS: tuple[Target, ...] = ("open_score", "false_new")
GLOBAL_MATCHER: Final = "global-cosine"
_MAX_PAIRS: Final = 2_000_000


def carve_calibration(
    labels: Sequence[str],
    groups: Sequence[str] | None = None,
    *,
    new_fraction: float = 0.2,
    query_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Calibration queries and calibration gallery among gallery images (module docstring).

    Shapes:
        labels, groups: (G,). return: two (G,) disjoint boolean masks.

    Raises:
        ConfigError: fractions outside (0, 1), or ``groups`` of another length.
    """
    if not 0 < new_fraction < 1 or not 0 < query_fraction < 1:
        raise ConfigError(
            f"new_fraction and query_fraction must be in (0, 1), got {new_fraction} and "
            f"{query_fraction}"
        )
    n = len(labels)
    if groups is None:
        groups = [str(i) for i in range(n)]
    if len(groups) != n:
        raise ConfigError(f"{len(groups)} groups for {n} calibration images")
    rng = np.random.default_rng(seed)
    by_identity: dict[str, dict[str, list[int]]] = {}
    for i, (label, group) in enumerate(zip(labels, groups, strict=True)):
        if label != UNKNOWN_LABEL:
            by_identity.setdefault(label, {}).setdefault(group, []).append(i)
    identities = sorted(by_identity)
    order = rng.permutation(len(identities))
    n_new = max(1, round(new_fraction * len(identities))) if len(identities) > 1 else 0
    new = {identities[i] for i in order[:n_new]}
    query = np.zeros(n, dtype=np.bool_)
    gallery = np.zeros(n, dtype=np.bool_)
    for identity in identities:
        members = by_identity[identity]
        names = sorted(members)
        if identity in new:
            chosen = set(names)
        elif len(names) < 2:
            chosen = set()
        else:
            count = min(len(names) - 1, max(1, round(query_fraction * len(names))))
            chosen = {names[i] for i in rng.permutation(len(names))[:count]}
        for name in names:
            (query if name in chosen else gallery)[members[name]] = True
    return query, gallery


@dataclass(frozen=True)
class OpenSetPolicy:
    """Calibrated scores and the known / new / review thresholds chosen on calibration data.

    Attributes:
        calibration: the score calibrator with its space and matcher; ``extra`` holds the
            policy fields and the calibration-data metrics.
        threshold: on P(same individual) of the top candidate; ``>= threshold`` is known.
        review_margin: half-width of the review band (0: no review).
        target: what the threshold was chosen for.
        max_false_new: the false-new limit of target ``"false_new"``.
    """

    calibration: ScoreCalibration
    threshold: float
    review_margin: float
    target: str
    max_false_new: float

    def probability(self, scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Calibrated probabilities; ``-inf`` (excluded pairs) stays ``-inf``."""
        s = np.asarray(scores, dtype=np.float64)
        p = self.calibration.calibrator.probability(np.where(np.isneginf(s), 0.0, s))
        return np.where(np.isneginf(s), -np.inf, p)

    @property
    def local_calibrator(self) -> Calibrator | None:
        """The local matcher's calibrator of a fused policy (:func:`fuse_policy`), else None."""
        state = self.calibration.extra.get("local_calibrator")
        return calibrator_from_dict(state) if isinstance(state, dict) else None

    @property
    def fused_calibrator(self) -> Calibrator | None:
        """The recalibration of the fused mean (:func:`fuse_policy`); None for a global policy
        or a fused policy saved before recalibration existed (then the mean is used as is)."""
        state = self.calibration.extra.get("fused_calibrator")
        return calibrator_from_dict(state) if isinstance(state, dict) else None

    def fuse(self, global_scores: npt.ArrayLike, local_scores: npt.ArrayLike) -> npt.NDArray[Any]:
        """Fused, recalibrated P(same) of pairs with global and local scores (local NaN: not
        matched); ``-inf`` global scores stay ``-inf``.

        Shapes:
            global_scores, local_scores: (Q, K).

        Raises:
            ConfigError: not a fused policy.
        """
        local = self._required_local_calibrator()
        return fuse_scores(
            global_scores,
            local_scores,
            global_calibrator=self.calibration.calibrator,
            local_calibrator=local,
            recalibrator=self.fused_calibrator,
        )

    def _required_local_calibrator(self) -> Calibrator:
        """The local calibrator of a fused policy.

        Raises:
            ConfigError: not a fused policy.
        """
        local = self.local_calibrator  # a property that rebuilds the calibrator: read once
        if local is None:
            raise ConfigError("this calibration has no local matcher; fit a fused policy first")
        return local

    def fuse_shortlist(
        self,
        global_scores: npt.ArrayLike,
        shortlist: npt.NDArray[np.intp],
        local_scores: npt.ArrayLike,
    ) -> npt.NDArray[Any]:
        """(Q, G) fused, recalibrated P(same) from (Q, G) global scores and a (Q, K) locally
        matched shortlist (:func:`~wildreid.matching.fusion.fuse_shortlist`).

        Raises:
            ConfigError: not a fused policy.
        """
        local = self._required_local_calibrator()
        return fuse_shortlist(
            global_scores,
            shortlist,
            local_scores,
            global_calibrator=self.calibration.calibrator,
            local_calibrator=local,
            recalibrator=self.fused_calibrator,
        )

    def decisions(self, top_probability: npt.ArrayLike) -> npt.NDArray[np.str_]:
        """``known`` / ``new`` / ``review`` for each top-candidate probability."""
        return decide_scores(
            top_probability, threshold=self.threshold, review_margin=self.review_margin
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the policy as one calibration JSON file."""
        self.calibration.save(path)


def load_policy(path: str | os.PathLike[str], *, space: EmbeddingSpace | None) -> OpenSetPolicy:
    """Read a saved policy, refusing one fitted for another embedding space.

    Raises:
        DataError: unreadable, or a calibration file without a policy.
        EmbeddingSpaceError: fitted for another space or matcher.
    """
    calibration = load_calibration(path, matcher=GLOBAL_MATCHER, space=space)
    extra = calibration.extra
    try:
        return OpenSetPolicy(
            calibration=calibration,
            threshold=float(extra["threshold"]),
            review_margin=float(extra["review_margin"]),
            target=str(extra["target"]),
            max_false_new=float(extra["max_false_new"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"calibration {path} holds no open-set policy ({exc})") from exc


def _best_open_score(
    probability: npt.NDArray[np.float64],
    query_labels: Sequence[str],
    gallery_labels: Sequence[str],
) -> tuple[float, dict[str, float]]:
    """Threshold maximising sqrt(BAKS * BAUS) on calibration queries, and its metrics."""
    top1 = np.sort(np.unique(probability.max(axis=1)))
    # Accepting everything at or above each candidate, plus calling everything new.
    candidates = np.append(top1, np.nextafter(top1[-1], math.inf))
    baks, baus = open_set_sweep(probability, query_labels, gallery_labels, thresholds=candidates)
    score = np.sqrt(baks * baus)
    best = int(np.argmax(score))
    # Midway to the next lower top-1 value: the same decisions on the calibration data.
    lower = top1[best - 1] if best > 0 else candidates[best] - 1e-3
    threshold = float((candidates[best] + lower) / 2)
    return threshold, {
        "BAKS": float(baks[best]),
        "BAUS": float(baus[best]),
        "open_score": float(score[best]),
    }


def choose_threshold(
    probability: npt.NDArray[np.float64],
    query_labels: Sequence[str],
    gallery_labels: Sequence[str],
    *,
    target: str,
    max_false_new: float,
) -> tuple[float, dict[str, float]]:
    """The threshold on P(same) of the top candidate for ``target``, chosen on calibration
    queries x calibration gallery probabilities, and its BAKS / BAUS / open score there.

    Shapes:
        probability: (Qc, Gc); ``-inf`` marks pairs not compared.
    """
    if target == "open_score":
        return _best_open_score(probability, query_labels, gallery_labels)
    threshold = threshold_at_fpr(probability, query_labels, gallery_labels, fpr=max_false_new)
    threshold = 0.0 if math.isinf(threshold) else threshold
    baks, baus = open_set_sweep(probability, query_labels, gallery_labels, thresholds=[threshold])
    return threshold, {
        "BAKS": float(baks[0]),
        "BAUS": float(baus[0]),
        "open_score": float(np.sqrt(baks[0] * baus[0])),
    }


def fit_open_set_policy(
    scores: npt.NDArray[np.floating],
    labels: Sequence[str],
    *,
    space: EmbeddingSpace | None,
    groups: Sequence[str] | None = None,
    kind: str = "isotonic",
    target: str = "open_score",
    max_false_new: float = 0.05,
    review_margin: float = 0.0,
    new_fraction: float = 0.2,
    query_fraction: float = 0.5,
    min_pairs: int = MIN_PAIRS,
    seed: int = 0,
) -> OpenSetPolicy:
    """Fit the calibrator and choose the thresholds on a carve of the gallery side.

    Args:
        scores: cosine similarities among the gallery images (the diagonal is never used).
        labels: identity of each gallery image. groups: near-duplicate group of each.
        kind: ``isotonic`` or ``logistic``. target, max_false_new, review_margin: see the
            module docstring.

    Shapes:
        scores: (G, G). labels, groups: (G,).

    Raises:
        ConfigError: invalid options, or a calibration carve without known and new queries.
        DataError: too few positive or negative pairs, or a NaN / infinite pair score.
    """
    if target not in TARGETS:
        raise ConfigError(f"open-set target {target!r} not in {TARGETS}")
    if not 0 < max_false_new < 1:
        raise ConfigError(f"max_false_new must be in (0, 1), got {max_false_new}")
    if not 0 <= review_margin < 0.5:
        raise ConfigError(f"review_margin must be in [0, 0.5), got {review_margin}")
    labels_array = np.asarray(labels, dtype=object)
    query, gallery = carve_calibration(
        labels, groups, new_fraction=new_fraction, query_fraction=query_fraction, seed=seed
    )
    q_index, g_index = np.flatnonzero(query), np.flatnonzero(gallery)
    if q_index.size == 0 or g_index.size == 0:
        raise ConfigError(
            "the calibration carve left no calibration query or gallery image; the gallery "
            "needs several identities"
        )
    block = np.asarray(scores, dtype=np.float64)[np.ix_(q_index, g_index)]
    same = labels_array[q_index][:, None] == labels_array[g_index][None, :]
    flat_scores, flat_same = block.ravel(), same.ravel()
    if flat_scores.size > _MAX_PAIRS:
        keep = np.random.default_rng(seed).choice(flat_scores.size, _MAX_PAIRS, replace=False)
        flat_scores, flat_same = flat_scores[keep], flat_same[keep]
    bad = np.argwhere(~np.isfinite(block))
    if bad.size:
        i, j = bad[0]
        raise DataError(
            f"calibration pair score of gallery rows {q_index[i]} ~ {g_index[j]} is "
            f"{block[i, j]}; every gallery pair score must be finite"
        )
    calibrator = fit_calibrator(kind, flat_scores, flat_same, min_pairs=min_pairs)
    q_labels = [str(v) for v in labels_array[q_index]]
    g_labels = [str(v) for v in labels_array[g_index]]
    probability = calibrator.probability(block)
    threshold, facts = choose_threshold(
        probability, q_labels, g_labels, target=target, max_false_new=max_false_new
    )
    extra: dict[str, Any] = {
        "threshold": threshold,
        "review_margin": review_margin,
        "target": target,
        "max_false_new": max_false_new,
        "carve": {"new_fraction": new_fraction, "query_fraction": query_fraction, "seed": seed},
        "calibration_queries": int(q_index.size),
        "calibration_gallery": int(g_index.size),
        "positive_pairs": int(np.count_nonzero(flat_same)),
        "negative_pairs": int(flat_same.size - np.count_nonzero(flat_same)),
        "calibration_ECE": expected_calibration_error(
            calibrator.probability(flat_scores), flat_same
        ),
        **{f"calibration_{key}": value for key, value in facts.items()},
    }
    logger.info(
        "open-set policy: %s calibration on %d pairs, threshold %.4f (calibration open score %.3f)",
        kind,
        flat_same.size,
        threshold,
        facts["open_score"],
    )
    return OpenSetPolicy(
        calibration=ScoreCalibration(calibrator, GLOBAL_MATCHER, space, extra),
        threshold=threshold,
        review_margin=review_margin,
        target=target,
        max_false_new=max_false_new,
    )


def fuse_policy(
    policy: OpenSetPolicy,
    global_scores: npt.NDArray[np.floating],
    shortlist: npt.NDArray[np.intp],
    local_scores: npt.NDArray[np.floating],
    query_labels: Sequence[str],
    gallery_labels: Sequence[str],
    *,
    matcher: str,
    kind: str = "isotonic",
    min_pairs: int = MIN_PAIRS,
    seed: int = 0,
) -> tuple[OpenSetPolicy, Calibrator]:
    """Calibrate a local matcher's scores, recalibrate the fused probability and re-choose the
    threshold on it.

    The inputs are the calibration queries x calibration gallery of the policy's carve (never
    the evaluated queries): their global scores, the shortlist the re-ranker matched and the
    local score of each shortlisted pair. The local calibrator is fitted on the shortlisted
    pairs. The mean of the calibrated global and local probabilities (the global one alone
    outside the shortlist) is under-confident, so one more calibrator of ``kind`` (strictly
    increasing: no ranking changes) is fitted on the fused mean of every calibration pair and
    maps it to an honest P(same) (``fused_calibrator`` in the saved calibration; the
    calibration pairs' ECE before and after it is recorded as ``fused_mean_calibration_ECE`` /
    ``fused_calibration_ECE``). The threshold for the policy's target is chosen on the
    recalibrated fused probability.

    Shapes:
        global_scores: (Qc, Gc). shortlist, local_scores: (Qc, K).

    Raises:
        DataError: too few positive or negative shortlisted or calibration pairs (counts named).
    """
    gallery = np.asarray(gallery_labels, dtype=object)
    queries = np.asarray(query_labels, dtype=object)
    scored = (shortlist >= 0) & np.isfinite(local_scores)
    same = (gallery[np.maximum(shortlist, 0)] == queries[:, None]) & (queries != UNKNOWN_LABEL)[
        :, None
    ]
    local = fit_calibrator(kind, local_scores[scored], same[scored], min_pairs=min_pairs)
    mean = fuse_shortlist(
        global_scores,
        shortlist,
        local_scores,
        global_calibrator=policy.calibration.calibrator,
        local_calibrator=local,
    )
    all_same = (queries[:, None] == gallery[None, :]) & (queries != UNKNOWN_LABEL)[:, None]
    usable = np.isfinite(mean)
    flat_mean, flat_same = mean[usable], all_same[usable]
    if flat_mean.size > _MAX_PAIRS:
        keep = np.random.default_rng(seed).choice(flat_mean.size, _MAX_PAIRS, replace=False)
        flat_mean, flat_same = flat_mean[keep], flat_same[keep]
    recalibrator = fit_calibrator(kind, flat_mean, flat_same, min_pairs=min_pairs)
    fused = np.where(usable, recalibrator.probability(np.where(usable, mean, 0.0)), mean)
    threshold, facts = choose_threshold(
        fused,
        list(query_labels),
        list(gallery_labels),
        target=policy.target,
        max_false_new=policy.max_false_new,
    )
    extra = {
        **policy.calibration.extra,
        "threshold": threshold,
        "global_threshold": policy.threshold,
        "fusion": "mean of calibrated global and local probabilities, recalibrated",
        "local_matcher": matcher,
        "local_calibrator": local.to_dict(),
        "fused_calibrator": recalibrator.to_dict(),
        "local_positive_pairs": int(np.count_nonzero(same[scored])),
        "local_negative_pairs": int(np.count_nonzero(~same[scored])),
        "fused_mean_calibration_ECE": expected_calibration_error(flat_mean, flat_same),
        "fused_calibration_ECE": expected_calibration_error(
            recalibrator.probability(flat_mean), flat_same
        ),
        **{f"fused_calibration_{key}": value for key, value in facts.items()},
    }
    calibration = ScoreCalibration(
        policy.calibration.calibrator, policy.calibration.matcher, policy.calibration.space, extra
    )
    fused_policy = OpenSetPolicy(
        calibration=calibration,
        threshold=threshold,
        review_margin=policy.review_margin,
        target=policy.target,
        max_false_new=policy.max_false_new,
    )
    return fused_policy, local


FUSION_CALIBRATION_QUERIES: Final = 200
"""At most this many calibration queries (a fixed random sample) are matched locally to
calibrate a local score for fusion: enough positive pairs for the calibrator, at a bounded cost
(about 4,000 LightGlue pairs with a shortlist of 20)."""


def fit_local_fusion(
    policy: OpenSetPolicy,
    scores: npt.NDArray[np.floating],
    labels: Sequence[str],
    groups: Sequence[str] | None,
    reranker: Reranker,
    features: Sequence[LocalFeatures | None],
    image_ids: Sequence[str],
    *,
    max_queries: int = FUSION_CALIBRATION_QUERIES,
) -> tuple[OpenSetPolicy, Calibrator, dict[str, int]]:
    """Match the policy's gallery-side carve locally and fuse (:func:`fuse_policy`).

    The calibration queries of the policy's carve (at most ``max_queries``, a fixed sample) are
    re-ranked against the calibration gallery as evaluated queries would be; the local scores
    get their own calibrator and the threshold is chosen again on the fused probability.

    Args:
        scores: cosine similarities between the gallery images the policy was fitted on.
        labels, groups: of those images, as given to :func:`fit_open_set_policy`.
        reranker: the re-ranking whose local scores are calibrated.
        features: each image's local features (``None``: missing), in ``scores``' order.
        image_ids: each image's id, for messages.

    Shapes:
        scores: (G, G). labels, groups, features, image_ids: (G,).

    Returns:
        The fused policy, the local calibrator, and ``calibration_queries_matched`` /
        ``calibration_pairs_matched``.

    Raises:
        ConfigError: an image of the carve has no local features.
        DataError: too few positive or negative matched pairs (counts named).
    """
    carve = policy.calibration.extra.get("carve", {})
    query, gallery = carve_calibration(labels, groups, **carve)
    q_index, g_index = np.flatnonzero(query), np.flatnonzero(gallery)
    if len(q_index) > max_queries:
        q_index = np.sort(np.random.default_rng(0).choice(q_index, max_queries, replace=False))
    chosen: dict[int, LocalFeatures] = {}
    for i in (*q_index.tolist(), *g_index.tolist()):
        found = features[i]
        if found is None:
            raise ConfigError(f"no local features for image {image_ids[i]!r}")
        chosen[i] = found
    block = scores[np.ix_(q_index, g_index)]
    matched = reranker.rerank(
        block, [chosen[i] for i in q_index.tolist()], [chosen[i] for i in g_index.tolist()]
    )
    fused, local = fuse_policy(
        policy,
        block,
        matched.shortlist,
        matched.local,
        [labels[i] for i in q_index.tolist()],
        [labels[i] for i in g_index.tolist()],
        matcher=f"{reranker.config.method}/{reranker.config.score}",
        kind=policy.calibration.calibrator.kind,
    )
    facts = {
        "calibration_queries_matched": len(q_index),
        "calibration_pairs_matched": int(np.count_nonzero(matched.shortlist >= 0)),
    }
    return fused, local, facts


def decision_metrics(
    top_probability: npt.ArrayLike,
    top_correct: npt.ArrayLike,
    known: npt.ArrayLike,
    policy: OpenSetPolicy,
) -> dict[str, float]:
    """Review fraction and accuracy of the automatic (known / new) decisions.

    A ``known`` decision is right when the query is known and its top candidate is its
    identity; a ``new`` decision is right when the query is new.

    Shapes:
        all inputs: (Q,).
    """
    decisions = policy.decisions(top_probability)
    correct = np.asarray(top_correct, dtype=np.bool_)
    is_known = np.asarray(known, dtype=np.bool_)
    automatic = decisions != "review"
    right = np.where(decisions == "known", correct & is_known, ~is_known) & automatic
    n_auto = int(np.count_nonzero(automatic))
    return {
        "n_decided_known": float(np.count_nonzero(decisions == "known")),
        "n_decided_new": float(np.count_nonzero(decisions == "new")),
        "n_review": float(np.count_nonzero(~automatic)),
        "review_fraction": float(1 - n_auto / max(1, decisions.size)),
        "auto_accuracy": float(np.count_nonzero(right) / n_auto) if n_auto else 0.0,
    }
