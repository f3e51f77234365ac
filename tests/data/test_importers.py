"""Tests for wildreid.data.importers: folder trees, CSV/TSV/Parquet tables and COCO JSON."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from wildreid.data.importers import derive_image_id, import_coco, import_folders, import_table
from wildreid.data.schema import validate_metadata
from wildreid.errors import ConfigError, MetadataError


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="PNG")
    return path


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


# --- folders -------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``tmp/data/images``: identities a (nested, upper-case suffix) and b, plus noise."""
    images = tmp_path / "data" / "images"
    _png(images / "a" / "1.png")
    _png(images / "a" / "sub" / "2.JPG")
    _png(images / "a" / "z.png")
    _png(images / "b" / "3.jpeg")
    _png(images / "b" / ".hidden.png")
    _png(images / "a" / ".cache" / "4.png")
    _png(images / ".trash" / "5.png")
    (images / "b" / "notes.txt").write_text("not an image")
    (images / "README.md").write_text("loose non-image files are fine")
    return images


def test_folders_relative_to_custom_root(tree: Path) -> None:
    root = tree.parent
    frame = import_folders(tree, root=root, species="zebra")
    paths = ["images/a/1.png", "images/a/sub/2.JPG", "images/a/z.png", "images/b/3.jpeg"]
    assert list(frame.columns) == ["image_id", "identity", "path", "species"]
    assert frame["path"].tolist() == paths
    assert frame["identity"].tolist() == ["a", "a", "a", "b"]
    assert frame["image_id"].tolist() == [_sha16(p) for p in paths]
    assert frame["species"].tolist() == ["zebra"] * 4
    assert validate_metadata(frame, root=root) == []


def test_folders_root_defaults_to_source(tree: Path) -> None:
    frame = import_folders(tree)
    assert frame["path"].tolist() == ["a/1.png", "a/sub/2.JPG", "a/z.png", "b/3.jpeg"]
    assert "species" not in frame.columns
    assert validate_metadata(frame, root=tree) == []


def test_folders_ids_are_stable_and_depend_only_on_relative_path(
    tree: Path, tmp_path: Path
) -> None:
    first = import_folders(tree)
    pd.testing.assert_frame_equal(first, import_folders(tree))
    copy = shutil.copytree(tree, tmp_path / "elsewhere")
    pd.testing.assert_frame_equal(first, import_folders(copy))
    assert derive_image_id("a/1.png") == _sha16("a/1.png") == first["image_id"][0]


def test_folders_unknown_folder_is_unknown_identity(tmp_path: Path) -> None:
    _png(tmp_path / "unknown" / "x.webp")
    assert _rows(import_folders(tmp_path)) == [
        {"image_id": _sha16("unknown/x.webp"), "identity": "unknown", "path": "unknown/x.webp"}
    ]


def test_folders_loose_top_level_images_error(tree: Path) -> None:
    _png(tree / "stray.png")
    with pytest.raises(MetadataError, match=r"1 image\(s\) directly in the folder \(stray\.png\)"):
        import_folders(tree)


def test_folders_empty_tree_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(MetadataError, match="no images found under"):
        import_folders(tmp_path)


def test_folders_source_outside_root_error(tree: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ConfigError, match="is not inside the root"):
        import_folders(tree, root=other)


# --- tables --------------------------------------------------------------------------------

NOTE = ' spaced, "quoted" 007 '


def test_csv_with_mapping_extra_columns_and_absolute_paths(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _png(root / "img" / "x.png")
    _png(root / "img" / "y.png")
    source = pd.DataFrame(
        {
            "file": ["img/x.png", str(root / "img" / "y.png")],
            "individual_id": ["Z1", "Z2"],
            "note": [NOTE, ""],
            "cam": ["0012", "NA"],
            "bbox": ["[1.0, 2.0, 3.0, 4.0]", ""],
        }
    )
    table = root / "meta.csv"
    source.to_csv(table, index=False)
    frame = import_table(table, columns={"identity": "individual_id", "path": "file"})
    assert _rows(frame) == [
        {
            "image_id": _sha16("img/x.png"),
            "path": "img/x.png",
            "identity": "Z1",
            "note": NOTE,
            "cam": "0012",
            "bbox": "[1.0, 2.0, 3.0, 4.0]",
        },
        {
            "image_id": _sha16("img/y.png"),
            "path": "img/y.png",
            "identity": "Z2",
            "note": "",
            "cam": "NA",
            "bbox": "",
        },
    ]
    assert validate_metadata(frame, root=root) == []


def test_tsv_keeps_given_ids_and_outside_absolute_paths(tmp_path: Path) -> None:
    table = tmp_path / "meta.tsv"
    outside = str(tmp_path.parent / "far" / "z.png")
    table.write_text(f"image_id\tidentity\tpath\nq1\tZ1\t{outside}\n")
    frame = import_table(table)
    assert _rows(frame) == [{"image_id": "q1", "identity": "Z1", "path": outside}]
    assert "absolute" in str(validate_metadata(frame, root=tmp_path)[0])


def test_parquet_types_become_strings(tmp_path: Path) -> None:
    source = pd.DataFrame(
        {
            "img": pd.array([7, 8], dtype="int64[pyarrow]"),
            "file": ["a.png", "b.png"],
            "who": ["Z1", None],
            "bbox": [[1.0, 2.0, 3.5, 4.0], None],
            "count": pd.array([3, None], dtype="Int64"),
            "score": [0.25, float("nan")],
        }
    )
    table = tmp_path / "meta.parquet"
    source.to_parquet(table)
    frame = import_table(table, columns={"image_id": "img", "path": "file", "identity": "who"})
    assert _rows(frame) == [
        {
            "image_id": "7",
            "path": "a.png",
            "identity": "Z1",
            "bbox": "[1, 2, 3.5, 4]",
            "count": "3",
            "score": "0.25",
        },
        {"image_id": "8", "path": "b.png", "identity": "", "bbox": "", "count": "", "score": ""},
    ]


def test_table_mapping_errors(tmp_path: Path) -> None:
    table = tmp_path / "meta.csv"
    table.write_text("file,who\na.png,Z1\n")
    with pytest.raises(ConfigError, match=r"no column 'name' \(mapped to 'identity'\)"):
        import_table(table, columns={"identity": "name", "path": "file"})
    with pytest.raises(ConfigError, match="key 'animal' is not one of"):
        import_table(table, columns={"animal": "who"})
    with pytest.raises(MetadataError, match=r"missing column\(s\) identity"):
        import_table(table, columns={"path": "file"})
    with pytest.raises(MetadataError, match=r"unsupported table type '\.xlsx'"):
        import_table(_write(tmp_path / "meta.xlsx", "x"))


# --- COCO ----------------------------------------------------------------------------------


def _coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 8, "height": 8,
             "date_captured": "2024-05-01 13:45:00"},
            {"id": 2, "file_name": "b.png", "date_captured": "spring"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4],
             "keypoints": [1, 2, 2, 3.5, 4, 1], "identity": "Z1"},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5.5],
             "individual_id": 42},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2]},
        ],
        "categories": [{"id": 1, "name": "zebra", "keypoints": ["head", "tail"]}],
    }  # fmt: skip


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_coco_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.png")
    annotation_file = _write(tmp_path / "ann.json", _coco())
    with caplog.at_level(logging.INFO, logger="wildreid.data.importers"):
        frame = import_coco(annotation_file, image_dir="imgs")
    assert _rows(frame) == [
        {"image_id": "1_10", "identity": "Z1", "path": "imgs/a.png", "species": "zebra",
         "bbox": "[0, 0, 4, 4]", "landmarks": '{"head": [1, 2, 2], "tail": [3.5, 4, 1]}',
         "date": "2024-05-01T13:45:00"},
        {"image_id": "1_11", "identity": "42", "path": "imgs/a.png", "species": "zebra",
         "bbox": "[2, 2, 5, 5.5]", "landmarks": "", "date": "2024-05-01T13:45:00"},
        {"image_id": "2_12", "identity": "unknown", "path": "imgs/b.png", "species": "zebra",
         "bbox": "[1, 1, 2, 2]", "landmarks": "", "date": "spring"},
    ]  # fmt: skip
    assert "1 annotation(s) without identity" in caplog.text
    problems = validate_metadata(frame, root=tmp_path)
    assert [(p.row, p.column) for p in problems] == [(3, "date")]


def test_coco_identity_field_and_nested_fallback(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"][0]["animal"] = "A7"
    data["annotations"][2]["attributes"] = {"identity": "N3"}
    frame = import_coco(_write(tmp_path / "ann.json", data), identity_field="animal")
    assert frame["identity"].tolist() == ["A7", "42", "N3"]
    assert frame["path"].tolist() == ["a.png", "a.png", "b.png"]


def test_coco_keypoint_count_mismatch(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"][1]["keypoints"] = [1, 2, 2]
    with pytest.raises(MetadataError, match=r"annotations\[1\] \(id 11\): keypoints must be 6"):
        import_coco(_write(tmp_path / "ann.json", data))


def test_coco_bad_bbox(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"][2]["bbox"] = [1, 2, 3]
    with pytest.raises(MetadataError, match=r"annotations\[2\] \(id 12\): bbox must be 4 numbers"):
        import_coco(_write(tmp_path / "ann.json", data))


def test_coco_malformed_json(tmp_path: Path) -> None:
    bad = tmp_path / "ann.json"
    bad.write_text('{"images": [')
    with pytest.raises(MetadataError, match=r"ann\.json: not valid JSON"):
        import_coco(bad)


def test_coco_missing_keys(tmp_path: Path) -> None:
    data = _coco()
    del data["images"]
    with pytest.raises(MetadataError, match=r"ann\.json: COCO file has no 'images' list"):
        import_coco(_write(tmp_path / "ann.json", data))
    data = _coco()
    del data["annotations"][0]["image_id"]
    with pytest.raises(MetadataError, match=r"annotations\[0\] has no 'image_id'"):
        import_coco(_write(tmp_path / "ann.json", data))
    data = _coco()
    data["annotations"][0]["image_id"] = 99
    with pytest.raises(MetadataError, match=r"\(id 10\): image_id 99 is not in 'images'"):
        import_coco(_write(tmp_path / "ann.json", data))
