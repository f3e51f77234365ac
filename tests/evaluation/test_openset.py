"""Open-set policy: the calibration carve, thresholds fitted on the gallery side, decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wildreid.errors import ConfigError, DataError, EmbeddingSpaceError
from wildreid.evaluation.openset import (
    carve_calibration,
    decision_metrics,
    fit_open_set_policy,
    load_policy,
)
from wildreid.evaluation.protocol import Protocol, evaluate_embeddings, fit_gallery_policy
from wildreid.types import Embeddings, EmbeddingSpace

SPACE = EmbeddingSpace("m", "ab" * 32, (8, 8), (0.5,) * 3, (0.5,) * 3, dim=16)
OTHER = EmbeddingSpace("m", "cd" * 32, (8, 8), (0.5,) * 3, (0.5,) * 3, dim=16)


def _clustered(n_ids: int, per_id: int, noise: float, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, 16))
    vectors = np.repeat(centres, per_id, axis=0) + noise * rng.normal(size=(n_ids * per_id, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [f"id{i}" for i in range(n_ids) for _ in range(per_id)]
    return vectors.astype(np.float32), labels


def test_carve_keeps_groups_on_one_side_and_holds_identities_out() -> None:
    labels = [f"id{i // 6}" for i in range(60)] + ["unknown"] * 3
    groups = [f"g{i // 2}" for i in range(63)]  # pairs of images are near-duplicates
    query, gallery = carve_calibration(labels, groups, new_fraction=0.2, seed=1)
    assert not (query & gallery).any()
    assert not query[-3:].any() and not gallery[-3:].any()  # unknown animals take no part
    for group in set(groups):
        members = [i for i, g in enumerate(groups) if g == group]
        assert len({bool(query[i]) for i in members}) == 1
    query_ids = {labels[i] for i in np.flatnonzero(query)}
    gallery_ids = {labels[i] for i in np.flatnonzero(gallery)}
    assert len(query_ids - gallery_ids) == 2  # 20% of 10 identities are pseudo-new
    assert gallery_ids <= query_ids  # every other identity (3 groups) gives a query group


def test_policy_threshold_separates_known_from_new_on_clustered_data(tmp_path: Path) -> None:
    vectors, labels = _clustered(30, 6, 0.3, seed=0)
    policy = fit_open_set_policy(vectors @ vectors.T, labels, space=SPACE, seed=0)
    facts = policy.calibration.extra
    assert 0 < policy.threshold < 1
    assert facts["calibration_open_score"] > 0.8
    assert facts["positive_pairs"] > 0 and facts["negative_pairs"] > facts["positive_pairs"]
    path = tmp_path / "calibration.json"
    policy.save(path)
    loaded = load_policy(path, space=SPACE)
    assert loaded.threshold == policy.threshold and loaded.target == "open_score"
    with pytest.raises(EmbeddingSpaceError):
        load_policy(path, space=OTHER)


def test_false_new_target_keeps_the_false_new_rate_on_calibration_data() -> None:
    vectors, labels = _clustered(30, 6, 0.8, seed=2)
    scores = vectors @ vectors.T
    options = {"space": SPACE, "target": "false_new"}
    strict = fit_open_set_policy(scores, labels, max_false_new=0.01, **options)  # type: ignore[arg-type]
    loose = fit_open_set_policy(scores, labels, max_false_new=0.5, **options)  # type: ignore[arg-type]
    assert strict.threshold <= loose.threshold


def test_policy_refuses_bad_options_and_too_few_pairs() -> None:
    vectors, labels = _clustered(4, 2, 0.1, seed=0)
    with pytest.raises(DataError, match="positive"):
        fit_open_set_policy(vectors @ vectors.T, labels, space=SPACE)
    with pytest.raises(ConfigError, match="target"):
        fit_open_set_policy(vectors @ vectors.T, labels, space=SPACE, target="best")


def test_decision_metrics_hand_computed() -> None:
    vectors, labels = _clustered(30, 6, 0.3, seed=0)
    policy = fit_open_set_policy(vectors @ vectors.T, labels, space=SPACE, review_margin=0.01)
    t = policy.threshold
    top = np.array([t + 0.2, t + 0.2, t - 0.2, t - 0.2, t])
    correct = np.array([True, False, True, False, True])
    known = np.array([True, True, True, False, True])
    facts = decision_metrics(top, correct, known, policy)
    # decisions: known, known, new, new, review -> right: yes, no, no, yes
    assert facts["review_fraction"] == pytest.approx(0.2)
    assert facts["auto_accuracy"] == pytest.approx(0.5)
    assert (facts["n_decided_known"], facts["n_decided_new"], facts["n_review"]) == (2, 2, 1)


def test_evaluation_with_a_gallery_policy_reports_honest_and_oracle_numbers() -> None:
    vectors, labels = _clustered(40, 6, 0.4, seed=3)
    ids = [f"img{i}" for i in range(len(labels))]
    metadata = pd.DataFrame(
        {"image_id": ids, "identity": labels, "clip": [f"c{i // 2}" for i in range(len(ids))]}
    )
    # Identities 0..29: images 0-3 gallery, 4-5 queries; identities 30..39 only queries (new).
    gallery = [i for i, x in zip(ids, range(len(ids)), strict=True) if x < 180 and x % 6 < 4]
    queries = [i for i in ids if i not in set(gallery)]
    protocol = Protocol(tuple(queries), tuple(gallery), "test", "train")
    embeddings = Embeddings(vectors, tuple(ids), SPACE)
    policy = fit_gallery_policy(metadata, protocol, embeddings, group_column="clip")
    result = evaluate_embeddings(metadata, protocol, embeddings, policy=policy, oracle=True)
    m = result.metrics
    assert m["threshold"] == policy.threshold
    assert m["open_score"] == pytest.approx(np.sqrt(m["BAKS"] * m["BAUS"]))
    assert m["open_score"] > 0.6
    assert m["ECE_calibrated"] < m["ECE_raw"]
    assert {"oracle_BAKS", "oracle_BAUS", "oracle_open_score", "auto_accuracy"} <= set(m)
    plain = evaluate_embeddings(metadata, protocol, embeddings)
    assert plain.metrics["top1"] == m["top1"] and plain.metrics["mAP"] == m["mAP"]
    assert result.reliability is not None and set(result.reliability) == {
        "raw cosine",
        "calibrated",
    }
    with pytest.raises(ConfigError, match="group column"):
        fit_gallery_policy(metadata, protocol, embeddings, group_column="camera")


def test_fused_policy_calibrates_local_scores_and_improves_on_weak_global_scores() -> None:
    from wildreid.evaluation.openset import fuse_policy
    from wildreid.matching.fusion import fuse_shortlist

    vectors, labels = _clustered(30, 6, 0.9, seed=4)  # weak global scores
    scores = vectors @ vectors.T
    policy = fit_open_set_policy(scores, labels, space=SPACE, seed=0)
    query, gallery = carve_calibration(labels, None, seed=0)
    q, g = np.flatnonzero(query), np.flatnonzero(gallery)
    block = scores[np.ix_(q, g)]
    shortlist = np.argsort(-block, axis=1)[:, :10]
    q_labels = [labels[i] for i in q]
    g_labels = [labels[i] for i in g]
    same = np.array(g_labels, dtype=object)[shortlist] == np.array(q_labels, dtype=object)[:, None]
    local = np.where(same, 50.0, 5.0) + np.random.default_rng(0).uniform(0, 10, same.shape)
    fused_policy, local_calibrator = fuse_policy(
        policy, block, shortlist, local, q_labels, g_labels, matcher="sift/inliers"
    )
    extra = fused_policy.calibration.extra
    assert extra["fused_calibration_open_score"] > extra["calibration_open_score"]
    assert extra["local_matcher"] == "sift/inliers"
    fused = fuse_shortlist(
        block,
        shortlist,
        local,
        global_calibrator=policy.calibration.calibrator,
        local_calibrator=local_calibrator,
    )
    rows = np.arange(len(q))[:, None]
    shortlisted = fused[rows, shortlist]
    assert shortlisted[same].mean() > shortlisted[~same].mean() + 0.4


def test_fused_probability_is_recalibrated_without_changing_ranks() -> None:
    """The mean of a decisive local and an uninformative global probability is under-confident
    (about 0.5 for true pairs); the recalibrated fused probability is honest on new pairs."""
    from wildreid.evaluation.openset import fuse_policy
    from wildreid.matching.calibration import expected_calibration_error
    from wildreid.matching.fusion import fuse_shortlist

    def draw(seed: int) -> tuple[np.ndarray, ...]:
        vectors, labels = _clustered(30, 6, 3.0, seed=seed)  # global scores nearly useless
        scores = vectors @ vectors.T
        query, gallery = carve_calibration(labels, None, seed=0)
        q, g = np.flatnonzero(query), np.flatnonzero(gallery)
        block = scores[np.ix_(q, g)]
        shortlist = np.argsort(-block, axis=1)[:, :40]
        q_labels = np.array([labels[i] for i in q], dtype=object)
        g_labels = np.array([labels[i] for i in g], dtype=object)
        same = g_labels[shortlist] == q_labels[:, None]
        noise = np.random.default_rng(seed).uniform(0, 10, same.shape)
        local = np.where(same, 40.0, 5.0) + noise
        return scores, labels, block, shortlist, local, q_labels, g_labels

    scores, labels, block, shortlist, local, q_labels, g_labels = draw(4)
    policy = fit_open_set_policy(scores, labels, space=SPACE, seed=0)
    fused_policy, local_calibrator = fuse_policy(
        policy, block, shortlist, local, list(q_labels), list(g_labels), matcher="sift/inliers"
    )
    extra = fused_policy.calibration.extra
    assert extra["fused_calibration_ECE"] < 0.6 * extra["fused_mean_calibration_ECE"]
    # Fresh pairs the calibrators never saw.
    _, _, block, shortlist, local, q_labels, g_labels = draw(5)
    same = q_labels[:, None] == g_labels[None, :]
    mean = fuse_shortlist(
        block,
        shortlist,
        local,
        global_calibrator=policy.calibration.calibrator,
        local_calibrator=local_calibrator,
    )
    honest = fused_policy.fuse_shortlist(block, shortlist, local)
    assert expected_calibration_error(honest.ravel(), same.ravel()) < 0.6 * (
        expected_calibration_error(mean.ravel(), same.ravel())
    )
    true_pairs = mean[same & (mean > 0.3)]
    assert true_pairs.size and true_pairs.mean() < 0.7  # the mean understates them ...
    assert honest[same & (mean > 0.3)].mean() > 0.85  # ... recalibrated, it does not
    # Strictly increasing: the order of every pair is unchanged.
    order = np.argsort(mean.ravel(), kind="stable")
    step, honest_step = np.diff(mean.ravel()[order]), np.diff(honest.ravel()[order])
    assert np.all(honest_step >= 0) and np.all(honest_step[step > 1e-6] > 0)


def test_reliability_diagram_is_written(tmp_path: Path) -> None:
    from wildreid.matching.calibration import reliability_curve
    from wildreid.viz.plots import plot_reliability

    p = np.linspace(0, 1, 50)
    curve = reliability_curve(p, p > 0.5)
    plot_reliability({"calibrated": curve}, tmp_path / "r.png", title="t")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
