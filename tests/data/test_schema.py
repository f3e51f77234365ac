import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from wildreid.data.schema import (
    BBox,
    Landmark,
    Problem,
    check_metadata,
    format_bbox,
    format_landmarks,
    parse_bbox,
    parse_date,
    parse_landmarks,
    read_metadata,
    validate_metadata,
    write_metadata,
)
from wildreid.errors import MetadataError


def test_bbox_round_trip_and_errors() -> None:
    assert parse_bbox("[1, 2.5, 30, 40]") == BBox(1.0, 2.5, 30.0, 40.0)
    assert parse_bbox("  ") is None
    assert format_bbox(BBox(1.0, 2.5, 30.0, 40.0)) == "[1, 2.5, 30, 40]"
    for bad in ("[1, 2, 3]", "1,2,3,4", '["a", 2, 3, 4]', "[1, 2, 0, 4]", "[-1, 2, 3, 4]"):
        with pytest.raises(ValueError, match="bbox"):
            parse_bbox(bad)
    with pytest.raises(ValueError, match="not a bbox"):
        parse_bbox("[1, 2, NaN, 4]")


def test_landmarks_round_trip_and_errors() -> None:
    text = '{"tip": [64, 12.5, 2], "left": [10, 120, 1], "right": [0, 0, 0]}'
    parsed = parse_landmarks(text)
    assert parsed == {
        "tip": Landmark(64.0, 12.5, 2),
        "left": Landmark(10.0, 120.0, 1),
        "right": Landmark(0.0, 0.0, 0),
    }
    assert parse_landmarks(format_landmarks(parsed)) == parsed
    assert parse_landmarks("") == {}
    assert format_landmarks({}) == ""
    bad_cells = {
        "{not json": "not valid JSON",
        "[1, 2, 2]": "non-empty JSON object",
        '{"tip": [1, 2]}': "landmark 'tip'",
        '{"tip": [1, 2, 3]}': "landmark 'tip'",
        '{"tip": [1, 2, true]}': "landmark 'tip'",
        '{"tip": [1, 2, 2.0]}': "landmark 'tip'",
        '{"": [1, 2, 2]}': "empty name",
    }
    for cell, message in bad_cells.items():
        with pytest.raises(ValueError, match=message):
            parse_landmarks(cell)


def test_parse_date() -> None:
    assert parse_date("2024-05-01") == dt.datetime(2024, 5, 1)
    assert parse_date("2024-05-01T13:45:00") == dt.datetime(2024, 5, 1, 13, 45)
    assert parse_date("") is None
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_date("01/05/2024")


def test_problem_names_row_line_and_column() -> None:
    assert str(Problem("is empty", 3, "identity")) == "row 3 (line 4), column 'identity': is empty"
    assert str(Problem("whole table")) == "whole table"


def test_valid_table_has_no_problems_and_round_trips(tiny_dataset: Path, tmp_path: Path) -> None:
    frame = read_metadata(tiny_dataset)
    assert validate_metadata(frame, root=tiny_dataset.parent) == []
    out = tmp_path / "copy.csv"
    write_metadata(frame, out)
    again = read_metadata(out)
    pd.testing.assert_frame_equal(again, frame)
    assert again.loc[0, "notes"] == "free text 0, kept"


def test_write_metadata_orders_known_columns_first(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "extra": ["x"],
            "path": ["a.png"],
            "species": ["lion"],
            "image_id": ["1"],
            "identity": ["a"],
        }
    )
    write_metadata(frame, tmp_path / "m.csv")
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert header == "image_id,identity,path,species,extra"


def _problems(frame: pd.DataFrame, root: Path) -> list[str]:
    return [str(p) for p in validate_metadata(frame, root=root)]


def test_every_rule_reports_row_and_column(tiny_dataset: Path) -> None:
    frame = read_metadata(tiny_dataset)
    frame.loc[1, "image_id"] = "img0"
    frame.loc[2, "image_id"] = ""
    frame.loc[3, "identity"] = " "
    frame.loc[4, "date"] = "yesterday"
    frame.loc[5, "bbox"] = "[1, 2, 3]"
    frame.loc[6, "landmarks"] = '{"eye": [1, 2, 5]}'
    frame.loc[0, "path"] = "../outside.png"
    problems = _problems(frame, tiny_dataset.parent)
    assert problems == [
        "row 1 (line 2), column 'path': '../outside.png' escapes the dataset root "
        f"{tiny_dataset.parent}; keep images inside it",
        "row 2 (line 3), column 'image_id': 'img0' duplicates row 1",
        "row 3 (line 4), column 'image_id': is empty; every row needs a unique image_id",
        "row 4 (line 5), column 'identity': is empty; use \"unknown\" for an unidentified animal",
        "row 5 (line 6), column 'date': 'yesterday' is not an ISO 8601 date; "
        "write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS",
        "row 6 (line 7), column 'bbox': '[1, 2, 3]' is not a bbox; "
        "write it as [x, y, width, height] in pixels",
        "row 7 (line 8), column 'landmarks': landmark 'eye' is [1, 2, 5]; "
        'write {"name": [x, y, visibility], ...} with visibility 0, 1 or 2',
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/passwd", "is absolute"),
        ("C:\\images\\a.png", "is absolute"),
        ("images/../../x.png", "escapes the dataset root"),
        ("images/missing.png", "does not exist under"),
        ("", "is empty"),
    ],
)
def test_path_rules(tiny_dataset: Path, path: str, message: str) -> None:
    frame = read_metadata(tiny_dataset)
    frame.loc[2, "path"] = path
    (problem,) = validate_metadata(frame, root=tiny_dataset.parent)
    assert (problem.row, problem.column) == (3, "path")
    assert message in problem.message


def test_missing_files_not_checked_when_asked(tiny_dataset: Path) -> None:
    frame = read_metadata(tiny_dataset)
    frame.loc[2, "path"] = "images/missing.png"
    assert validate_metadata(frame, root=tiny_dataset.parent, check_files=False) == []


def test_symlink_escaping_root_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    outside.write_bytes(b"x")
    (tiny_dataset.parent / "images" / "link.png").symlink_to(outside)
    frame = read_metadata(tiny_dataset)
    frame.loc[0, "path"] = "images/link.png"
    (problem,) = validate_metadata(frame, root=tiny_dataset.parent)
    assert "escapes the dataset root" in problem.message


def test_read_metadata_errors(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="does not exist"):
        read_metadata(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(MetadataError, match="not a readable CSV"):
        read_metadata(tmp_path / "empty.csv")
    (tmp_path / "cols.csv").write_text("image_id,name\n1,a\n")
    with pytest.raises(MetadataError, match="missing required column"):
        read_metadata(tmp_path / "cols.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(MetadataError, match="not a readable CSV"):
        read_metadata(tmp_path / "binary.csv")


def test_check_metadata_lists_every_problem(tiny_dataset: Path) -> None:
    frame = read_metadata(tiny_dataset)
    frame.loc[0, "identity"] = ""
    frame.loc[1, "identity"] = ""
    with pytest.raises(MetadataError, match=r"2 problem\(s\); first: row 1") as info:
        check_metadata(frame, root=tiny_dataset.parent, source=tiny_dataset)
    assert len(info.value.problems) == 2
    assert info.value.problems[1].startswith("row 2 (line 3)")
