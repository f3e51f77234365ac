"""Tests for wildreid.evaluation.protocol: query/gallery selection, exclusions, metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wildreid.data.splits import read_split
from wildreid.errors import ConfigError, DataError
from wildreid.evaluation.metrics import threshold_at_fpr
from wildreid.evaluation.protocol import (
    Protocol,
    evaluate_embeddings,
    evaluate_scores,
    protocol_from_split,
    split_from_column,
)
from wildreid.types import Embeddings, EmbeddingSpace

SPACE = EmbeddingSpace(
    model="test", weights_sha256="0" * 64, input_size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1)
)


def _metadata(rows: list[tuple[str, str, str]], **extra: list[str]) -> pd.DataFrame:
    """Metadata from (image_id, identity, encounter) rows plus extra string columns."""
    frame = pd.DataFrame(rows, columns=["image_id", "identity", "encounter"])
    frame["path"] = [f"{image_id}.png" for image_id in frame["image_id"]]
    for column, values in extra.items():
        frame[column] = values
    return frame


def _embeddings(angles_deg: dict[str, float]) -> Embeddings:
    radians = np.deg2rad(list(angles_deg.values()))
    vectors = np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)
    return Embeddings(vectors, tuple(angles_deg), SPACE)


# Hand-built case: 3 queries x 4 gallery items, 2-D unit vectors at the given angles.
#   gallery g0 A 0deg (enc e1), g1 B 30deg (e2), g2 A 60deg (e3), g3 C 90deg (e4)
#   q0 A 10deg (e1):  cos to g0..g3 = cos 10, cos 20, cos 50, cos 80 -> ranked g0 g1 g2 g3
#                     labels A B A C: hits at 1, 3 -> AP = (1 + 2/3) / 2 = 5/6, INP = 2/3
#   q1 B 80deg (e5):  cos 80, cos 50, cos 20, cos 10 -> ranked g3 g2 g1 g0
#                     labels C A B A: hit at 3 -> AP = 1/3, INP = 1/3
#   q2 C 100deg (e4): cos 100, cos 70, cos 40, cos 10 -> ranked g3 g2 g1 g0: hit at 1 -> AP 1
# top1 = 2/3, top5 = 1, mAP = (5/6 + 1/3 + 1) / 3 = 13/18, mINP = (2/3 + 1/3 + 1) / 3 = 2/3,
# CMC (first hits 1, 3, 1) = [2/3, 2/3, 1, 1].
# Excluding the same encounter removes (q0, g0) and (q2, g3):
#   q0: ranked g1 g2 g3 -> labels B A C: hit at 2 -> top-1 wrong, AP = 1/2, INP = 1/2
#   q1: unchanged
#   q2: its only C is excluded -> a new query; its top-1 is g2 (cos 40)
# Known q0, q1: top1 = 0, top5 = 1, mAP = mINP = (1/2 + 1/3) / 2 = 5/12, CMC = [0, 1/2, 1, 1].
# Open set: new top-1 cos 40 is below both known top-1 (cos 20 for q0, cos 10 for q1) ->
# new_auroc = 1. At FPR <= 0.05 no known query may be called new, so the threshold sits just
# above cos 40: q2 is called new (BAUS 1), q0 -> B and q1 -> C are accepted, wrongly (BAKS 0).
METADATA = _metadata(
    [
        ("g0", "A", "e1"),
        ("q0", "A", "e1"),
        ("g1", "B", "e2"),
        ("q1", "B", "e5"),
        ("g2", "A", "e3"),
        ("q2", "C", "e4"),
        ("g3", "C", "e4"),
    ]
)
PROTOCOL = Protocol(("q0", "q1", "q2"), ("g0", "g1", "g2", "g3"), "test", "gallery")
EMBEDDINGS = _embeddings({"g0": 0, "g1": 30, "g2": 60, "g3": 90, "q0": 10, "q1": 80, "q2": 100})


def _cos(degrees: float) -> float:
    return math.cos(math.radians(degrees))


def test_closed_set_metrics_match_hand_computation() -> None:
    result = evaluate_embeddings(METADATA, PROTOCOL, EMBEDDINGS)
    assert result.metrics == pytest.approx(
        {
            "top1": 2 / 3,
            "top5": 1.0,
            "top10": 1.0,
            "mAP": 13 / 18,
            "mINP": 2 / 3,
            "n_queries": 3,
            "n_known_queries": 3,
            "n_new_queries": 0,
            "n_gallery": 4,
            "excluded_pairs": 0,
        }
    )
    np.testing.assert_array_equal(result.ranking, [[0, 1, 2, 3], [3, 2, 1, 0], [3, 2, 1, 0]])
    np.testing.assert_allclose(result.cmc, [2 / 3, 2 / 3, 1, 1])
    assert result.scores.dtype == np.float32
    np.testing.assert_allclose(
        result.scores[0], [_cos(10), _cos(20), _cos(50), _cos(80)], rtol=1e-6
    )
    assert result.query_labels == ("A", "B", "C")
    assert result.gallery_labels == ("A", "B", "A", "C")
    np.testing.assert_array_equal(result.known, [True, True, True])


def test_excluding_the_same_encounter_matches_hand_computation() -> None:
    result = evaluate_embeddings(METADATA, PROTOCOL, EMBEDDINGS, exclude_same=("encounter",))
    metrics = result.metrics
    assert metrics == pytest.approx(
        {
            "top1": 0.0,
            "top5": 1.0,
            "top10": 1.0,
            "mAP": 5 / 12,
            "mINP": 5 / 12,
            "BAKS": 0.0,
            "BAUS": 1.0,
            "new_auroc": 1.0,
            "threshold": _cos(40),
            "threshold_fpr": 0.05,
            "open_score": 0.0,
            "n_queries": 3,
            "n_known_queries": 2,
            "n_new_queries": 1,
            "n_gallery": 4,
            "excluded_pairs": 2,
        },
        rel=1e-6,
    )
    assert metrics["threshold"] > float(result.scores[2, 2])  # q2's top-1 is called new
    valid = np.isfinite(result.scores)
    assert metrics["threshold"] == threshold_at_fpr(
        np.where(valid, result.scores, 0),
        result.query_labels,
        result.gallery_labels,
        fpr=0.05,
        valid=valid,
    )
    assert result.excluded_pairs == 2
    # q0 ranks the next gallery item first once its same-encounter copy is excluded.
    np.testing.assert_array_equal(result.ranking, [[1, 2, 3, -1], [3, 2, 1, 0], [2, 1, 0, -1]])
    assert result.scores[0, 0] == -np.inf
    assert result.scores[2, 3] == -np.inf
    assert np.isfinite(np.delete(result.scores.ravel(), [0, 11])).all()
    np.testing.assert_array_equal(result.known, [True, True, False])
    np.testing.assert_allclose(result.cmc, [0, 1 / 2, 1, 1])


def test_given_threshold_is_used_and_recorded() -> None:
    result = evaluate_embeddings(
        METADATA, PROTOCOL, EMBEDDINGS, exclude_same=("encounter",), threshold=0.95
    )
    # q0 (cos 20 = 0.940) is called new, q1 (cos 10) accepted as C: both wrong; q2 new: right.
    assert result.metrics["threshold"] == 0.95
    assert "threshold_fpr" not in result.metrics
    assert result.metrics["BAKS"] == 0.0
    assert result.metrics["BAUS"] == 1.0


def test_open_set_flag() -> None:
    closed = evaluate_embeddings(
        METADATA, PROTOCOL, EMBEDDINGS, exclude_same=("encounter",), open_set=False
    )
    assert not {"BAKS", "BAUS", "new_auroc", "threshold"} & set(closed.metrics)
    assert closed.metrics["n_new_queries"] == 1
    with pytest.raises(ConfigError, match="every query is known"):
        evaluate_embeddings(METADATA, PROTOCOL, EMBEDDINGS, open_set=True)
    with pytest.raises(ConfigError, match="threshold was given with open_set=False"):
        evaluate_embeddings(METADATA, PROTOCOL, EMBEDDINGS, threshold=0.5, open_set=False)
    # A closed-set evaluation with a threshold reports BAKS at it.
    with_threshold = evaluate_embeddings(METADATA, PROTOCOL, EMBEDDINGS, threshold=0.5)
    assert with_threshold.metrics["threshold"] == 0.5
    # q0 -> A (right), q1 -> C (wrong), q2 -> C (right): mean over A, B, C = 2/3.
    assert with_threshold.metrics["BAKS"] == pytest.approx(2 / 3)
    assert "BAUS" not in with_threshold.metrics


@pytest.mark.parametrize(
    ("angle_deg", "expected_auroc"),
    [
        (45, 1.0),  # top-1 cos 15 is below every known top-1 (cos 10)
        (0, 0.0),  # top-1 cos 0 = 1 is above every known top-1
    ],
)
def test_unknown_query_makes_an_open_set_evaluation(
    angle_deg: float, expected_auroc: float
) -> None:
    metadata = pd.concat([METADATA, _metadata([("q3", "unknown", "")])], ignore_index=True)
    protocol = Protocol(("q0", "q1", "q2", "q3"), PROTOCOL.gallery_ids, "test", "gallery")
    embeddings = _embeddings(
        {"g0": 0, "g1": 30, "g2": 60, "g3": 90, "q0": 10, "q1": 80, "q2": 100, "q3": angle_deg}
    )
    result = evaluate_embeddings(metadata, protocol, embeddings)
    assert result.metrics["n_new_queries"] == 1
    assert {"BAKS", "BAUS", "new_auroc", "threshold"} <= set(result.metrics)
    np.testing.assert_array_equal(result.known, [True, True, True, False])
    assert result.metrics["new_auroc"] == pytest.approx(expected_auroc)


def test_exclusion_uses_any_listed_column_and_empty_cells_never_match() -> None:
    metadata = METADATA.assign(
        camera=["c1", "c1", "c2", "", "c3", "c4", "c5"],
        sequence=["s1", "", "s2", "", "s2", "s9", ""],
    )
    result = evaluate_embeddings(
        metadata, PROTOCOL, EMBEDDINGS, exclude_same=("camera", "sequence")
    )
    # Metadata order g0 q0 g1 q1 g2 q2 g3: q0 shares camera c1 with g0; q2 shares nothing. The
    # empty sequences of q0, q1 and g3 do not match (if they did, 3 pairs would be excluded).
    assert result.excluded_pairs == 1
    assert result.scores[0, 0] == -np.inf
    assert np.isfinite(np.delete(result.scores.ravel(), [0])).all()
    # A shared value of the second column excludes too: q1 gets the sequence of g1 and g2.
    metadata.loc[metadata["image_id"] == "q1", "sequence"] = "s2"
    result = evaluate_embeddings(
        metadata, PROTOCOL, EMBEDDINGS, exclude_same=("camera", "sequence")
    )
    assert result.excluded_pairs == 3
    assert result.scores[1, 1] == result.scores[1, 2] == -np.inf


def test_joined_key_excludes_only_when_every_column_agrees() -> None:
    metadata = METADATA.assign(
        camera=["c1", "c1", "c1", "c2", "c1", "c1", ""],
        sequence=["s1", "s1", "s2", "s2", "s1", "s2", "s3"],
    )
    # Metadata order g0 q0 g1 q1 g2 q2 g3. camera+sequence: q0 (c1,s1) matches g0 and g2;
    # q1 (c2,s2) matches nothing (g1 is c1,s2); q2 (c1,s2) matches g1; g3 has an empty camera.
    result = evaluate_embeddings(metadata, PROTOCOL, EMBEDDINGS, exclude_same=("camera+sequence",))
    assert result.excluded_pairs == 3
    assert result.scores[0, 0] == result.scores[0, 2] == result.scores[2, 1] == -np.inf
    # The same columns listed separately exclude a pair when either one agrees.
    separate = evaluate_embeddings(
        metadata, PROTOCOL, EMBEDDINGS, exclude_same=("camera", "sequence")
    )
    assert separate.excluded_pairs == 7  # q0: g0 g1 g2; q1: g1; q2: g0 g1 g2


def test_missing_exclusion_column_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="column 'camera' is not a metadata column"):
        evaluate_embeddings(METADATA, PROTOCOL, EMBEDDINGS, exclude_same=("camera",))


def test_query_with_nothing_left_to_compare_raises_config_error() -> None:
    metadata = METADATA.assign(site=["x"] * len(METADATA))
    with pytest.raises(ConfigError, match=r"3 query image\(s\) share site with every gallery"):
        evaluate_embeddings(metadata, PROTOCOL, EMBEDDINGS, exclude_same=("site",))


def test_missing_embeddings_raise_config_error_naming_them() -> None:
    partial = _embeddings({"g0": 0, "g1": 30, "g2": 60, "q0": 10, "q1": 80, "q2": 100})
    with pytest.raises(ConfigError, match=r"1 gallery image\(s\) have no embedding.*'g3'.*embed"):
        evaluate_embeddings(METADATA, PROTOCOL, partial)


def test_protocol_ids_missing_from_metadata_raise_data_error() -> None:
    protocol = Protocol(("q0", "zz"), PROTOCOL.gallery_ids, "test", "gallery")
    with pytest.raises(DataError, match=r"1 query image id\(s\) are not in the metadata.*'zz'"):
        evaluate_embeddings(METADATA, protocol, EMBEDDINGS)


def test_ties_are_broken_by_gallery_order() -> None:
    embeddings = _embeddings({"g0": 0, "g1": 90, "g2": 90, "g3": 90, "q0": 90, "q1": 0, "q2": 90})
    result = evaluate_embeddings(METADATA, PROTOCOL, embeddings)
    # q0 (A) and q2 (C) tie g1 (B), g2 (A), g3 (C) at cosine 1: gallery order ranks B first,
    # so both top-1 are wrong (another tie rule could pick g2 for q0 or g3 for q2); q1 (B)
    # ranks g0 (A) first. top1 = 0, top5 = 1.
    np.testing.assert_array_equal(result.ranking, [[1, 2, 3, 0], [0, 1, 2, 3], [1, 2, 3, 0]])
    assert result.metrics["top1"] == 0.0
    assert result.metrics["top5"] == 1.0


def test_ranking_equals_a_full_stable_sort_with_many_ties() -> None:
    rng = np.random.default_rng(5)
    n_queries, n_gallery = 12, 30
    rows = [(f"q{i}", f"id{rng.integers(4)}", f"e{i % 3}") for i in range(n_queries)]
    rows += [(f"g{i}", f"id{rng.integers(4)}", "e0" if i < 25 else "") for i in range(n_gallery)]
    metadata = _metadata(rows)
    # Angles on a 30-degree grid: equal vectors give exactly equal scores, so ties everywhere.
    angles = {image_id: 30.0 * rng.integers(12) for image_id, _, _ in rows}
    protocol = Protocol(
        tuple(f"q{i}" for i in range(n_queries)),
        tuple(f"g{i}" for i in range(n_gallery)),
        "test",
        "gallery",
    )
    result = evaluate_embeddings(
        metadata, protocol, _embeddings(angles), exclude_same=("encounter",), open_set=False
    )
    expected = np.argsort(-result.scores, axis=1, kind="stable")[:, :10]
    expected = np.where(np.isfinite(np.take_along_axis(result.scores, expected, 1)), expected, -1)
    np.testing.assert_array_equal(result.ranking, expected)
    # Queries of encounter e0 keep only the 5 gallery items without an encounter.
    assert (result.ranking[0, 5:] == -1).all()
    assert (result.ranking[1] >= 0).all()


def test_protocol_prefers_gallery_rows_over_train_and_ignores_val() -> None:
    metadata = _metadata([(f"i{k}", f"id{k % 2}", "") for k in range(7)])
    split = pd.DataFrame(
        {
            "image_id": ["i6", "i5", "i4", "i3", "i2", "i1", "i0"],
            "split": ["gallery", "val", "test", "query", "gallery", "train", "test"],
        }
    )
    protocol = protocol_from_split(metadata, split)
    assert protocol == Protocol(("i0", "i3", "i4"), ("i2", "i6"), "query+test", "gallery")


def test_protocol_falls_back_to_train_rows() -> None:
    metadata = _metadata([(f"i{k}", f"id{k % 2}", "") for k in range(5)])
    split = pd.DataFrame(
        {"image_id": ["i0", "i1", "i2", "i3"], "split": ["train", "test", "val", "train"]}
    )
    protocol = protocol_from_split(metadata, split)
    assert protocol == Protocol(("i1",), ("i0", "i3"), "test", "train")


def test_protocol_errors() -> None:
    metadata = _metadata([(f"i{k}", "a", "") for k in range(3)])
    with pytest.raises(ConfigError, match="no query rows"):
        protocol_from_split(metadata, pd.DataFrame({"image_id": ["i0"], "split": ["train"]}))
    with pytest.raises(ConfigError, match="no gallery rows"):
        protocol_from_split(metadata, pd.DataFrame({"image_id": ["i0"], "split": ["query"]}))
    with pytest.raises(DataError, match=r"1 image id\(s\) not in the metadata, e.g. 'x9'"):
        protocol_from_split(
            metadata, pd.DataFrame({"image_id": ["i0", "x9"], "split": ["train", "test"]})
        )


def test_protocol_rejects_overlapping_or_repeated_ids() -> None:
    with pytest.raises(ConfigError, match="1 image id\\(s\\) are both query and gallery"):
        Protocol(("a", "b"), ("b", "c"), "test", "train")
    with pytest.raises(ConfigError, match="gallery image id 'c' is listed more than once"):
        Protocol(("a",), ("c", "d", "c"), "test", "train")
    with pytest.raises(ConfigError, match="needs queries and gallery items, got 0 queries"):
        Protocol((), ("c",), "test", "train")


def test_split_from_column_equals_the_split_file(tmp_path: Path) -> None:
    metadata = _metadata(
        [(f"i{k}", "a", "") for k in range(4)], fold=["train", "test", "val", "gallery"]
    )
    path = tmp_path / "split.csv"
    metadata[["image_id", "fold"]].rename(columns={"fold": "split"}).to_csv(path, index=False)
    from_column = split_from_column(metadata, "fold")
    pd.testing.assert_frame_equal(from_column, read_split(path, metadata=metadata))
    protocol = protocol_from_split(metadata, from_column)
    assert protocol == Protocol(("i1",), ("i3",), "test", "gallery")


def test_split_from_column_errors_name_column_and_row() -> None:
    metadata = _metadata([(f"i{k}", "a", "") for k in range(4)], fold=["train", "test", "tset", ""])
    with pytest.raises(
        DataError, match=r"metadata column 'fold': row 3 \(line 4\): split value 'tset'"
    ):
        split_from_column(metadata, "fold")
    metadata.loc[2, "fold"] = "val"
    with pytest.raises(DataError, match=r"row 4 \(line 5\): split value ''"):
        split_from_column(metadata, "fold")
    with pytest.raises(ConfigError, match="split column 'nope' is not a metadata column"):
        split_from_column(metadata, "nope")
    duplicated = _metadata([("i0", "a", ""), ("i0", "a", "")], fold=["train", "test"])
    with pytest.raises(DataError, match=r"row 2 \(line 3\): image_id 'i0' repeats"):
        split_from_column(duplicated, "fold")


def test_inputs_are_not_modified() -> None:
    metadata = METADATA.copy()
    vectors = EMBEDDINGS.vectors.copy()
    evaluate_embeddings(metadata, PROTOCOL, EMBEDDINGS, exclude_same=("encounter",))
    pd.testing.assert_frame_equal(metadata, METADATA)
    np.testing.assert_array_equal(EMBEDDINGS.vectors, vectors)


def test_evaluate_scores_equals_evaluate_embeddings_on_the_same_cosines() -> None:
    result = evaluate_embeddings(METADATA, PROTOCOL, EMBEDDINGS)
    angles = {"g0": 0, "g1": 30, "g2": 60, "g3": 90, "q0": 10, "q1": 80, "q2": 100}
    cosines = np.array(
        [[_cos(angles[q] - angles[g]) for g in PROTOCOL.gallery_ids] for q in PROTOCOL.query_ids],
        dtype=np.float32,
    )
    again = evaluate_scores(METADATA, PROTOCOL, cosines)
    assert again.metrics == pytest.approx(result.metrics)
    # Any monotone re-scoring of the rows gives the same ranking metrics.
    shifted = evaluate_scores(METADATA, PROTOCOL, 10 + 3 * cosines, open_set=False)
    assert shifted.metrics["mAP"] == pytest.approx(result.metrics["mAP"])


def test_evaluate_scores_rejects_a_wrong_shape_or_nan() -> None:
    with pytest.raises(ConfigError, match=r"scores of shape \(2, 4\)"):
        evaluate_scores(METADATA, PROTOCOL, np.zeros((2, 4), np.float32))
    scores = np.zeros((3, 4), np.float32)
    scores[1, 2] = np.nan
    with pytest.raises(ConfigError, match="query 'q1' and gallery item 'g2' is NaN"):
        evaluate_scores(METADATA, PROTOCOL, scores)


def test_sample_queries_is_deterministic_and_keeps_order() -> None:
    protocol = Protocol(tuple(f"q{i}" for i in range(50)), ("g0",), "test", "gallery")
    sample = protocol.sample_queries(10)
    assert len(sample.query_ids) == 10 and sample.gallery_ids == ("g0",)
    assert list(sample.query_ids) == [q for q in protocol.query_ids if q in sample.query_ids]
    assert sample == protocol.sample_queries(10)
    assert sample != protocol.sample_queries(10, seed=1)
    assert set(protocol.sample_queries(5).query_ids) <= set(sample.query_ids)  # nested
    assert protocol.sample_queries(99) is protocol
    with pytest.raises(ConfigError, match=">= 1"):
        protocol.sample_queries(0)
