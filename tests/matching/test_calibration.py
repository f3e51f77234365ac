"""Calibrators, their checks, ECE, saving / reloading, and fusion over a shortlist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wildreid.errors import ConfigError, DataError, EmbeddingSpaceError
from wildreid.matching.calibration import (
    Calibrator,
    IsotonicCalibrator,
    LogisticCalibrator,
    ScoreCalibration,
    expected_calibration_error,
    fit_calibrator,
    load_calibration,
    reliability_curve,
)
from wildreid.matching.fusion import fit_fusion_weights, fuse_probabilities, fuse_scores
from wildreid.types import EmbeddingSpace

SPACE = EmbeddingSpace("m", "ab" * 32, (8, 8), (0.5,) * 3, (0.5,) * 3, dim=4)
OTHER = EmbeddingSpace("m", "cd" * 32, (8, 8), (0.5,) * 3, (0.5,) * 3, dim=4)


def _pairs(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose true P(same) is sigmoid(10 * (s - 0.5))."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, n)
    same = rng.uniform(0, 1, n) < 1 / (1 + np.exp(-10 * (scores - 0.5)))
    return scores, same


@pytest.mark.parametrize("kind", ["isotonic", "logistic"])
def test_calibrators_are_strictly_increasing_and_preserve_ranks(kind: str) -> None:
    scores, same = _pairs()
    calibrator = fit_calibrator(kind, scores, same)
    assert isinstance(calibrator, Calibrator)
    grid = np.linspace(-2, 3, 5001)
    p = calibrator.probability(grid)
    assert np.all(np.diff(p) > 0)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(np.argsort(calibrator.probability(scores)), np.argsort(scores))


def test_isotonic_on_a_step_is_close_to_the_frequencies() -> None:
    scores = np.array([0.1] * 10 + [0.2] * 10 + [0.8] * 10 + [0.9] * 10)
    same = np.array([False] * 20 + [True] * 20)
    calibrator = IsotonicCalibrator.fit(scores, same)
    np.testing.assert_allclose(calibrator.probability([0.15, 0.85]), [0.0, 1.0], atol=1e-5)
    assert calibrator.probability(0.5) == pytest.approx(0.5, abs=1e-5)


def test_logistic_recovers_the_true_slope() -> None:
    scores, same = _pairs(20_000)
    calibrator = fit_calibrator("logistic", scores, same)
    assert isinstance(calibrator, LogisticCalibrator)
    assert calibrator.slope == pytest.approx(10, rel=0.15)
    assert -calibrator.intercept / calibrator.slope == pytest.approx(0.5, abs=0.03)


def test_calibration_lowers_ece() -> None:
    scores, same = _pairs(5000)
    raw = expected_calibration_error(np.clip(scores**3, 0, 1), same)
    calibrated = fit_calibrator("isotonic", scores, same).probability(scores)
    assert expected_calibration_error(calibrated, same) < raw / 3


def test_ece_and_reliability_hand_computed() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([False, True, True, True])
    # bin 0: mean p 0.05, freq 0.5; bin 9: mean p 0.95, freq 1 -> ECE = (2*0.45 + 2*0.05)/4
    assert expected_calibration_error(p, y) == pytest.approx(0.25)
    mean_p, freq, counts = reliability_curve(p, y, bins=10)
    assert counts.tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert np.isnan(freq[1]) and freq[9] == 1.0 and mean_p[0] == pytest.approx(0.05)


def test_too_few_pairs_say_how_many() -> None:
    with pytest.raises(DataError, match="found 3 positive and 20 negative"):
        fit_calibrator("isotonic", np.arange(23.0), np.array([True] * 3 + [False] * 20))


def test_non_finite_scores_name_the_pair() -> None:
    scores, same = _pairs(50)
    scores[7] = np.nan
    names = [f"q{i} ~ g{i}" for i in range(50)]
    with pytest.raises(DataError, match="q7 ~ g7"):
        fit_calibrator("isotonic", scores, same, pair_names=names)
    scores[7] = np.inf
    with pytest.raises(DataError, match="pair 7"):
        fit_calibrator("logistic", scores, same)


def test_unknown_kind_and_decreasing_scores_are_refused() -> None:
    scores, same = _pairs()
    with pytest.raises(ConfigError, match="unknown calibrator"):
        fit_calibrator("platt", scores, same)
    with pytest.raises(ConfigError, match="non-positive slope"):
        fit_calibrator("logistic", -scores, same)


@pytest.mark.parametrize("kind", ["isotonic", "logistic"])
def test_saved_calibration_reloads_for_its_space_only(kind: str, tmp_path: Path) -> None:
    scores, same = _pairs()
    saved = ScoreCalibration(fit_calibrator(kind, scores, same), "global-cosine", SPACE, {"a": 1})
    path = tmp_path / "calibration.json"
    saved.save(path)
    loaded = load_calibration(path, matcher="global-cosine", space=SPACE)
    np.testing.assert_array_equal(
        loaded.calibrator.probability(scores), saved.calibrator.probability(scores)
    )
    assert loaded.extra == {"a": 1}
    with pytest.raises(EmbeddingSpaceError, match="cannot be mixed"):
        load_calibration(path, matcher="global-cosine", space=OTHER)
    with pytest.raises(EmbeddingSpaceError, match="matcher 'global-cosine'"):
        load_calibration(path, matcher="sift", space=SPACE)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="cannot read calibration"):
        load_calibration(path)


def test_fuse_probabilities_averages_what_was_scored() -> None:
    a = np.array([[0.2, 0.4, np.nan]])
    b = np.array([[0.6, np.nan, np.nan]])
    fused = fuse_probabilities([a, b])
    np.testing.assert_allclose(fused[0, :2], [0.4, 0.4])
    assert np.isnan(fused[0, 2])
    np.testing.assert_allclose(fuse_probabilities([a, b], weights=[3, 1])[0, 0], 0.3)
    with pytest.raises(ConfigError, match="share one shape"):
        fuse_probabilities([a, b[:, :2]])
    with pytest.raises(ConfigError, match="weights"):
        fuse_probabilities([a, b], weights=[-1, 2])


def test_fuse_scores_calibrates_each_source_and_keeps_exclusions() -> None:
    identity = LogisticCalibrator(slope=1.0, intercept=0.0)
    doubled = LogisticCalibrator(slope=2.0, intercept=0.0)
    g = np.array([[0.0, 1.0, -np.inf]])
    local = np.array([[1.0, np.nan, 5.0]])
    fused = fuse_scores(g, local, global_calibrator=identity, local_calibrator=doubled)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(fused[0, :2], [(0.5 + sig(2.0)) / 2, sig(1.0)])
    assert fused[0, 2] == -np.inf
    with pytest.raises(ConfigError, match="same pairs"):
        fuse_scores(g, local[:, :2], global_calibrator=identity, local_calibrator=doubled)


def test_fitted_fusion_weights_favour_the_informative_source() -> None:
    rng = np.random.default_rng(0)
    same = rng.uniform(size=2000) < 0.3
    good = np.clip(same * 0.6 + rng.uniform(0, 0.4, 2000), 0, 1)
    noise = rng.uniform(size=2000)
    weights = fit_fusion_weights([noise, good], same)
    assert weights[1] > 0.9 and sum(weights) == pytest.approx(1)
