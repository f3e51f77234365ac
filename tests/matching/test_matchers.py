"""Pair matchers on real shipped weights: a warped copy matches, an unrelated photo does not."""

from __future__ import annotations

import numpy as np
import pytest

from tests.matching.local_images import HOMOGRAPHY, photo, unrelated, warped
from wildreid.errors import ConfigError
from wildreid.matching.extractors import build_extractor
from wildreid.matching.matchers import MatcherConfig, MutualNearestNeighbours, build_matcher
from wildreid.matching.verification import verify
from wildreid.types import LocalFeatures

PIPELINES = [("sift", "mnn"), ("aliked", "lightglue-aliked"), ("disk", "lightglue-disk")]


def features(descriptors: list[list[float]]) -> LocalFeatures:
    d = np.array(descriptors, dtype=np.float32)
    keypoints = np.arange(2 * len(d), dtype=np.float32).reshape(-1, 2)
    return LocalFeatures(keypoints, d, np.ones(len(d), np.float32), (64, 64))


@pytest.mark.parametrize(("extractor", "matcher"), PIPELINES)
def test_warped_copy_has_many_inliers_unrelated_photo_few(extractor: str, matcher: str) -> None:
    extract = build_extractor(name=extractor, max_keypoints=256).extract
    a, b, c = extract(photo()), extract(warped()), extract(unrelated())
    same, other = build_matcher(MatcherConfig(name=matcher)).match([(a, b), (a, c)])
    same_inliers = verify(same, a, b, geometry="homography").n_inliers
    other_inliers = verify(other, a, c, geometry="homography").n_inliers
    assert same_inliers >= 60, same_inliers
    assert other_inliers <= 15, other_inliers
    # The inliers obey the true homography.
    verified = verify(same, a, b, geometry="homography")
    inlier_pairs = same.pairs[verified.inliers]
    points = np.c_[a.keypoints[inlier_pairs[:, 0]], np.ones(len(inlier_pairs))] @ HOMOGRAPHY.T
    projected = points[:, :2] / points[:, 2:]
    error = np.linalg.norm(projected - b.keypoints[inlier_pairs[:, 1]], axis=1)
    assert np.median(error) < 2.0


def test_mutual_nearest_neighbours_with_ratio_test_by_hand() -> None:
    a = features([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    b = features([[0.9, 0.1, 0], [0, 0.7, 0.7], [0, 0.6, 0.8], [0, 0, 1]])
    matcher = MutualNearestNeighbours(MatcherConfig(name="mnn", ratio=0.8))
    (matches,) = matcher.match([(a, b)])
    # a0-b0 is mutual and unambiguous; a1's nearest b1 (0.76) has b2 (0.85) close behind: ratio
    # test fails; a2-b3 is mutual and unambiguous.
    assert matches.pairs.tolist() == [[0, 0], [2, 3]]
    (loose,) = MutualNearestNeighbours(MatcherConfig(name="mnn", ratio=1.0)).match([(a, b)])
    assert loose.pairs.tolist() == [[0, 0], [1, 1], [2, 3]]
    assert (matches.scores > 0).all() and (matches.scores <= 1).all()


def test_mnn_batched_equals_one_pair_at_a_time() -> None:
    rng = np.random.default_rng(0)
    sets = [features(rng.normal(size=(n, 16)).tolist()) for n in (5, 40, 17, 1, 33)]
    pairs = [(sets[i], sets[j]) for i in range(5) for j in range(5) if i != j]
    matcher = MutualNearestNeighbours(MatcherConfig(name="mnn"))
    together = matcher.match(pairs)
    for pair, batched in zip(pairs, together, strict=True):
        (alone,) = matcher.match([pair])
        np.testing.assert_array_equal(batched.pairs, alone.pairs)
        np.testing.assert_allclose(batched.scores, alone.scores, rtol=1e-5)


def test_lightglue_batched_pairs_give_about_the_same_matches() -> None:
    extract = build_extractor(name="aliked", max_keypoints=128).extract
    a, b, c = extract(photo()), extract(warped()), extract(unrelated())
    one = build_matcher(MatcherConfig(name="lightglue-aliked")).match([(a, b), (a, c)])
    batched = build_matcher(MatcherConfig(name="lightglue-aliked", batch_size=4)).match(
        [(a, b), (a, c)]
    )
    assert abs(len(one[0]) - len(batched[0])) <= 0.2 * len(one[0])
    assert len(batched[1]) < len(batched[0]) / 3


@pytest.mark.parametrize("matcher", ["mnn", "lightglue-aliked"])
def test_empty_side_gives_no_match(matcher: str) -> None:
    a = build_extractor(name="aliked", max_keypoints=64).extract(photo())
    empty = LocalFeatures(np.zeros((0, 2)), np.zeros((0, 128)), np.zeros(0), (10, 10))
    results = build_matcher(MatcherConfig(name=matcher)).match([(a, empty), (empty, a)])
    assert [len(m) for m in results] == [0, 0]


def test_descriptor_dimensions_must_agree() -> None:
    with pytest.raises(ConfigError, match="dimension 3 and 2"):
        MutualNearestNeighbours(MatcherConfig()).match(
            [(features([[1, 0, 0]]), features([[1, 0]]))]
        )


@pytest.mark.parametrize("field", ["depth_confidence", "width_confidence"])
@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.5])
def test_lightglue_thresholds_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        MatcherConfig(name="lightglue-aliked", **{field: value})


def test_lightglue_early_exit_follows_depth_confidence() -> None:
    """A low depth confidence stops the warped pair before the last layer and keeps its evidence;
    -1 runs all nine layers."""
    extract = build_extractor(name="aliked", max_keypoints=128).extract
    a, b, c = extract(photo()), extract(warped()), extract(unrelated())
    stops: dict[str, list[int]] = {"fast": [], "full": []}
    counts: dict[str, list[int]] = {}
    for name, depth, width in (("fast", 0.8, 0.9), ("full", -1.0, -1.0)):
        matcher = build_matcher(
            MatcherConfig(name="lightglue-aliked", depth_confidence=depth, width_confidence=width)
        )
        module = matcher._modules[True]  # type: ignore[attr-defined]  # the one-pair module
        handle = module.register_forward_hook(
            lambda _m, _i, out, seen=stops[name]: seen.append(int(out["stop"]))
        )
        counts[name] = [len(m) for m in matcher.match([(a, b), (a, c)])]
        handle.remove()
    assert stops["full"] == [9, 9]
    assert stops["fast"][0] < 9  # the warped pair
    assert counts["fast"][0] >= 0.7 * counts["full"][0]
    assert counts["fast"][1] < counts["fast"][0] / 3
