"""Pair scores to probabilities: P(same individual | score).

A raw score (global cosine similarity, a count of local matches or inliers) is not a
probability: it cannot be shown to a reviewer as "how sure", nor averaged with another score.
A :class:`Calibrator` maps a score to the probability that the two images show the same animal,
fitted on labelled pairs (``same`` True for pairs of one individual):

- :class:`IsotonicCalibrator`: scikit-learn's isotonic regression (monotone, no shape assumed),
  read as a *strictly* increasing curve: linear interpolation between the centres of the pooled
  blocks, plus a ``1e-6`` share of a logistic ramp so that plateaus and the tails still rise.
  Two different scores never get the same probability, so ranks are preserved exactly.
- :class:`LogisticCalibrator`: Platt scaling (scikit-learn's logistic regression on the score),
  strictly increasing when the fitted slope is positive (a negative slope is refused: the score
  would say the opposite of similarity).

:func:`fit_calibrator` checks the pairs first: every score finite (a NaN or infinity is named by
its pair) and at least ``min_pairs`` positive and negative pairs (the message says how many were
found and needed). :class:`ScoreCalibration` ties a fitted calibrator to what it was fitted for
(the embedding space and the matcher, e.g. ``"global-cosine"`` or ``"sift"``) and is saved as
JSON; loading it for another space or matcher is refused, like mixing vectors in an index.

:func:`expected_calibration_error` and :func:`reliability_curve` measure how far probabilities
are from observed frequencies (equal-width bins over [0, 1]).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from wildreid.errors import ConfigError, DataError, EmbeddingSpaceError
from wildreid.files import atomic_path
from wildreid.types import EmbeddingSpace

__all__ = [
    "CALIBRATOR_KINDS",
    "MIN_PAIRS",
    "Calibrator",
    "CalibratorKind",
    "IsotonicCalibrator",
    "LogisticCalibrator",
    "ScoreCalibration",
    "calibrator_from_dict",
    "check_pair_scores",
    "expected_calibration_error",
    "fit_calibrator",
    "load_calibration",
    "reliability_curve",
]

CalibratorKind = Literal["isotonic", "logistic"]
CALIBRATOR_KINDS: tuple[CalibratorKind, ...] = ("isotonic", "logistic")
MIN_PAIRS: Final = 10
"""Fewest positive and fewest negative pairs a calibrator is fitted on by default."""
_RAMP_WEIGHT: Final = 1e-6
_FORMAT: Final = "wildreid.calibration"
_VERSION: Final = 1

FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class Calibrator(Protocol):
    """A fitted, strictly increasing map from pair scores to P(same individual)."""

    @property
    def kind(self) -> str:
        """The calibrator's name (``isotonic``, ``logistic``)."""
        ...

    def probability(self, scores: npt.ArrayLike) -> FloatArray:
        """P(same individual) for every score; NaN stays NaN, -inf gives 0, +inf gives 1."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; :func:`calibrator_from_dict` restores it."""
        ...


def _sigmoid(values: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):
        result: FloatArray = 1.0 / (1.0 + np.exp(-values))
    return result


@dataclass(frozen=True)
class IsotonicCalibrator:
    """Isotonic regression read as a strictly increasing curve (see the module docstring).

    Attributes:
        knots_x: block centres, strictly increasing. knots_y: block probabilities, strictly
            increasing. center, scale: the logistic ramp ``sigmoid((s - center) / scale)``.
    """

    knots_x: tuple[float, ...]
    knots_y: tuple[float, ...]
    center: float
    scale: float

    @property
    def kind(self) -> str:
        return "isotonic"

    @classmethod
    def fit(cls, scores: npt.ArrayLike, same: npt.ArrayLike) -> IsotonicCalibrator:
        """Fit on checked pairs (use :func:`fit_calibrator`, which checks them)."""
        from sklearn.isotonic import IsotonicRegression

        x = np.asarray(scores, dtype=np.float64)
        y = np.asarray(same, dtype=np.float64)
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit_transform(x, y)
        # Pooled blocks share one fitted value; each becomes a knot at its mean score.
        values, block = np.unique(fitted, return_inverse=True)
        centres = np.bincount(block, weights=x) / np.bincount(block)
        scale = float(np.std(x)) or 1.0
        return cls(
            knots_x=tuple(float(v) for v in centres),
            knots_y=tuple(float(v) for v in values),
            center=float(np.mean(x)),
            scale=scale,
        )

    def probability(self, scores: npt.ArrayLike) -> FloatArray:
        s = np.asarray(scores, dtype=np.float64)
        curve = np.interp(s, self.knots_x, self.knots_y)
        ramp = _sigmoid((s - self.center) / self.scale)
        result: FloatArray = (1.0 - _RAMP_WEIGHT) * curve + _RAMP_WEIGHT * ramp
        return np.where(np.isnan(s), np.nan, result)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "knots_x": list(self.knots_x),
            "knots_y": list(self.knots_y),
            "center": self.center,
            "scale": self.scale,
        }


@dataclass(frozen=True)
class LogisticCalibrator:
    """Platt scaling: ``P = sigmoid(slope * score + intercept)`` with ``slope > 0``."""

    slope: float
    intercept: float

    @property
    def kind(self) -> str:
        return "logistic"

    @classmethod
    def fit(cls, scores: npt.ArrayLike, same: npt.ArrayLike) -> LogisticCalibrator:
        """Fit on checked pairs (use :func:`fit_calibrator`, which checks them).

        Raises:
            ConfigError: the fitted slope is not positive (higher scores mean *less* similar).
        """
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(scores, dtype=np.float64)
        center, scale = float(np.mean(x)), float(np.std(x)) or 1.0
        model = LogisticRegression(C=1e6, max_iter=1000)
        model.fit(((x - center) / scale)[:, None], np.asarray(same, dtype=np.bool_))
        slope = float(model.coef_[0, 0]) / scale
        if not slope > 0:
            raise ConfigError(
                "the logistic calibration has a non-positive slope: higher scores are not more "
                "often the same individual; check that the scores are similarities (higher = "
                "more alike) and the pair labels are right"
            )
        intercept = float(model.intercept_[0]) - slope * center
        return cls(slope=slope, intercept=intercept)

    def probability(self, scores: npt.ArrayLike) -> FloatArray:
        s = np.asarray(scores, dtype=np.float64)
        return _sigmoid(self.slope * s + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "slope": self.slope, "intercept": self.intercept}


def calibrator_from_dict(state: dict[str, Any]) -> Calibrator:
    """The calibrator :meth:`Calibrator.to_dict` described.

    Raises:
        ConfigError: an unknown kind or malformed state.
    """
    try:
        kind = state["kind"]
        if kind == "isotonic":
            knots_x = tuple(float(v) for v in state["knots_x"])
            knots_y = tuple(float(v) for v in state["knots_y"])
            if len(knots_x) != len(knots_y) or not knots_x:
                raise ValueError("knots_x and knots_y differ in length or are empty")
            return IsotonicCalibrator(
                knots_x, knots_y, float(state["center"]), float(state["scale"])
            )
        if kind == "logistic":
            return LogisticCalibrator(float(state["slope"]), float(state["intercept"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed calibrator state ({exc})") from exc
    raise ConfigError(f"unknown calibrator kind {kind!r}; use one of {CALIBRATOR_KINDS}")


def check_pair_scores(
    scores: npt.ArrayLike,
    same: npt.ArrayLike,
    *,
    pair_names: Sequence[str] | None = None,
    min_pairs: int = MIN_PAIRS,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Checked calibration pairs as float64 scores and bool labels.

    Args:
        pair_names: one name per pair (e.g. ``"img1 ~ img7"``) for error messages.

    Shapes:
        scores, same: (P,).

    Raises:
        DataError: a NaN or infinite score (its pair named), or fewer than ``min_pairs``
            positive or negative pairs (found and needed counts given).
        ConfigError: mismatched shapes.
    """
    s = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(same)
    if s.ndim != 1 or labels.shape != s.shape:
        raise ConfigError(
            f"calibration scores and labels must be 1-D of equal length, got shapes {s.shape} "
            f"and {labels.shape}"
        )
    if labels.dtype != np.bool_:
        raise ConfigError(f"calibration labels must be booleans (same animal), got {labels.dtype}")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        at = int(bad[0])
        name = pair_names[at] if pair_names is not None else f"pair {at}"
        raise DataError(
            f"calibration score of {name} is {s[at]}; {bad.size} pair score(s) are NaN or "
            "infinite: score every calibration pair, or leave unscored pairs out"
        )
    positives = int(np.count_nonzero(labels))
    negatives = labels.size - positives
    if positives < min_pairs or negatives < min_pairs:
        raise DataError(
            f"calibration needs at least {min_pairs} positive (same individual) and {min_pairs} "
            f"negative pairs, found {positives} positive and {negatives} negative; use a "
            "calibration split with more individuals photographed more than once"
        )
    return s, labels


def fit_calibrator(
    kind: str,
    scores: npt.ArrayLike,
    same: npt.ArrayLike,
    *,
    pair_names: Sequence[str] | None = None,
    min_pairs: int = MIN_PAIRS,
) -> Calibrator:
    """Fit a calibrator of ``kind`` on labelled pairs (checked by :func:`check_pair_scores`).

    Raises:
        ConfigError: an unknown kind, or a logistic fit with a non-positive slope.
        DataError: as :func:`check_pair_scores`.
    """
    if kind not in CALIBRATOR_KINDS:
        raise ConfigError(f"unknown calibrator {kind!r}; use one of {', '.join(CALIBRATOR_KINDS)}")
    s, labels = check_pair_scores(scores, same, pair_names=pair_names, min_pairs=min_pairs)
    if kind == "isotonic":
        return IsotonicCalibrator.fit(s, labels)
    return LogisticCalibrator.fit(s, labels)


def reliability_curve(
    probabilities: npt.ArrayLike, same: npt.ArrayLike, *, bins: int = 10
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Per equal-width bin of [0, 1]: mean probability, observed frequency and pair count.

    Empty bins are NaN (count 0). Probabilities outside [0, 1] are clipped.

    Shapes:
        return: three (bins,) arrays.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(same, dtype=np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=bins) / counts
        frequency = np.bincount(which, weights=y, minlength=bins) / counts
    return mean_p, frequency, counts


def expected_calibration_error(
    probabilities: npt.ArrayLike, same: npt.ArrayLike, *, bins: int = 10
) -> float:
    """ECE: count-weighted mean of |mean probability - observed frequency| over the bins.

    Raises:
        ConfigError: no pairs.
    """
    mean_p, frequency, counts = reliability_curve(probabilities, same, bins=bins)
    total = int(counts.sum())
    if total == 0:
        raise ConfigError("the expected calibration error needs at least one pair")
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(mean_p[filled] - frequency[filled])) / total)


@dataclass(frozen=True)
class ScoreCalibration:
    """A calibrator with what it was fitted for, saved beside a run and reloaded.

    Attributes:
        calibrator: the fitted map.
        matcher: the score it calibrates (``"global-cosine"``, ``"sift"``, ...).
        space: the embedding space the scores came from (None for spaceless matchers).
        extra: JSON-serialisable facts about the fit (pair counts, thresholds, ECE, ...).
    """

    calibrator: Calibrator
    matcher: str
    space: EmbeddingSpace | None
    extra: dict[str, Any]

    def require_compatible(self, *, matcher: str, space: EmbeddingSpace | None, what: str) -> None:
        """Refuse use for another matcher or embedding space.

        Raises:
            EmbeddingSpaceError: naming both matchers or both spaces.
        """
        if matcher != self.matcher:
            raise EmbeddingSpaceError(
                f"{what}: calibrated for matcher {self.matcher!r}, cannot calibrate "
                f"{matcher!r} scores; fit a calibration for that matcher"
            )
        if self.space is not None and space is not None:
            self.space.require_same(space, what=what)
        elif (self.space is None) != (space is None):
            raise EmbeddingSpaceError(
                f"{what}: calibrated for space "
                f"{self.space.describe() if self.space else 'none'}, used with "
                f"{space.describe() if space else 'none'}; fit a calibration for that space"
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically to exactly ``path``.

        Raises:
            ConfigError: ``extra`` holds NaN or infinity.
        """
        document = {
            "format": _FORMAT,
            "version": _VERSION,
            "matcher": self.matcher,
            "space": json.loads(self.space.to_json()) if self.space else None,
            "calibrator": self.calibrator.to_dict(),
            "extra": self.extra,
        }
        try:
            text = json.dumps(document, indent=2, allow_nan=False)
        except ValueError as exc:
            raise ConfigError(f"calibration facts hold NaN or infinity ({exc})") from exc
        with atomic_path(path) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")


def load_calibration(
    path: str | os.PathLike[str],
    *,
    matcher: str | None = None,
    space: EmbeddingSpace | None = None,
) -> ScoreCalibration:
    """Read a :meth:`ScoreCalibration.save` file; with ``matcher`` set, check what it is for.

    Raises:
        DataError: missing, unreadable or not a calibration file (path named).
        EmbeddingSpaceError: fitted for another matcher or space.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != _FORMAT:
            raise DataError(f"{path} is not a wildreid calibration file")
        if document.get("version") != _VERSION:
            raise DataError(
                f"{path} is a calibration of version {document.get('version')}, this wildreid "
                f"reads version {_VERSION}; fit it again"
            )
        raw_space = document["space"]
        loaded = ScoreCalibration(
            calibrator=calibrator_from_dict(document["calibrator"]),
            matcher=str(document["matcher"]),
            space=EmbeddingSpace.from_json(json.dumps(raw_space)) if raw_space else None,
            extra=dict(document.get("extra", {})),
        )
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise DataError(f"cannot read calibration {path}: {exc}") from exc
    if matcher is not None:
        loaded.require_compatible(matcher=matcher, space=space, what=f"calibration {path}")
    return loaded
