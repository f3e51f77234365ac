"""The image metadata table: columns, cell encodings, reading, writing and validation.

wildreid follows the field's interchange format (the wildlife-datasets columns). One row is one
animal in one image:

========== ======== ===================================================================
column     required meaning
========== ======== ===================================================================
image_id   yes      unique string id of the row
identity   yes      the individual's id; ``"unknown"`` marks an unidentified animal
path       yes      image file, relative to the dataset root (the CSV's folder by default)
species    no       free text
viewpoint  no       free text (``left``, ``right``, ``top``, ...)
date       no       ISO 8601 date or date-time (``2024-05-01`` or ``2024-05-01T13:45:00``)
encounter  no       free text grouping near-duplicate photos (one sighting, one video)
bbox       no       ``[x, y, width, height]``: JSON list, pixels of the EXIF-oriented image
landmarks  no       JSON object ``{"name": [x, y, visibility], ...}`` (see below)
========== ======== ===================================================================

Any other column is kept untouched when a table is read and written again. All cells are read as
strings; an empty cell means "not given".

Landmarks are named keypoints in pixels of the EXIF-oriented full image. ``visibility`` follows
COCO: ``0`` not labelled (x and y are ignored), ``1`` labelled but not visible (occluded or
outside the image), ``2`` labelled and visible. Example::

    {"tip": [64.0, 12.5, 2], "left": [10.0, 120.0, 2], "right": [130.2, 118.0, 1]}
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import pandas as pd

from wildreid.errors import MetadataError
from wildreid.files import atomic_path

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "UNKNOWN_IDENTITY",
    "BBox",
    "Landmark",
    "Problem",
    "check_metadata",
    "format_bbox",
    "format_landmarks",
    "load_dataset",
    "parse_bbox",
    "parse_date",
    "parse_landmarks",
    "read_metadata",
    "validate_metadata",
    "write_metadata",
]

REQUIRED_COLUMNS = ("image_id", "identity", "path")
OPTIONAL_COLUMNS = ("species", "viewpoint", "date", "encounter", "bbox", "landmarks")
UNKNOWN_IDENTITY = "unknown"
_VISIBILITIES = (0, 1, 2)


@dataclass(frozen=True)
class BBox:
    """An axis-aligned box in pixels: top-left corner, width and height (COCO convention)."""

    x: float
    y: float
    width: float
    height: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(x, y, width, height)``."""
        return (self.x, self.y, self.width, self.height)


@dataclass(frozen=True)
class Landmark:
    """A named keypoint in pixels; ``visibility`` is 0 (not labelled), 1 (hidden) or 2 (visible)."""

    x: float
    y: float
    visibility: int


@dataclass(frozen=True)
class Problem:
    """One validation finding. ``row`` is the 1-based data row (the CSV line is ``row + 1``)."""

    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row} (line {self.row + 1})")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_bbox(text: str) -> BBox | None:
    """Parse a ``[x, y, width, height]`` cell; an empty cell gives ``None``.

    Raises:
        ValueError: the cell is not four finite numbers with x, y >= 0 and width, height > 0.
    """
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not (isinstance(value, list) and len(value) == 4 and all(map(_finite_number, value))):
        raise ValueError(f"{text!r} is not a bbox; write it as [x, y, width, height] in pixels")
    x, y, width, height = (float(v) for v in value)
    if x < 0 or y < 0 or width <= 0 or height <= 0:
        raise ValueError(f"bbox {text!r} needs x, y >= 0 and width, height > 0")
    return BBox(x, y, width, height)


def format_bbox(bbox: BBox) -> str:
    """The cell text of a bbox (inverse of :func:`parse_bbox`)."""
    return json.dumps([_compact(v) for v in bbox.as_tuple()])


def parse_landmarks(text: str) -> dict[str, Landmark]:
    """Parse a landmarks cell (see the module docstring); an empty cell gives ``{}``.

    Raises:
        ValueError: the cell is not a JSON object of ``name: [x, y, visibility]``.
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"landmarks are not valid JSON ({exc.msg}); {_LANDMARK_HINT}") from None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"landmarks must be a non-empty JSON object; {_LANDMARK_HINT}")
    landmarks = {}
    for name, point in value.items():
        if not name.strip():
            raise ValueError(f"a landmark has an empty name; {_LANDMARK_HINT}")
        if not (
            isinstance(point, list)
            and len(point) == 3
            and _finite_number(point[0])
            and _finite_number(point[1])
            and point[2] in _VISIBILITIES
            and not isinstance(point[2], bool | float)
        ):
            raise ValueError(f"landmark {name!r} is {json.dumps(point)}; {_LANDMARK_HINT}")
        landmarks[name] = Landmark(float(point[0]), float(point[1]), int(point[2]))
    return landmarks


_LANDMARK_HINT = 'write {"name": [x, y, visibility], ...} with visibility 0, 1 or 2'


def format_landmarks(landmarks: Mapping[str, Landmark]) -> str:
    """The cell text of a landmark mapping (inverse of :func:`parse_landmarks`)."""
    if not landmarks:
        return ""
    return json.dumps(
        {name: [_compact(p.x), _compact(p.y), p.visibility] for name, p in landmarks.items()}
    )


def _compact(value: float) -> float | int:
    rounded = round(value, 3)
    return int(rounded) if rounded.is_integer() else rounded


def parse_date(text: str) -> dt.datetime | None:
    """Parse an ISO 8601 date or date-time cell; an empty cell gives ``None``.

    Raises:
        ValueError: the cell is not ISO 8601.
    """
    if not text.strip():
        return None
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date; write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"
        ) from None


def read_metadata(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a metadata CSV with every cell as a string (empty cells are ``""``).

    The table is checked for the required columns only; call :func:`check_metadata` for the rest.

    Raises:
        MetadataError: the file is missing, unreadable, or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: metadata file does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MetadataError(f"{path}: not a readable CSV table ({first_line})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise MetadataError(
            f"{path}: missing required column(s) {', '.join(missing)}; "
            f"a metadata table needs {', '.join(REQUIRED_COLUMNS)}"
        )
    return frame


def write_metadata(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a metadata table atomically: required columns first, then optional, then the rest."""
    known = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in frame.columns]
    extra = [c for c in frame.columns if c not in known]
    with atomic_path(path) as tmp:
        frame[known + extra].to_csv(tmp, index=False)


def _path_problem(text: str, root: Path, check_files: bool) -> str | None:
    if not text.strip():
        return "is empty; give the image path relative to the dataset root"
    if Path(text).is_absolute() or PureWindowsPath(text).is_absolute() or text.startswith("\\"):
        return f"{text!r} is absolute; paths must be relative to the dataset root {root}"
    resolved_root = root.resolve()
    target = (resolved_root / text).resolve()
    if not target.is_relative_to(resolved_root):
        return f"{text!r} escapes the dataset root {root}; keep images inside it"
    if check_files and not target.is_file():
        return f"{text!r} does not exist under {root}"
    return None


def validate_metadata(
    frame: pd.DataFrame, *, root: str | os.PathLike[str], check_files: bool = True
) -> list[Problem]:
    """Every problem in a metadata table, in row order; an empty list means the table is valid.

    Args:
        frame: the table as :func:`read_metadata` returns it (string cells).
        root: the folder image paths are relative to.
        check_files: also check that every image file exists.
    """
    problems = [
        Problem(
            f"missing required column; a metadata table needs {', '.join(REQUIRED_COLUMNS)}",
            column=c,
        )
        for c in REQUIRED_COLUMNS
        if c not in frame.columns
    ]
    if problems:
        return problems
    root = Path(root)
    first_row_of: dict[str, int] = {}
    parsers = {"bbox": parse_bbox, "landmarks": parse_landmarks, "date": parse_date}
    present_parsers = {c: f for c, f in parsers.items() if c in frame.columns}
    for row, record in enumerate(frame.to_dict("records"), start=1):
        image_id = str(record["image_id"])
        if not image_id.strip():
            problems.append(Problem("is empty; every row needs a unique image_id", row, "image_id"))
        elif image_id in first_row_of:
            problems.append(
                Problem(f"{image_id!r} duplicates row {first_row_of[image_id]}", row, "image_id")
            )
        else:
            first_row_of[image_id] = row
        if not str(record["identity"]).strip():
            problems.append(
                Problem(
                    f'is empty; use "{UNKNOWN_IDENTITY}" for an unidentified animal',
                    row,
                    "identity",
                )
            )
        path_problem = _path_problem(str(record["path"]), root, check_files)
        if path_problem:
            problems.append(Problem(path_problem, row, "path"))
        for column, parse in present_parsers.items():
            try:
                parse(str(record[column]))
            except ValueError as exc:
                problems.append(Problem(str(exc), row, column))
    return problems


def check_metadata(
    frame: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    source: str | os.PathLike[str],
    check_files: bool = True,
) -> None:
    """Raise :class:`MetadataError` listing every problem, if there is any.

    Args:
        source: the file the table came from, named in the message.
    """
    problems = validate_metadata(frame, root=root, check_files=check_files)
    if problems:
        raise MetadataError(
            f"{source}: {len(problems)} problem(s); first: {problems[0]}",
            tuple(str(p) for p in problems),
        )


def load_dataset(
    metadata_path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
) -> tuple[pd.DataFrame, Path]:
    """Read and check a metadata CSV (files are checked when they are read).

    Returns:
        The table and the folder its paths are relative to (``root``, else the CSV's folder).

    Raises:
        MetadataError: the table is unreadable or invalid (every problem listed).
    """
    metadata_path = Path(metadata_path)
    frame = read_metadata(metadata_path)
    folder = Path(root) if root is not None else metadata_path.parent
    check_metadata(frame, root=folder, source=metadata_path, check_files=False)
    return frame, folder
