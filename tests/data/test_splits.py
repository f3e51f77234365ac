"""Tests for wildreid.data.splits: split kinds, groups, unknowns, determinism and split files."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from wildreid.data.splits import (
    SPLIT_KINDS,
    SplitConfig,
    make_split,
    read_split,
    summarize_split,
    time_cutoff,
    write_split,
)
from wildreid.errors import ConfigError, DataError, UnknownComponentError

# --- helpers ---------------------------------------------------------------------------------


def table(counts: dict[str, int], **extra: list[str]) -> pd.DataFrame:
    """A metadata table with ``counts[identity]`` images per identity, ids ``<identity>_<k>``."""
    identities = [name for name, n in counts.items() for _ in range(n)]
    image_ids = [f"{name}_{k}" for name, n in counts.items() for k in range(n)]
    frame = pd.DataFrame(
        {"image_id": image_ids, "identity": identities, "path": [f"{i}.jpg" for i in image_ids]}
    )
    for column, values in extra.items():
        frame[column] = values
    return frame


def sides(metadata: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """The split joined with the metadata (one row per split row)."""
    return split.merge(metadata, on="image_id", how="left", validate="one_to_one")


def identities_on(joined: pd.DataFrame, side: str) -> set[str]:
    return set(joined.loc[joined["split"] == side, "identity"])


def assert_no_straddle(joined: pd.DataFrame, column: str) -> None:
    grouped = joined[joined[column] != ""]
    per_group = grouped.groupby(column)["split"].nunique()
    assert (per_group == 1).all(), per_group[per_group > 1]


def shuffled(frame: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def as_mapping(split: pd.DataFrame) -> dict[str, str]:
    return dict(zip(split["image_id"], split["split"], strict=True))


def hash_order(keys: list[str], seed: int, kind: str) -> list[str]:
    """The documented order: sha256 of seed, kind and key joined by the unit separator."""
    return sorted(
        keys, key=lambda k: (hashlib.sha256(f"{seed}\x1f{kind}\x1f{k}".encode()).hexdigest(), k)
    )


def many_identities(n: int = 40, per: int = 4) -> pd.DataFrame:
    return table({f"id{i:02d}": per for i in range(n)})


# --- closed ----------------------------------------------------------------------------------


def test_closed_four_images_split_two_and_two_and_singletons_stay_train() -> None:
    metadata = table({"a": 4, "b": 4, "c": 4, "solo": 1})
    split = make_split(metadata, config=SplitConfig(kind="closed"))
    joined = sides(metadata, split)
    per = joined.groupby(["identity", "split"]).size().unstack(fill_value=0)
    assert per.loc[["a", "b", "c"], "test"].tolist() == [2, 2, 2]
    assert per.loc[["a", "b", "c"], "train"].tolist() == [2, 2, 2]
    assert joined.loc[joined["identity"] == "solo", "split"].tolist() == ["train"]
    summary = summarize_split(metadata, split)
    assert summary.singleton_identities == 1
    assert summary.new_identities == 0
    assert summary.images == {"train": 7, "test": 6}
    assert summary.identities == {"train": 4, "test": 3}


@pytest.mark.parametrize(
    ("n", "fraction", "expected_test"),
    [
        (4, 0.5, 2),
        (3, 0.5, 2),  # 1.5 rounds half up
        (5, 0.5, 3),  # 2.5 rounds half up (not to even)
        (2, 0.1, 1),  # 0.2 -> 0, clamped up so test gets one
        (5, 0.9, 4),  # 4.5 -> 5, clamped down so train keeps one
        (100, 0.145, 15),  # exactly 14.5 in decimal; float arithmetic would give 14
    ],
)
def test_closed_rounding_is_half_up_and_clamped(
    n: int, fraction: float, expected_test: int
) -> None:
    metadata = table({"x": n, "y": 2})
    split = make_split(metadata, config=SplitConfig(kind="closed", test_fraction=fraction))
    joined = sides(metadata, split)
    assert int(((joined["identity"] == "x") & (joined["split"] == "test")).sum()) == expected_test


def test_output_keeps_metadata_row_order_and_does_not_mutate_input() -> None:
    metadata = shuffled(table({"a": 3, "b": 5, "unknown": 2}))
    before = metadata.copy()
    split = make_split(metadata, config=SplitConfig(kind="closed"))
    pd.testing.assert_frame_equal(metadata, before)
    assert list(split.columns) == ["image_id", "split"]
    assert split["image_id"].tolist() == [
        i
        for i, who in zip(metadata["image_id"], metadata["identity"], strict=True)
        if who != "unknown"
    ]
    assert list(split.index) == list(range(len(split)))
    assert set(split["split"]) == {"train", "test"}


def test_split_with_an_empty_side_raises() -> None:
    metadata = table({"a": 1, "b": 1, "c": 1})
    with pytest.raises(DataError, match="test side empty"):
        make_split(metadata, config=SplitConfig(kind="closed"))


# --- open ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "expected_new"), [(0.2, 2), (0.25, 3), (0.01, 1)])
def test_open_new_identities_only_on_test(fraction: float, expected_new: int) -> None:
    metadata = many_identities(10, 3)
    split = make_split(metadata, config=SplitConfig(kind="open", new_fraction=fraction))
    joined = sides(metadata, split)
    new = identities_on(joined, "test") - identities_on(joined, "train")
    assert len(new) == expected_new  # round_half_up(fraction * 10), at least 1
    assert new == set(hash_order(sorted(set(metadata["identity"])), 0, "open")[:expected_new])
    assert summarize_split(metadata, split).new_identities == expected_new
    rest = joined[~joined["identity"].isin(new)]
    per = rest.groupby("identity")["split"].value_counts().unstack(fill_value=0)
    assert (per["test"] == 2).all()  # 3 images, 0.5 -> 1.5 -> 2 on test
    assert (per["train"] == 1).all()


def test_open_needs_two_identities() -> None:
    with pytest.raises(DataError, match="at least 2 known identities"):
        make_split(table({"a": 4}), config=SplitConfig(kind="open"))


# --- disjoint --------------------------------------------------------------------------------


def test_disjoint_assigns_identities_wholly_by_identity_share() -> None:
    metadata = table({f"id{i}": 2 + i for i in range(10)})
    split = make_split(metadata, config=SplitConfig(kind="disjoint", test_fraction=0.3))
    joined = sides(metadata, split)
    assert identities_on(joined, "train").isdisjoint(identities_on(joined, "test"))
    assert len(identities_on(joined, "test")) == 3
    assert len(identities_on(joined, "train")) == 7


def test_disjoint_keeps_identities_linked_by_a_group_together() -> None:
    metadata = table(
        {"a": 2, "b": 2, "c": 2, "d": 2, "e": 2, "f": 2},
        encounter=["ab", "a1", "ab", "b1", "c1", "c2", "d1", "d2", "e1", "e2", "f1", "f2"],
    )
    for seed in range(8):
        config = SplitConfig(kind="disjoint", seed=seed, group_column="encounter")
        joined = sides(metadata, make_split(metadata, config=config))
        assert_no_straddle(joined, "encounter")
        assert identities_on(joined, "train").isdisjoint(identities_on(joined, "test"))
        assert len({joined.loc[joined["identity"] == who, "split"].iloc[0] for who in "ab"}) == 1
        assert len(identities_on(joined, "test")) == 3


def test_disjoint_takes_the_first_block_when_none_fits_the_target() -> None:
    # two blocks of three linked identities; the target round(0.3 * 6) = 2 fits neither
    metadata = table(
        {"a": 2, "b": 2, "c": 2, "d": 2, "e": 2, "f": 2},
        encounter=["x", "", "x", "y", "y", "", "z", "", "z", "w", "w", ""],
    )
    config = SplitConfig(kind="disjoint", test_fraction=0.3, group_column="encounter")
    joined = sides(metadata, make_split(metadata, config=config))
    first = hash_order(["a", "d"], 0, "disjoint")[0]
    assert identities_on(joined, "test") == ({"a", "b", "c"} if first == "a" else {"d", "e", "f"})
    assert identities_on(joined, "train").isdisjoint(identities_on(joined, "test"))


def test_disjoint_with_every_identity_linked_raises() -> None:
    metadata = table({"a": 2, "b": 2}, encounter=["g", "g", "g", "h"])
    config = SplitConfig(kind="disjoint", group_column="encounter")
    with pytest.raises(DataError, match="separable"):
        make_split(metadata, config=config)


# --- time ------------------------------------------------------------------------------------


def dated(days: list[int], identities: list[str] | None = None, **extra: list[str]) -> pd.DataFrame:
    n = len(days)
    frame = pd.DataFrame(
        {
            "image_id": [f"img{k}" for k in range(n)],
            "identity": identities or [f"id{k % 3}" for k in range(n)],
            "path": [f"img{k}.jpg" for k in range(n)],
            "date": [f"2024-01-{d:02d}" if d else "" for d in days],
        }
    )
    for column, values in extra.items():
        frame[column] = values
    return frame


def test_time_split_chooses_the_cutoff_quantile() -> None:
    metadata = shuffled(dated(list(range(1, 11))))
    config = SplitConfig(kind="time", test_fraction=0.3)
    joined = sides(metadata, make_split(metadata, config=config))
    train = joined.loc[joined["split"] == "train", "date"]
    test = joined.loc[joined["split"] == "test", "date"]
    assert train.max() < test.min()
    assert sorted(test) == ["2024-01-08", "2024-01-09", "2024-01-10"]
    assert time_cutoff(metadata, config=config) == dt.datetime(2024, 1, 8)


def test_time_cutoff_tie_goes_to_the_later_date() -> None:
    # 10 images, target 5 on test: cutoff day 2 gives 6, day 3 gives 4; both are 1 off.
    metadata = dated([1, 1, 1, 1, 2, 2, 3, 3, 3, 3])
    config = SplitConfig(kind="time")
    assert time_cutoff(metadata, config=config) == dt.datetime(2024, 1, 3)
    split = make_split(metadata, config=config)
    assert split["split"].tolist() == ["train"] * 6 + ["test"] * 4


def test_time_split_with_a_given_cutoff_date_or_datetime() -> None:
    metadata = dated(list(range(1, 11)))
    for cutoff in (dt.date(2024, 1, 5), dt.datetime(2024, 1, 4, 12, 0)):
        split = make_split(metadata, config=SplitConfig(kind="time", cutoff=cutoff))
        assert split["split"].tolist() == ["train"] * 4 + ["test"] * 6


def test_time_split_new_identities_are_reported() -> None:
    metadata = dated([1, 2, 3, 4], identities=["a", "a", "a", "b"])
    split = make_split(metadata, config=SplitConfig(kind="time", cutoff=dt.date(2024, 1, 3)))
    assert summarize_split(metadata, split).new_identities == 1


def test_time_split_undated_rows_raise_or_go_to_train() -> None:
    metadata = dated([1, 0, 3, 4, 0, 6])
    with pytest.raises(DataError, match=r"row 2 \(line 3\), row 5 \(line 6\): no date"):
        make_split(metadata, config=SplitConfig(kind="time"))
    split = make_split(metadata, config=SplitConfig(kind="time", undated="train"))
    assert as_mapping(split)["img1"] == "train"
    assert as_mapping(split)["img4"] == "train"
    assert as_mapping(split)["img5"] == "test"


def test_time_split_bad_dates() -> None:
    with pytest.raises(DataError, match=r"row 2 \(line 3\), column 'date'"):
        make_split(
            dated([1, 2, 3]).assign(date=["2024-01-01", "May 3", ""]),
            config=SplitConfig(kind="time"),
        )
    mixed = dated([1, 2, 3]).assign(date=["2024-01-01", "2024-01-02T00:00:00+02:00", "2024-01-03"])
    with pytest.raises(DataError, match="mix time zones"):
        make_split(mixed, config=SplitConfig(kind="time"))
    with pytest.raises(DataError, match="at least 2 distinct dates"):
        make_split(dated([4, 4, 4]), config=SplitConfig(kind="time"))
    aware_cutoff = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="must not have a time zone"):
        make_split(dated([1, 2, 3]), config=SplitConfig(kind="time", cutoff=aware_cutoff))


def test_time_split_with_aware_dates() -> None:
    metadata = dated([1, 2, 3]).assign(
        date=["2024-01-01T10:00+00:00", "2024-01-01T11:30+02:00", "2024-01-01T10:00+01:00"]
    )
    cutoff = dt.datetime(2024, 1, 1, 9, 45, tzinfo=dt.UTC)
    split = make_split(metadata, config=SplitConfig(kind="time", cutoff=cutoff))
    # in UTC the rows are 10:00, 09:30 and 09:00
    assert split["split"].tolist() == ["test", "train", "train"]


def test_time_split_needs_a_date_column() -> None:
    with pytest.raises(ConfigError, match="'date' column"):
        make_split(table({"a": 2, "b": 2}), config=SplitConfig(kind="time"))


def test_time_split_group_goes_to_the_side_of_its_earliest_date() -> None:
    metadata = dated(
        [1, 2, 5, 6, 3, 9, 10],
        identities=["a", "a", "a", "b", "b", "b", "c"],
        clip=["", "", "g1", "g1", "g2", "g2", ""],
    )
    config = SplitConfig(kind="time", cutoff=dt.date(2024, 1, 6), group_column="clip")
    split = make_split(metadata, config=config)
    # g1 starts on day 5 (train) though one row is dated day 6; g2 starts on day 3 (train)
    assert split["split"].tolist() == ["train"] * 6 + ["test"]


# --- groups ----------------------------------------------------------------------------------


def grouped_table() -> pd.DataFrame:
    """Identities with several encounters of sizes 1..4, plus empty encounters (own groups)."""
    rows = []
    for i in range(12):
        sizes = [1 + (i + k) % 4 for k in range(2 + i % 4)]
        k = 0
        for g, size in enumerate(sizes):
            for _ in range(size):
                rows.append((f"id{i}_{k}", f"id{i}", f"enc{i}_{g}"))
                k += 1
        rows.append((f"id{i}_{k}", f"id{i}", ""))
    return pd.DataFrame(rows, columns=["image_id", "identity", "encounter"])


@pytest.mark.parametrize("kind", ["closed", "open", "disjoint"])
def test_groups_never_straddle(kind: str) -> None:
    metadata = grouped_table()
    for seed in range(5):
        config = SplitConfig(kind=kind, seed=seed, group_column="encounter")
        joined = sides(metadata, make_split(metadata, config=config))
        assert_no_straddle(joined, "encounter")


def test_closed_groups_are_the_units_within_an_identity() -> None:
    # "a" has 4 encounters (plus one row without encounter: a fifth unit) -> 3 units to test.
    encounter = ["e1", "e2", "e2", "e3", "e3", "e3", "e4", "e4", "e4", "e4", ""]
    metadata = table({"a": 11, "b": 2}, encounter=[*encounter, "", ""])
    config = SplitConfig(kind="closed", group_column="encounter")
    joined = sides(metadata, make_split(metadata, config=config))
    a = joined[joined["identity"] == "a"].assign(
        unit=lambda f: f["encounter"].where(f["encounter"] != "", f["image_id"])
    )
    assert a.loc[a["split"] == "test", "unit"].nunique() == 3
    assert a.loc[a["split"] == "train", "unit"].nunique() == 2


def test_closed_group_with_two_identities_follows_the_smallest_identity() -> None:
    metadata = table({"a": 4, "b": 4}, encounter=["g", "a1", "a2", "a3", "g", "b1", "b2", "b3"])
    for seed in range(10):
        config = SplitConfig(kind="closed", seed=seed, group_column="encounter")
        joined = sides(metadata, make_split(metadata, config=config))
        assert_no_straddle(joined, "encounter")
        a = joined[joined["identity"] == "a"]["split"].value_counts()
        assert a["train"] == 2 and a["test"] == 2  # "a" owns g, so its quota holds


def test_open_group_with_a_new_identity_goes_wholly_to_test() -> None:
    metadata = many_identities(10, 3).assign(encounter="")
    metadata.loc[metadata["image_id"].isin(["id00_0", "id01_0"]), "encounter"] = "shared"
    for seed in range(40):
        config = SplitConfig(kind="open", seed=seed, group_column="encounter")
        joined = sides(metadata, make_split(metadata, config=config))
        assert_no_straddle(joined, "encounter")
        expected_new = set(hash_order(sorted(set(metadata["identity"])), seed, "open")[:2])
        assert expected_new <= identities_on(joined, "test") - identities_on(joined, "train")
        if expected_new & {"id00", "id01"}:
            assert set(joined.loc[joined["encounter"] == "shared", "split"]) == {"test"}


def test_group_column_must_exist() -> None:
    with pytest.raises(ConfigError, match="group_column 'encounter'"):
        make_split(
            table({"a": 2, "b": 2}), config=SplitConfig(kind="closed", group_column="encounter")
        )


# --- unknown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["closed", "open", "disjoint"])
def test_unknown_rows_excluded_or_on_test(kind: str) -> None:
    metadata = shuffled(table({**{f"id{i}": 4 for i in range(6)}, "unknown": 3}))
    excluded = make_split(metadata, config=SplitConfig(kind=kind))
    assert not excluded["image_id"].str.startswith("unknown").any()
    summary = summarize_split(metadata, excluded)
    assert (summary.unknown_images, summary.excluded_unknown, summary.excluded_rows) == (0, 3, 3)
    on_test = make_split(metadata, config=SplitConfig(kind=kind, unknown="test"))
    unknown = on_test[on_test["image_id"].str.startswith("unknown")]
    assert unknown["split"].tolist() == ["test"] * 3
    known = on_test[~on_test["image_id"].str.startswith("unknown")].reset_index(drop=True)
    pd.testing.assert_frame_equal(known, excluded)  # unknown rows do not move the others
    assert summarize_split(metadata, on_test).unknown_images == 3


def test_unknown_rows_in_a_train_group_are_left_out() -> None:
    metadata = table({"a": 2, "b": 2, "unknown": 2}, encounter=["ga", "", "gb", "", "ga", "u"])
    config = SplitConfig(kind="closed", unknown="test", group_column="encounter")
    joined = sides(metadata, make_split(metadata, config=config))
    assert "unknown" not in identities_on(joined, "train")
    assert_no_straddle(joined, "encounter")
    ga_side = joined.loc[joined["image_id"] == "a_0", "split"].item()
    assert ("unknown_0" in set(joined["image_id"])) == (ga_side == "test")
    assert joined.loc[joined["image_id"] == "unknown_1", "split"].item() == "test"


def test_unknown_rows_before_the_time_cutoff_are_left_out() -> None:
    metadata = dated([1, 2, 3, 4], identities=["a", "unknown", "a", "unknown"])
    config = SplitConfig(kind="time", cutoff=dt.date(2024, 1, 3), unknown="test")
    assert as_mapping(make_split(metadata, config=config)) == {
        "img0": "train",
        "img2": "test",
        "img3": "test",
    }


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["closed", "open", "disjoint"])
def test_split_is_deterministic_and_independent_of_row_order(kind: str) -> None:
    metadata = many_identities()
    config = SplitConfig(kind=kind, seed=3)
    first = make_split(metadata, config=config)
    pd.testing.assert_frame_equal(first, make_split(metadata, config=config))
    assert as_mapping(make_split(shuffled(metadata), config=config)) == as_mapping(first)
    other = make_split(metadata, config=SplitConfig(kind=kind, seed=4))
    assert as_mapping(other) != as_mapping(first)


def test_grouped_split_is_independent_of_row_order() -> None:
    metadata = grouped_table()
    config = SplitConfig(kind="closed", group_column="encounter", seed=11)
    expected = as_mapping(make_split(metadata, config=config))
    for seed in range(3):
        assert as_mapping(make_split(shuffled(metadata, seed), config=config)) == expected


def test_hard_coded_assignment_for_seed_zero() -> None:
    # Computed once from the rule sha256(f"{seed}\x1f{kind}\x1f{key}"); a change of rule fails.
    metadata = table({"a": 4, "b": 3, "c": 2})
    closed = make_split(metadata, config=SplitConfig(kind="closed"))
    assert closed["split"].tolist() == EXPECTED_CLOSED
    opened = make_split(metadata, config=SplitConfig(kind="open"))
    assert opened["split"].tolist() == EXPECTED_OPEN
    disjoint = make_split(metadata, config=SplitConfig(kind="disjoint"))
    assert disjoint["split"].tolist() == EXPECTED_DISJOINT


# Rows a_0..a_3, b_0..b_2, c_0, c_1. closed: hash orders a_1 a_2 a_3 a_0 | b_2 b_0 b_1 | c_1 c_0,
# first 2, 2, 1 go to test. open: identity order b a c, so b (round(0.2 * 3) = 1) is new; the
# others split as closed under the "open" hashes. disjoint: order c b a, round(0.5 * 3) = 2 test.
EXPECTED_CLOSED = ["train", "test", "test", "train", "test", "train", "test", "train", "test"]
EXPECTED_OPEN = ["test", "test", "train", "train", "test", "test", "test", "test", "train"]
EXPECTED_DISJOINT = ["train"] * 4 + ["test"] * 5


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["test_fraction", "new_fraction"])
@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, -0.2, 1.5, math.nan, True])
def test_fractions_must_be_inside_zero_one(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        options: dict[str, Any] = {field: value}
        SplitConfig(kind="closed", **options)


def test_unknown_kind_suggests_close_names() -> None:
    with pytest.raises(UnknownComponentError, match="did you mean 'closed'"):
        SplitConfig(kind="closd")
    assert SPLIT_KINDS.names() == ["closed", "disjoint", "open", "time"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"kind": "closed", "unknown": "train"}, "unknown"),
        ({"kind": "time", "undated": "test"}, "undated"),
        ({"kind": "closed", "cutoff": dt.date(2024, 1, 1)}, "cutoff"),
        ({"kind": "closed", "seed": 1.5}, "seed"),
        ({"kind": "closed", "group_column": " "}, "group_column"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SplitConfig(**options)


def test_bad_metadata_names_the_row() -> None:
    metadata = table({"a": 2, "b": 2})
    duplicate = metadata.assign(image_id=["x", "y", "x", "z"])
    with pytest.raises(DataError, match=r"metadata: row 3 \(line 4\): image_id 'x' repeats row 1"):
        make_split(duplicate, config=SplitConfig(kind="closed"))
    with pytest.raises(DataError, match=r"row 2 \(line 3\): identity is empty"):
        make_split(
            metadata.assign(identity=["a", " ", "b", "b"]), config=SplitConfig(kind="closed")
        )
    with pytest.raises(DataError, match="identity"):
        make_split(metadata.drop(columns="identity"), config=SplitConfig(kind="closed"))


# --- split files -----------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path: Path) -> None:
    metadata = table({"a": 4, "b": 4, "unknown": 1})
    split = make_split(metadata, config=SplitConfig(kind="closed", unknown="test"))
    path = tmp_path / "out" / "split.csv"
    write_split(split, path)
    assert path.read_text().splitlines()[0] == "image_id,split"
    pd.testing.assert_frame_equal(read_split(path, metadata=metadata), split)
    assert [p.name for p in path.parent.iterdir()] == ["split.csv"]  # no temporary left


def test_read_split_accepts_synthetic_values_and_summarizes_them(tmp_path: Path) -> None:
    metadata = table({"a": 3, "b": 2, "c": 2})
    path = tmp_path / "split.csv"
    path.write_text(
        "image_id,split\na_0,gallery\na_1,query\na_2,train\nb_0,query\nb_1,val\nc_0,train\n"
    )
    split = read_split(path, metadata=metadata)
    summary = summarize_split(metadata, split)
    assert (summary.reference_side, summary.query_side) == ("gallery", "query")
    assert summary.images == {"train": 2, "gallery": 1, "query": 2, "val": 1}
    assert summary.new_identities == 1  # b is queried but not in the gallery
    assert summary.excluded_rows == 1
    assert any("query: 2 images, 2 identities" in line for line in summary.lines())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_id,side\na_0,train\n", "missing column.*split"),
        ("image_id,split\na_0,train\n,test\n", r"row 2 \(line 3\): image_id is empty"),
        ("image_id,split\na_0,train\na_1,test\na_0,test\n", r"row 3 \(line 4\).*repeats row 1"),
        (
            "image_id,split\na_0,train\na_1,Test\n",
            r"row 2 \(line 3\).*'Test'.*train, test, gallery",
        ),
        (
            "image_id,split\na_0,train\nzz,test\nyy,test\n",
            r"2 image id\(s\).*row 2 \(line 3\) 'zz'",
        ),
        ("", "not a readable CSV"),
    ],
)
def test_read_split_errors_name_file_and_row(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "split.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as caught:
        read_split(path, metadata=table({"a": 2}))
    assert str(path) in str(caught.value)


def test_read_split_missing_file_and_write_split_checks(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_split(tmp_path / "nope.csv")
    bad = pd.DataFrame({"image_id": ["a", "b"], "split": ["train", "holdout"]})
    with pytest.raises(DataError, match="'holdout'"):
        write_split(bad, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_summarize_split_rejects_ids_not_in_metadata() -> None:
    split = pd.DataFrame({"image_id": ["a_0", "ghost"], "split": ["train", "test"]})
    with pytest.raises(DataError, match="'ghost'"):
        summarize_split(table({"a": 2}), split)
