"""Importers: build a wildreid metadata table from common dataset layouts.

Every importer returns a :class:`pandas.DataFrame` of string cells with at least ``image_id``,
``identity`` and ``path`` (posix paths relative to ``root``). Importers never write files: the
caller checks the frame with :func:`wildreid.data.schema.validate_metadata` and writes it with
:func:`wildreid.data.schema.write_metadata`.

Image ids: :func:`import_folders`, and :func:`import_table` for a table without ``image_id``,
derive ids from the posix relative path (:func:`derive_image_id`), so re-importing gives the same
ids; :func:`import_coco` always uses ``f"{coco_image_id}_{annotation_id}"``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from wildreid.data.schema import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    UNKNOWN_IDENTITY,
    BBox,
    Landmark,
    format_bbox,
    format_landmarks,
)
from wildreid.errors import ConfigError, MetadataError

__all__ = [
    "COCO_IDENTITY_FIELDS",
    "IMAGE_SUFFIXES",
    "IMPORT_FORMATS",
    "derive_image_id",
    "detect_format",
    "import_coco",
    "import_dataset",
    "import_folders",
    "import_table",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
COCO_IDENTITY_FIELDS = ("identity", "individual_id", "name", "attributes.identity")
"""Annotation fields tried, in order, after the ``identity_field`` given to :func:`import_coco`."""

_CSV_SEPARATORS = {".csv": ",", ".tsv": "\t"}
_PARQUET_SUFFIXES = (".parquet", ".pq")


def derive_image_id(relative_path: str) -> str:
    """A stable image id: the first 16 hex digits of the SHA-256 of the posix relative path."""
    return hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:16]


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).resolve()


def _relative_to_root(text: str, root: Path) -> str:
    """A path cell made relative to ``root`` when it is absolute and inside it; else unchanged."""
    if not text or not Path(text).is_absolute():
        return text
    for candidate in (Path(os.path.normpath(text)), Path(text).resolve()):
        if candidate.is_relative_to(root):
            return candidate.relative_to(root).as_posix()
    return text


# --- folder-per-identity trees -------------------------------------------------------------


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, recursively, sorted, skipping hidden files and folders."""
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if _is_image(name):
                yield Path(current) / name


def import_folders(
    source: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    species: str | None = None,
) -> pd.DataFrame:
    """Import a folder-per-identity tree: ``source/<identity>/[subfolders/]<image>``.

    The first folder level under ``source`` names the identity (a folder named ``unknown`` holds
    unidentified animals); images below it are found recursively. Files whose suffix is not in
    :data:`IMAGE_SUFFIXES` (any case) and hidden files and folders (``.name``) are skipped.

    Args:
        source: the tree's top folder.
        root: the dataset root that paths are made relative to; defaults to ``source``.
        species: if given, fills a ``species`` column.

    Returns:
        Columns ``image_id, identity, path`` (and ``species``), rows sorted by path.

    Raises:
        ConfigError: ``source`` is not inside ``root``.
        MetadataError: ``source`` is not a folder, has images directly in it, or has no images.
    """
    source_dir = _absolute(source)
    root_dir = source_dir if root is None else _absolute(root)
    if not source_dir.is_dir():
        raise MetadataError(f"{source_dir}: not a folder; give the folder of identity folders")
    if not source_dir.is_relative_to(root_dir):
        raise ConfigError(f"{source_dir} is not inside the root {root_dir}; pick a root above it")
    loose = sorted(p.name for p in source_dir.iterdir() if p.is_file() and _is_image(p.name))
    if loose:
        raise MetadataError(
            f"{source_dir}: {len(loose)} image(s) directly in the folder ({', '.join(loose[:5])}"
            f"{', ...' if len(loose) > 5 else ''}); move each into a folder named after its "
            f"identity, or into '{UNKNOWN_IDENTITY}/'"
        )
    rows: list[tuple[str, str, str]] = []
    identities = sorted(p for p in source_dir.iterdir() if p.is_dir() and p.name[0] != ".")
    for identity_dir in identities:
        for image in _walk_images(identity_dir):
            relative = image.relative_to(root_dir).as_posix()
            rows.append((derive_image_id(relative), identity_dir.name, relative))
    if not rows:
        raise MetadataError(
            f"no images found under {source_dir}; expected <identity>/<image> with suffixes "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    rows.sort(key=lambda row: row[2])
    frame = pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS), dtype=str)
    if species is not None:
        frame["species"] = species
    return frame


# --- CSV / TSV / Parquet tables ------------------------------------------------------------


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _bbox_values(value: object) -> BBox | None:
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    x, y, width, height = (float(v) for v in value)
    return BBox(x, y, width, height)


def _cell_text(value: object, column: str) -> str:
    """The string cell of a table value (lists and structs as JSON, dates as ISO 8601)."""
    if _is_missing(value):
        return ""
    bbox = _bbox_values(value) if column == "bbox" else None
    if bbox is not None:
        return format_bbox(bbox)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _read_table(table: Path) -> pd.DataFrame:
    suffix = table.suffix.lower()
    if not table.is_file():
        raise MetadataError(f"{table}: table file does not exist")
    try:
        if suffix in _CSV_SEPARATORS:
            return pd.read_csv(table, sep=_CSV_SEPARATORS[suffix], dtype=str, na_filter=False)
        if suffix in _PARQUET_SUFFIXES:
            return pd.read_parquet(table, dtype_backend="pyarrow")
    except (OSError, ValueError) as exc:  # pandas parser errors are ValueErrors
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MetadataError(f"{table}: not a readable table ({first_line})") from exc
    raise MetadataError(
        f"{table}: unsupported table type {suffix!r}; use .csv, .tsv, .parquet or .pq"
    )


def _rename_columns(frame: pd.DataFrame, columns: Mapping[str, str], table: Path) -> pd.DataFrame:
    known = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
    for target, column in columns.items():
        if target not in known:
            raise ConfigError(f"column mapping key {target!r} is not one of {', '.join(known)}")
        if column not in frame.columns:
            raise ConfigError(
                f"{table}: no column {column!r} (mapped to {target!r}); "
                f"the table has {', '.join(map(str, frame.columns))}"
            )
        if target in frame.columns and target != column and target not in columns.values():
            raise ConfigError(
                f"{table}: mapping {column!r} to {target!r} would replace the existing "
                f"{target!r} column; rename or drop one of them"
            )
    if len(set(columns.values())) != len(columns):
        raise ConfigError(f"column mapping {dict(columns)} maps one source column twice")
    return frame.rename(columns={column: target for target, column in columns.items()})


def import_table(
    table: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    columns: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Import a CSV (``.csv``), TSV (``.tsv``) or Parquet (``.parquet``, ``.pq``) table.

    Every cell becomes a string: missing values give ``""``, Parquet numbers their ``str``, a
    Parquet list in the ``bbox`` column :func:`~wildreid.data.schema.format_bbox`'s text, other
    lists and structs JSON. Columns not named in ``columns`` are kept untouched.

    Args:
        table: the table file.
        root: the dataset root; defaults to the table's folder. Absolute paths inside it are made
            relative; any other path is left as it is for validation to report.
        columns: wildreid column name -> source column name, e.g. ``{"path": "file"}``.

    Returns:
        The table with wildreid column names; ``image_id`` is derived from ``path`` with
        :func:`derive_image_id` when the table has none (empty paths give an empty id).

    Raises:
        ConfigError: ``columns`` names an unknown wildreid column or a missing source column.
        MetadataError: the file is missing, unreadable, empty, or lacks identity or path.
    """
    table_path = _absolute(table)
    root_dir = table_path.parent if root is None else _absolute(root)
    frame = _rename_columns(_read_table(table_path), columns or {}, table_path)
    if frame.empty:
        raise MetadataError(f"{table_path}: the table has no rows")
    for name in frame.columns:
        frame[name] = [_cell_text(v, str(name)) for v in frame[name].tolist()]
    missing = [c for c in ("identity", "path") if c not in frame.columns]
    if missing:
        raise MetadataError(
            f"{table_path}: missing column(s) {', '.join(missing)}; map them with "
            f"columns={{'{missing[0]}': '<source column>'}}"
        )
    frame["path"] = [_relative_to_root(p, root_dir) for p in frame["path"]]
    if "image_id" not in frame.columns:
        frame.insert(0, "image_id", [derive_image_id(p) if p else "" for p in frame["path"]])
    return frame.astype(str)


# --- COCO JSON -----------------------------------------------------------------------------


def _record_list(data: dict[str, Any], key: str, file: Path, required: bool) -> list[Any]:
    if key not in data:
        if required:
            raise MetadataError(f"{file}: COCO file has no {key!r} list; is it a COCO file?")
        return []
    value = data[key]
    if not isinstance(value, list):
        raise MetadataError(f"{file}: {key!r} must be a list, not {type(value).__name__}")
    return value


def _index(
    data: dict[str, Any], key: str, keys: tuple[str, ...], file: Path, required: bool
) -> dict[Any, dict[str, Any]]:
    """The records of ``data[key]`` by id, each checked to have ``keys``."""
    records: dict[Any, dict[str, Any]] = {}
    for index, raw in enumerate(_record_list(data, key, file, required)):
        record = _require(raw, keys, f"{key}[{index}]", file)
        if record["id"] in records:
            raise MetadataError(f"{file}: {key}[{index}]: id {record['id']!r} is used twice")
        records[record["id"]] = record
    return records


def _field(record: Mapping[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _require(record: Any, keys: tuple[str, ...], where: str, file: Path) -> dict[str, Any]:
    """``record`` as a dict having ``keys``, with ids that are numbers or strings."""
    if not isinstance(record, dict):
        raise MetadataError(f"{file}: {where} must be a JSON object")
    for key in keys:
        if key not in record:
            raise MetadataError(f"{file}: {where} has no {key!r}; add it or drop the record")
    for key in ("id", "image_id", "category_id", "file_name"):
        value = record.get(key, 0)
        if not isinstance(value, int | str) or isinstance(value, bool) or value == "":
            raise MetadataError(f"{file}: {where}: {key} must be a number or a non-empty string")
    return record


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )


def _landmarks(points: list[Any], names: list[str], where: str, file: Path) -> str:
    if not points:
        return ""
    if not _numbers(points) or len(points) != 3 * len(names):
        raise MetadataError(
            f"{file}: {where}: keypoints must be {3 * len(names)} numbers (x, y, visibility for "
            f"{len(names)} category keypoint(s)), got {len(points) if _numbers(points) else points}"
        )
    landmarks = {}
    for index, name in enumerate(names):
        x, y, visibility = points[3 * index : 3 * index + 3]
        if visibility not in (0, 1, 2):
            raise MetadataError(f"{file}: {where}: keypoint {name!r} visibility must be 0, 1 or 2")
        landmarks[name] = Landmark(float(x), float(y), int(visibility))
    return format_landmarks(landmarks)


def _iso_date(value: Any) -> str:
    """``value`` as ISO 8601 when it parses as a date or date-time, else its text unchanged."""
    text = "" if value is None else str(value).strip()
    for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
        try:
            return parse(text).isoformat()
        except ValueError:
            continue
    return text


def _load_json(file: Path) -> dict[str, Any]:
    try:
        with file.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise MetadataError(f"{file}: COCO annotation file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{file}: not valid JSON ({exc}); check the file") from exc
    if not isinstance(data, dict):
        raise MetadataError(f"{file}: a COCO file must be a JSON object with images, annotations")
    return data


@dataclass
class _Coco:
    """A loaded COCO file that turns annotations into metadata rows."""

    file: Path
    root: Path
    image_dir: str | None
    images: dict[Any, dict[str, Any]]
    categories: dict[Any, dict[str, Any]]
    identity_field: str
    unidentified: int = 0

    def _fail(self, where: str, message: str) -> MetadataError:
        return MetadataError(f"{self.file}: {where}: {message}")

    def _identity(self, annotation: Mapping[str, Any]) -> str:
        for name in (self.identity_field, *COCO_IDENTITY_FIELDS):
            if (value := _field(annotation, name)) not in (None, ""):
                return str(value)
        self.unidentified += 1
        return UNKNOWN_IDENTITY

    def row(self, index: int, raw: Any) -> dict[str, str]:
        """The metadata row of ``annotations[index]``."""
        annotation = _require(raw, ("id", "image_id"), f"annotations[{index}]", self.file)
        where = f"annotations[{index}] (id {annotation['id']})"
        image = self.images.get(annotation["image_id"])
        if image is None:
            raise self._fail(where, f"image_id {annotation['image_id']!r} is not in 'images'")
        category = self.categories.get(annotation.get("category_id"), {})
        if "category_id" in annotation and not category:
            raise self._fail(
                where, f"category_id {annotation['category_id']!r} is not in 'categories'"
            )
        bbox = annotation.get("bbox")
        bbox_value = _bbox_values(bbox) if _numbers(bbox) else None
        if bbox is not None and bbox_value is None:
            raise self._fail(where, "bbox must be 4 numbers [x, y, width, height]")
        names = [str(n) for n in category.get("keypoints") or []]
        file_name = str(image["file_name"])
        path = posixpath.join(self.image_dir.strip("/"), file_name) if self.image_dir else file_name
        return {
            "image_id": f"{image['id']}_{annotation['id']}",
            "identity": self._identity(annotation),
            "path": _relative_to_root(path, self.root),
            "species": str(category.get("name", "")),
            "bbox": format_bbox(bbox_value) if bbox_value else "",
            "landmarks": _landmarks(annotation.get("keypoints") or [], names, where, self.file),
            "date": _iso_date(image.get("date_captured")),
        }


def import_coco(
    annotation_file: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    image_dir: str | None = None,
    identity_field: str = "identity",
) -> pd.DataFrame:
    """Import a COCO JSON file: one row per annotation (an animal in an image).

    ``image_id`` is ``f"{coco_image_id}_{annotation_id}"``; ``species`` is the category name;
    ``bbox`` is the annotation's bbox; ``landmarks`` pairs the flat ``keypoints`` with the
    category's ``keypoints`` names (visibility kept); ``date`` is the image's ``date_captured``
    in ISO 8601 when it parses (left as it is otherwise). Images without annotations give no row.

    The identity is the first non-empty of ``identity_field`` then :data:`COCO_IDENTITY_FIELDS`
    in the annotation (a dotted name like ``attributes.identity`` looks into nested objects);
    an annotation with none gets ``"unknown"`` (their count is logged).

    Args:
        annotation_file: the COCO JSON file.
        root: the dataset root; defaults to the JSON file's folder.
        image_dir: folder of the images relative to ``root``, prefixed to each ``file_name``.
        identity_field: the annotation field holding the individual's id.

    Raises:
        MetadataError: the file is missing, not JSON, or a record lacks a key or is malformed.
    """
    file = _absolute(annotation_file)
    root_dir = file.parent if root is None else _absolute(root)
    data = _load_json(file)
    images = _index(data, "images", ("id", "file_name"), file, required=True)
    categories = _index(data, "categories", ("id",), file, required=False)
    coco = _Coco(file, root_dir, image_dir, images, categories, identity_field)
    rows = [
        coco.row(index, raw)
        for index, raw in enumerate(_record_list(data, "annotations", file, required=True))
    ]
    if coco.unidentified:
        logger.info(
            "%s: %d annotation(s) without identity imported as %r",
            *(file, coco.unidentified, UNKNOWN_IDENTITY),
        )
    columns = [*REQUIRED_COLUMNS, "species", "bbox", "landmarks", "date"]
    return pd.DataFrame(rows, columns=columns, dtype=str)


IMPORT_FORMATS = ("folders", "table", "coco")
"""Source formats :func:`import_dataset` reads (:func:`detect_format` picks one by the source)."""


def detect_format(source: str | os.PathLike[str]) -> str:
    """The import format of ``source``: a folder is ``folders``, a ``.json`` file ``coco``,
    anything else a ``table``."""
    source = Path(source)
    if source.is_dir():
        return "folders"
    if source.suffix.lower() == ".json":
        return "coco"
    return "table"


def import_dataset(
    source: str | os.PathLike[str],
    *,
    kind: str = "auto",
    root: str | os.PathLike[str] | None = None,
    species: str | None = None,
    columns: Mapping[str, str] | None = None,
    image_dir: str | None = None,
    identity_field: str = "identity",
) -> pd.DataFrame:
    """Import ``source`` with the importer of ``kind`` (``"auto"``: :func:`detect_format`).

    ``species`` applies to ``folders``, ``columns`` to ``table``, ``image_dir`` and
    ``identity_field`` to ``coco``; see those importers.

    Raises:
        ConfigError: an unknown format.
        MetadataError: the source cannot be read (as the chosen importer says).
    """
    if kind == "auto":
        kind = detect_format(source)
    if kind == "folders":
        return import_folders(source, root=root, species=species)
    if kind == "coco":
        return import_coco(source, root=root, image_dir=image_dir, identity_field=identity_field)
    if kind == "table":
        return import_table(source, root=root, columns=columns)
    raise ConfigError(f"import format {kind!r} not in {('auto', *IMPORT_FORMATS)}")
