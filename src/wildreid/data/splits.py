"""Deterministic re-identification splits, saved as an ``image_id,split`` CSV.

:func:`make_split` puts each metadata row on ``train`` (the gallery of known individuals) or
``test`` (the queries). ``take(f, n) = round_half_up(f * n)`` on the exact decimal ``f``, clamped
to ``1 .. n - 1`` (0 if ``n < 2``); "first in hash order" is defined under Determinism. Kinds:

* ``closed``: per identity, the first ``take(test_fraction, n)`` of its ``n`` units go to test;
  an identity with one unit stays on train (:attr:`SplitSummary.singleton_identities`).
* ``open``: the first ``take(new_fraction, n_identities)`` identities are new: every unit holding
  one goes to test. The other units are split as ``closed``.
* ``disjoint``: ``take(test_fraction, n_identities)`` identities (an identity share, not an image
  share) go wholly to test: identity blocks (below) are taken in hash order while they fit that
  target; if none fits, the first block is taken.
* ``time``: a unit dated before the cutoff goes to train, on or after it to test. The cutoff is
  ``SplitConfig.cutoff`` (a bare date means midnight) or else the distinct date ``t``, never the
  earliest, whose count of dated rows on or after ``t`` is nearest ``test_fraction`` times all
  dated rows (a tie goes to the later date). Dates are all naive or all time-zone aware. A unit
  without a date raises :class:`DataError`, or goes to train with ``undated="train"``.

**Units.** A unit is one row, or with ``group_column`` all rows sharing a non-empty value (a row
with an empty value is its own unit); a unit never straddles the split. Values are global: the same
value under two identities is one group. A unit's hash key is its group value (a lone row's: its
image id). A unit belongs to its smallest known identity by name (closed, open); identities linked
by shared groups form a block keyed by its smallest identity (disjoint); a unit's date is its
earliest row date (time), so "train dates < test dates" holds for unit dates.

**Unknown animals** (``identity == "unknown"``) never go to train. ``unknown="exclude"`` (default)
leaves them out. ``unknown="test"`` puts them on test, except that an unknown row whose unit lands
on train (e.g. dated before the cutoff) is left out; a unit of unknown rows only goes to test.

**Determinism.** Keys are ordered by ``sha256(f"{seed}\\x1f{kind}\\x1f{key}")`` (hex digest), then
by the key itself: no random generator, so a split depends only on the table's content and the
seed, not on row order, machine or library version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd

from wildreid.data.schema import UNKNOWN_IDENTITY, parse_date
from wildreid.errors import ConfigError, DataError
from wildreid.files import atomic_path
from wildreid.ids import first_repeat
from wildreid.registry import Registry

__all__ = [
    "SPLIT_KINDS",
    "SPLIT_VALUES",
    "SplitConfig",
    "SplitSummary",
    "make_split",
    "read_split",
    "summarize_split",
    "time_cutoff",
    "write_split",
]

SPLIT_VALUES = ("train", "test", "gallery", "query", "val")
_SHOWN = 5
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Assigner = Callable[[pd.DataFrame, "SplitConfig"], dict[str, str]]
SPLIT_KINDS: Registry[Assigner] = Registry("split kind")


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """How to split; the module docstring gives the semantics.

    Attributes:
        kind: ``closed``, ``open``, ``disjoint`` or ``time`` (the names in :data:`SPLIT_KINDS`).
        seed: mixed into every hash; another seed gives another split.
        test_fraction: share of units (closed), identities (disjoint) or dated rows (time) on test.
        new_fraction: share of identities that are new, test-only individuals (open).
        group_column: metadata column whose non-empty values are groups kept on one side.
        unknown: ``exclude`` (leave ``unknown`` rows out) or ``test`` (query-only rows).
        cutoff: first date or date-time of the test side (time); ``None`` picks it.
        undated: ``error`` (raise on undated units) or ``train`` (put them on train) (time).

    Raises:
        ConfigError: a field is invalid (an unknown kind suggests close names).
    """

    kind: str
    seed: int = 0
    test_fraction: float = 0.5
    new_fraction: float = 0.2
    group_column: str | None = None
    unknown: str = "exclude"
    cutoff: dt.date | dt.datetime | None = None
    undated: str = "error"

    def __post_init__(self) -> None:
        SPLIT_KINDS.get(self.kind)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        for name in ("test_fraction", "new_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise ConfigError(
                    f"{name} must be a number strictly between 0 and 1, got {value!r}"
                )
        for name, allowed in (("unknown", ("exclude", "test")), ("undated", ("error", "train"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.group_column is not None and not self.group_column.strip():
            raise ConfigError("group_column is empty; give a column name or None")
        if self.cutoff is not None and self.kind != "time":
            raise ConfigError(f"cutoff only applies to kind 'time', not {self.kind!r}")


@dataclass(frozen=True)
class SplitSummary:
    """Counts describing a split; :meth:`lines` renders them for people.

    Attributes:
        images: rows per split value, in the order of :data:`SPLIT_VALUES`.
        identities: known identities per split value.
        reference_side: ``gallery`` if the split has one, else ``train``.
        query_side: ``query`` if the split has one, else ``test``.
        new_identities: known identities on the query side but not on the reference side.
        singleton_identities: known identities with a single metadata image, on the reference side.
        unknown_images: ``unknown`` rows in the split.
        excluded_unknown: ``unknown`` rows of the metadata left out of the split.
        excluded_rows: metadata rows left out of the split (unknown rows included).
    """

    images: dict[str, int]
    identities: dict[str, int]
    reference_side: str
    query_side: str
    new_identities: int
    singleton_identities: int
    unknown_images: int
    excluded_unknown: int
    excluded_rows: int

    def lines(self) -> list[str]:
        """One human-readable line per fact."""
        out = [f"{s}: {n} images, {self.identities[s]} identities" for s, n in self.images.items()]
        return [
            *out,
            f"new identities (only on {self.query_side}): {self.new_identities}",
            f"single-image identities kept on {self.reference_side}: {self.singleton_identities}",
            f"unknown images: {self.unknown_images} in the split, {self.excluded_unknown} left out",
            f"rows left out in all: {self.excluded_rows}",
        ]


def make_split(metadata: pd.DataFrame, *, config: SplitConfig) -> pd.DataFrame:
    """Split a metadata table; the result has columns ``image_id`` and ``split``.

    Rows keep the metadata's order (left-out rows are dropped); ``split`` is ``train`` or ``test``.

    Raises:
        ConfigError: the group column, or for a time split the date column, is missing; or a
            time cutoff's time-zone awareness differs from the dates'.
        DataError: empty or duplicate image ids, empty identities, bad dates, undated rows, too
            few identities or dates, or a split that would leave a side empty.
    """
    rows = _prepare(metadata, config)
    side = rows["unit"].map(SPLIT_KINDS.get(config.kind)(rows, config))
    keep = rows["known"] | (side == "test")
    split = pd.DataFrame({"image_id": rows["image_id"][keep], "split": side[keep]})
    for name in ("train", "test"):
        if not (split["split"] == name).any():
            raise DataError(
                f"the {config.kind} split leaves the {name} side empty ({len(split)} rows in all); "
                "the table has too few identities, images or dates for it"
            )
    return split.reset_index(drop=True)


def time_cutoff(metadata: pd.DataFrame, *, config: SplitConfig) -> dt.datetime:
    """The cutoff a ``time`` split uses (``config.cutoff``, or the chosen date; UTC if aware).

    Raises:
        ConfigError, DataError: as :func:`make_split`.
    """
    if config.kind != "time":
        raise ConfigError(f"time_cutoff needs kind 'time', not {config.kind!r}")
    _, cutoff, aware = _time_cutoff(_prepare(metadata, config), config)
    return (_EPOCH_UTC if aware else _EPOCH) + dt.timedelta(microseconds=cutoff)


def summarize_split(metadata: pd.DataFrame, split: pd.DataFrame) -> SplitSummary:
    """Count images and identities per side of ``split`` (any :data:`SPLIT_VALUES`).

    Raises:
        DataError: the split is malformed or names image ids missing from the metadata.
    """
    split = _check_split(split, "split table")
    ids, identities = _metadata_columns(metadata, split["image_id"], "split table")
    identity = split["image_id"].map(pd.Series(identities.to_numpy(), index=ids.to_numpy()))
    known = identity != UNKNOWN_IDENTITY
    images = {v: int((split["split"] == v).sum()) for v in SPLIT_VALUES}
    images = {v: n for v, n in images.items() if n}

    def on(side: str) -> set[str]:
        return set(identity[known & (split["split"] == side)])

    reference = "gallery" if "gallery" in images else "train"
    query = "query" if "query" in images else "test"
    counts = identities[identities != UNKNOWN_IDENTITY].value_counts()
    unknown_in = int((~known).sum())
    return SplitSummary(
        images=images,
        identities={v: len(on(v)) for v in images},
        reference_side=reference,
        query_side=query,
        new_identities=len(on(query) - on(reference)),
        singleton_identities=len(set(counts.index[counts == 1]) & on(reference)),
        unknown_images=unknown_in,
        excluded_unknown=int((identities == UNKNOWN_IDENTITY).sum()) - unknown_in,
        excluded_rows=len(ids) - len(split),
    )


def write_split(split: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``split`` atomically as a CSV with columns ``image_id,split``.

    Raises:
        DataError: the table fails the checks of :func:`read_split`.
    """
    checked = _check_split(split, "split table")
    with atomic_path(path) as tmp:
        checked.to_csv(tmp, index=False)


def read_split(
    path: str | os.PathLike[str], *, metadata: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Read a split CSV (columns ``image_id``, ``split``; values from :data:`SPLIT_VALUES`).

    Args:
        path: the CSV file.
        metadata: if given, every image id must be one of its ``image_id`` values.

    Raises:
        DataError: the file is missing or unreadable, lacks a column, has an empty or duplicate
            image id or an unknown split value (the message names the row), or names image ids
            missing from ``metadata``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({type(exc).__name__})") from exc
    split = _check_split(frame, str(path))
    if metadata is not None:
        _metadata_columns(metadata, split["image_id"], str(path))
    return split


def _where(index: int) -> str:
    """The 1-based data row and CSV line of a 0-based row position."""
    return f"row {index + 1} (line {index + 2})"


def _rows_text(indices: Iterable[Any]) -> str:
    listed = [int(i) for i in indices]
    more = f" and {len(listed) - _SHOWN} more" if len(listed) > _SHOWN else ""
    return ", ".join(_where(i) for i in listed[:_SHOWN]) + more


def _cells(column: pd.Series[Any]) -> pd.Series[str]:
    """A column as strings on a fresh 0-based index; missing cells become ``""``."""
    return pd.Series(column.to_numpy(dtype=object), dtype=object).fillna("").astype(str)


def _first(mask: pd.Series[bool]) -> int:
    """The position of the first true value (on a 0-based index, also its label)."""
    return int(mask.to_numpy().argmax())


def _check_ids(ids: pd.Series[str], source: str) -> None:
    empty = ids.str.strip() == ""
    if empty.any():
        raise DataError(f"{source}: {_where(_first(empty))}: image_id is empty")
    repeat = first_repeat(ids)
    if repeat is not None:
        first, at = repeat
        raise DataError(f"{source}: {_where(at)}: image_id {ids[at]!r} repeats row {first + 1}")


def _check_split(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """The ``image_id``, ``split`` columns as strings, after checking them."""
    missing = [c for c in ("image_id", "split") if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}; need image_id,split")
    ids, values = _cells(frame["image_id"]), _cells(frame["split"])
    _check_ids(ids, source)
    bad = ~values.isin(SPLIT_VALUES)
    if bad.any():
        at = _first(bad)
        raise DataError(
            f"{source}: {_where(at)}: split value {values[at]!r} is not one of "
            f"{', '.join(SPLIT_VALUES)}"
        )
    return pd.DataFrame({"image_id": ids, "split": values})


def _metadata_columns(
    metadata: pd.DataFrame, wanted: pd.Series[str] | None = None, source: str = ""
) -> tuple[pd.Series[str], pd.Series[str]]:
    """The checked ``image_id`` and ``identity`` columns; ``wanted`` ids (from ``source``) must
    be among the image ids."""
    missing = [c for c in ("image_id", "identity") if c not in metadata.columns]
    if missing:
        raise DataError(f"metadata: missing column(s) {', '.join(missing)}")
    ids, identities = _cells(metadata["image_id"]), _cells(metadata["identity"])
    _check_ids(ids, "metadata")
    empty = identities.str.strip() == ""
    if empty.any():
        raise DataError(
            f"metadata: {_rows_text(empty.index[empty])}: identity is empty; "
            f'use "{UNKNOWN_IDENTITY}" for an unidentified animal'
        )
    absent = wanted[~wanted.isin(set(ids))] if wanted is not None else pd.Series(dtype=str)
    if len(absent):
        shown = zip(absent.index[:_SHOWN], absent.iloc[:_SHOWN], strict=True)
        first = ", ".join(f"{_where(int(i))} {v!r}" for i, v in shown)
        raise DataError(f"{source}: {len(absent)} image id(s) not in the metadata: {first}")
    return ids, identities


def _prepare(metadata: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """Rows to split, indexed by 0-based metadata position: image_id, identity, known, key, unit."""
    image_id, identity = _metadata_columns(metadata)
    group_column = config.group_column
    if group_column is not None and group_column not in metadata.columns:
        raise ConfigError(
            f"group_column {group_column!r} is not a metadata column "
            f"(columns: {', '.join(map(str, metadata.columns))})"
        )
    if config.kind == "time" and "date" not in metadata.columns:
        raise ConfigError("split kind 'time' needs a 'date' column in the metadata")
    group = _cells(metadata[group_column]) if group_column else pd.Series("", index=image_id.index)
    grouped = group.str.strip() != ""
    rows = pd.DataFrame(
        {
            "image_id": image_id,
            "identity": identity,
            "known": identity != UNKNOWN_IDENTITY,
            "key": group.where(grouped, image_id),
            "unit": ("g\x1f" + group).where(grouped, "i\x1f" + image_id),
        }
    )
    if config.kind == "time":
        rows["date"] = _cells(metadata["date"])
    return rows if config.unknown == "test" else rows[rows["known"]]


def _digest(config: SplitConfig, key: str) -> str:
    return hashlib.sha256(f"{config.seed}\x1f{config.kind}\x1f{key}".encode()).hexdigest()


def _hash_sorted(keys: Iterable[str], config: SplitConfig) -> list[str]:
    return sorted(keys, key=lambda key: (_digest(config, key), key))


def _take(fraction: float, n: int) -> int:
    """``round_half_up(fraction * n)`` clamped to ``1 .. n - 1``; 0 when ``n < 2``."""
    if n < 2:
        return 0
    return min(max(math.floor(Fraction(str(fraction)) * n + Fraction(1, 2)), 1), n - 1)


def _sides(units: Iterable[str], test: Iterable[bool]) -> dict[str, str]:
    return {unit: "test" if t else "train" for unit, t in zip(units, test, strict=True)}


def _unit_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per unit (index: unit): its hash ``key`` and ``owner`` (``""`` if only unknown)."""
    units = rows.groupby("unit")[["key"]].first()
    owner = rows[rows["known"]].groupby("unit")["identity"].min()
    units["owner"] = owner.reindex(units.index).fillna("")
    return units


def _split_within(units: pd.DataFrame, config: SplitConfig) -> dict[str, str]:
    """Per owner, the first ``_take(test_fraction, n)`` units in hash order go to test."""
    ordered = (
        units.assign(digest=units["key"].map(lambda key: _digest(config, key)))
        .rename_axis("unit")
        .reset_index()
        .sort_values(["owner", "digest", "key", "unit"])
    )
    by_owner = ordered.groupby("owner")
    n_test = by_owner["key"].transform("size").map(lambda n: _take(config.test_fraction, int(n)))
    return _sides(ordered["unit"], by_owner.cumcount() < n_test)


@SPLIT_KINDS.register("closed")
def _closed(rows: pd.DataFrame, config: SplitConfig) -> dict[str, str]:
    units = _unit_table(rows)
    orphan = units["owner"] == ""
    return {**_split_within(units[~orphan], config), **dict.fromkeys(units.index[orphan], "test")}


@SPLIT_KINDS.register("open")
def _open(rows: pd.DataFrame, config: SplitConfig) -> dict[str, str]:
    identities = _hash_sorted(rows.loc[rows["known"], "identity"].unique(), config)
    if len(identities) < 2:
        raise DataError(f"an open split needs at least 2 known identities, got {len(identities)}")
    new = identities[: _take(config.new_fraction, len(identities))]
    units = _unit_table(rows)
    test = units.index.isin(rows.loc[rows["identity"].isin(new), "unit"]) | (units["owner"] == "")
    return {**_split_within(units[~test], config), **dict.fromkeys(units.index[test], "test")}


@SPLIT_KINDS.register("disjoint")
def _disjoint(rows: pd.DataFrame, config: SplitConfig) -> dict[str, str]:
    known = rows[rows["known"]]
    label = known["identity"]
    while True:  # each identity's label becomes the smallest identity linked to it by groups
        spread = label.groupby(known["unit"]).transform("min")
        spread = spread.groupby(known["identity"]).transform("min")
        if spread.equals(label):
            break
        label = spread
    block = label.groupby(known["identity"]).first()
    sizes = block.value_counts()
    target = _take(config.test_fraction, len(block))
    if len(sizes) < 2:
        raise DataError(
            f"a disjoint split needs at least 2 separable identities; got {len(block)} "
            f"identities in {len(sizes)} block(s) linked by shared groups"
        )
    order, chosen, taken = _hash_sorted(sizes.index, config), [], 0
    for name in order:  # greedy: take blocks in hash order while they fit the target
        if taken + sizes[name] <= target:
            chosen.append(name)
            taken += int(sizes[name])
    chosen = chosen or order[:1]
    units = _unit_table(rows)
    return _sides(units.index, units["owner"].map(block).isin(chosen) | (units["owner"] == ""))


@SPLIT_KINDS.register("time")
def _time(rows: pd.DataFrame, config: SplitConfig) -> dict[str, str]:
    unit_stamp, cutoff, _ = _time_cutoff(rows, config)
    test = set(unit_stamp.index[unit_stamp >= cutoff])
    return {unit: "test" if unit in test else "train" for unit in rows["unit"]}


def _micros(moment: dt.datetime) -> int:
    return (moment - (_EPOCH if moment.tzinfo is None else _EPOCH_UTC)) // dt.timedelta(
        microseconds=1
    )


def _stamps(rows: pd.DataFrame) -> tuple[pd.Series[int], bool]:
    """Microseconds since 1970 of the dated rows, and whether the dates are time-zone aware."""
    stamps: dict[int, int] = {}
    first_row: dict[bool, int] = {}
    for index, cell in zip(rows.index, rows["date"], strict=True):
        try:
            moment = parse_date(cell)
        except ValueError as exc:
            raise DataError(f"metadata: {_where(int(index))}, column 'date': {exc}") from None
        if moment is not None:
            first_row.setdefault(moment.tzinfo is not None, int(index))
            stamps[int(index)] = _micros(moment)
    if len(first_row) == 2:
        raise DataError(
            f"metadata: dates mix time zones ({_where(first_row[True])}) and none "
            f"({_where(first_row[False])}); give all dates a time zone or none"
        )
    return pd.Series(stamps, dtype="int64"), True in first_row


def _time_cutoff(rows: pd.DataFrame, config: SplitConfig) -> tuple[pd.Series[int], int, bool]:
    """Each dated unit's earliest stamp, the cutoff stamp, and whether dates are aware."""
    stamps, aware = _stamps(rows)
    unit_stamp = stamps.groupby(rows.loc[stamps.index, "unit"]).min()
    undated = ~rows["unit"].isin(unit_stamp.index)
    if undated.any() and config.undated == "error":
        raise DataError(
            f"metadata: {_rows_text(rows.index[undated])}: no date; a time split needs every "
            "image (or one image of its group) dated, or undated='train'"
        )
    if config.cutoff is not None:
        cutoff = config.cutoff
        if not isinstance(cutoff, dt.datetime):
            cutoff = dt.datetime.combine(cutoff, dt.time())
        if len(stamps) and (cutoff.tzinfo is not None) != aware:
            raise ConfigError(
                f"cutoff {cutoff.isoformat()} must {'' if aware else 'not '}have a time zone, "
                "like the dates in the metadata"
            )
        return unit_stamp, _micros(cutoff), aware
    counts = rows.loc[~undated, "unit"].map(unit_stamp).value_counts().sort_index()
    if len(counts) < 2:
        raise DataError(f"a time split needs at least 2 distinct dates, got {len(counts)}")
    on_or_after = counts.iloc[::-1].cumsum().iloc[::-1].iloc[1:]
    target = Fraction(str(config.test_fraction)) * int(counts.sum())
    best = min(
        zip(on_or_after.index, on_or_after, strict=True),
        key=lambda item: (abs(int(item[1]) - target), -int(item[0])),
    )
    return unit_stamp, int(best[0]), aware
