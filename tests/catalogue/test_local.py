"""Local re-ranking, keypoint evidence and calibration of a catalogue, on synthetic patterns.

The synthetic identities are ellipse patterns seen under random homographies: what local
matching is for, and what a tiny random-weights global model cannot tell apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wildreid.catalogue import Catalogue
from wildreid.catalogue.local import resolve_rerank
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.errors import ConfigError, EmbeddingSpaceError
from wildreid.matching.identification import decide_scores
from wildreid.viz.match_grid import CORRECT_RGB


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """8 identities: 4 gallery and 2 query photos each, 128 px."""
    root = tmp_path_factory.mktemp("synthetic") / "data"
    config = SynthConfig(
        identities=8,
        size_px=128,
        train_examples=1,
        gallery_examples=4,
        query_examples=2,
        supersample=1,
    )
    generate_synthetic(root, config=config, workers=1)
    return root, pd.read_csv(root / "metadata.csv")


def _create(folder: Path, model: str, synthetic: tuple[Path, pd.DataFrame]) -> Catalogue:
    root, metadata = synthetic
    cat = Catalogue.create(folder, model=model)
    cat.enrol(metadata[metadata["subset"] == "gallery"], root=root)
    return cat


@pytest.fixture(scope="module")
def patterns(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: str, synthetic: tuple[Path, pd.DataFrame]
) -> Iterator[Catalogue]:
    cat = _create(tmp_path_factory.mktemp("cat") / "cat", tiny_model, synthetic)
    yield cat
    cat.close()


def _queries(synthetic: tuple[Path, pd.DataFrame]) -> list[tuple[Path, str]]:
    root, metadata = synthetic
    rows = metadata[metadata["subset"] == "query"]
    return [(root / p, str(i)) for p, i in zip(rows["path"], rows["identity"], strict=True)]


def test_sift_rerank_puts_the_right_individual_first_where_global_scores_do_not(
    patterns: Catalogue, synthetic: tuple[Path, pd.DataFrame]
) -> None:
    queries = _queries(synthetic)
    plain = [patterns.identify(path) for path, _ in queries]
    local = [patterns.identify(path, rerank="sift", shortlist=0) for path, _ in queries]
    truth = [identity for _, identity in queries]
    plain_right = [r.candidates[0].identity == t for r, t in zip(plain, truth, strict=True)]
    local_right = [r.candidates[0].identity == t for r, t in zip(local, truth, strict=True)]
    # Measured: global 3 / 16, SIFT 16 / 16.
    assert sum(local_right) >= 14 and sum(local_right) >= sum(plain_right) + 8
    assert any(r and not p for r, p in zip(local_right, plain_right, strict=True))
    result = local[0]
    assert result.reranked and not plain[0].reranked
    assert result.rerank["method"] == "sift" and result.rerank["shortlist"] == 0
    best = result.candidates[0]
    assert best.n_inliers is not None and best.n_matches is not None
    assert best.local_score == best.n_inliers > result.candidates[1].n_inliers  # type: ignore[operator]
    assert -1.0 <= best.score <= 1.0  # the global cosine of the supporting image
    evidence = result.evidence[best.image_id]
    assert evidence.matches.n_inliers == best.n_inliers
    assert evidence.features0 is not None and len(evidence.features1) > 0
    # The stored record keeps the counts and the method, not the evidence.
    stored = patterns.store.identifications(result.query_image_id)[-1]
    assert stored.rerank["method"] == "sift" and stored.evidence == {}
    assert stored.candidates[0].n_inliers == best.n_inliers
    assert result.timings_ms["rerank"] > 0 and plain[0].rerank == {}


def test_concurrent_reranked_identifications_agree_with_sequential_ones(
    patterns: Catalogue, synthetic: tuple[Path, pd.DataFrame]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    paths = [path for path, _ in _queries(synthetic)[:8]]

    def top(path: Path) -> tuple[str, int | None]:
        best = patterns.identify(path, rerank="sift", shortlist=0).candidates[0]
        return best.identity, best.n_inliers

    sequential = [top(p) for p in paths]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(top, paths)) == sequential


def test_the_default_shortlist_is_the_methods_and_can_be_changed(
    patterns: Catalogue, synthetic: tuple[Path, pd.DataFrame]
) -> None:
    path, _ = _queries(synthetic)[0]
    default = patterns.identify(path, rerank="sift")
    assert default.rerank["shortlist"] == 1000  # CATALOGUE_DEFAULTS["sift"]
    config = resolve_rerank("aliked-lightglue")
    assert config is not None and config.shortlist == 20  # METHOD_DEFAULTS: LightGlue is slow
    narrow = patterns.identify(path, rerank="sift", shortlist=2)
    assert narrow.rerank["shortlist"] == 2
    assert sum(c.n_matches is not None for c in narrow.candidates) <= 2


def test_evidence_image_draws_the_query_and_candidate_with_their_matches(
    patterns: Catalogue, synthetic: tuple[Path, pd.DataFrame]
) -> None:
    path, identity = _queries(synthetic)[0]
    result = patterns.identify(path, rerank="sift", shortlist=0)
    best = result.candidates[0]
    assert best.identity == identity
    picture = patterns.evidence_image(result.query_image_id, best.image_id, rerank="sift")
    assert picture.height == 240 + 18 and picture.width > 2 * 200  # two 128 px images at 240 px
    pixels = np.asarray(picture)
    assert (pixels == np.array(CORRECT_RGB, dtype=np.uint8)).all(axis=2).sum() > 50  # inlier lines
    again = patterns.evidence(result.query_image_id, best.image_id, rerank="sift")
    assert again.matches.n_inliers == best.n_inliers  # recomputed from the cached features


def test_bad_rerank_options_are_refused_before_anything_is_stored(
    patterns: Catalogue, synthetic: tuple[Path, pd.DataFrame]
) -> None:
    path, _ = _queries(synthetic)[1]
    before = patterns.store.counts()
    with pytest.raises(ConfigError, match=r"'surf' is not one of .*aliked-lightglue.*sift"):
        patterns.identify(path, rerank="surf")
    with pytest.raises(ConfigError, match="needs a re-ranking method"):
        patterns.identify(path, shortlist=10)
    with pytest.raises(ConfigError, match="shortlist must be >= 0"):
        patterns.identify(path, rerank="sift", shortlist=-1)
    assert patterns.store.counts() == before


def test_calibration_is_saved_reloaded_used_and_refused_for_another_model(
    tmp_path: Path, tiny_model: str, synthetic: tuple[Path, pd.DataFrame]
) -> None:
    from tests.catalogue.helpers import save_tiny_model

    queries = _queries(synthetic)
    with _create(tmp_path / "cat", tiny_model, synthetic) as cat:
        assert cat.calibration() is None
        uncalibrated = cat.identify(queries[0][0], rerank="sift", shortlist=0)
        assert uncalibrated.candidates[0].probability is None and uncalibrated.calibration == {}
        fitted = cat.calibrate(rerank="sift", shortlist=0)
        assert fitted.local_matcher == "sift/inliers" and fitted.local is not None
        assert (tmp_path / "cat/calibration.json").is_file()
        assert fitted.extra["positive_pairs"] >= 10 and fitted.extra["local_positive_pairs"] >= 10
    with Catalogue.open(tmp_path / "cat") as cat:
        loaded = cat.calibration()
        assert loaded is not None and loaded.policy.threshold == fitted.policy.threshold
        assert loaded.local_matcher == "sift/inliers"
        result = cat.identify(queries[2][0], rerank="sift", shortlist=0)
        probabilities = [c.probability for c in result.candidates]
        assert all(p is not None and 0.0 <= p <= 1.0 for p in probabilities)
        assert probabilities[0] == max(probabilities)  # type: ignore[type-var]
        assert result.calibration["matcher"] == "global-cosine+sift/inliers"
        assert result.threshold == pytest.approx(fitted.policy.threshold)
        expected = decide_scores([probabilities[0]], threshold=result.threshold)[0]
        assert result.decision == expected and result.notes == ()
        # Known queries get a higher top probability than the gallery's other individuals.
        assert result.candidates[0].identity == queries[2][1]
        assert probabilities[0] > probabilities[1]  # type: ignore[operator]
        # Without re-ranking (or with another method): the global calibration and threshold.
        plain = cat.identify(queries[2][0])
        assert plain.calibration["matcher"] == "global-cosine"
        assert plain.threshold == pytest.approx(loaded.global_threshold)
        other = cat.identify(queries[2][0], rerank="rootsift", shortlist=0)
        assert other.threshold == pytest.approx(loaded.global_threshold)
        assert any("covers sift/inliers, not rootsift/inliers" in n for n in other.notes)
        # Another model: the calibration no longer applies and is refused, loudly.
        cat.reembed(str(save_tiny_model(tmp_path / "other.pt", seed=1)))
        with pytest.raises(EmbeddingSpaceError):
            cat.calibration()
        after = cat.identify(queries[2][0], rerank="sift", shortlist=0)
        assert after.candidates[0].probability is None and after.calibration == {}
        assert after.threshold is None
        assert any("calibration ignored" in n and "catalogue calibrate" in n for n in after.notes)
        assert any("calibration ignored" in n for n in cat.check().notes)


def test_calibration_needs_several_individuals(tmp_path: Path, tiny_model: str) -> None:
    from tests.catalogue.helpers import write_gallery
    from wildreid.data.schema import read_metadata

    csv = write_gallery(tmp_path / "survey", individuals=2)
    with Catalogue.create(tmp_path / "cat", model=tiny_model) as cat:
        cat.enrol(read_metadata(csv), root=csv.parent)
        with pytest.raises(ConfigError, match="at least 3 individuals"):
            cat.calibrate()
        assert not (tmp_path / "cat/calibration.json").exists()


def test_a_missing_gallery_file_keeps_its_global_rank_and_is_reported(
    catalogue: Catalogue, gallery_csv: Path
) -> None:
    catalogue.image_path("g0-0").unlink()
    result = catalogue.identify(
        gallery_csv.parent / "photos/ind1/0.png", rerank="sift", shortlist=0
    )
    assert result.reranked and len(result.candidates) == 3
    assert any("1 gallery image(s) could not be read" in n for n in result.notes)
    assert all(c.n_matches is None for c in result.candidates if c.image_id == "g0-0")
