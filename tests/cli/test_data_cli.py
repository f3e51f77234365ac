"""``wildreid data ...`` through Typer's runner: results, bad input, exit codes, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.builders import write_png
from wildreid.cli.app import app

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def edit_metadata(metadata: Path, row: int, column: str, value: str) -> None:
    frame = pd.read_csv(metadata, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(metadata, index=False)


def test_validate_accepts_a_valid_dataset(tiny_dataset: Path) -> None:
    code, out, err = run("data", "validate", tiny_dataset)
    assert code == 0, err
    assert "valid (7 rows, 3 identities)" in out


@pytest.mark.parametrize(
    ("row", "column", "value", "message"),
    [
        (1, "image_id", "img0", "row 2 (line 3), column 'image_id': 'img0' duplicates row 1"),
        (0, "image_id", "", "row 1 (line 2), column 'image_id': is empty"),
        (2, "identity", "", "row 3 (line 4), column 'identity': is empty"),
        (3, "date", "31/12/2024", "row 4 (line 5), column 'date': '31/12/2024' is not an ISO"),
        (4, "bbox", "[0, 0, -5, 3]", "row 5 (line 6), column 'bbox': bbox '[0, 0, -5, 3]' needs"),
        (5, "landmarks", "{broken", "row 6 (line 7), column 'landmarks': landmarks are not valid"),
        (
            0,
            "path",
            "../../etc/passwd",
            "row 1 (line 2), column 'path': '../../etc/passwd' escapes",
        ),
        (0, "path", "/etc/passwd", "row 1 (line 2), column 'path': '/etc/passwd' is absolute"),
        (6, "path", "images/none.png", "row 7 (line 8), column 'path': 'images/none.png' does not"),
    ],
)
def test_validate_reports_each_rule_with_row_and_column(
    tiny_dataset: Path, row: int, column: str, value: str, message: str
) -> None:
    edit_metadata(tiny_dataset, row, column, value)
    code, _, err = run("data", "validate", tiny_dataset)
    assert code == 3
    assert message in err
    assert err.strip().splitlines()[-1].startswith(f"error: {tiny_dataset}: 1 problem(s) found")


def test_validate_json_lists_problems(tiny_dataset: Path) -> None:
    edit_metadata(tiny_dataset, 2, "identity", "")
    code, out, _ = run("data", "validate", tiny_dataset, "--json")
    assert code == 3
    report = json.loads(out)
    assert report["rows"] == 7
    assert report["problems"] == [
        {
            "message": 'is empty; use "unknown" for an unidentified animal',
            "row": 3,
            "column": "identity",
        }
    ]


def test_validate_missing_file_and_missing_column(tmp_path: Path) -> None:
    code, _, err = run("data", "validate", tmp_path / "nope.csv")
    assert code == 3
    assert err == f"error: {tmp_path / 'nope.csv'}: metadata file does not exist\n"
    bad = tmp_path / "m.csv"
    bad.write_text("image_id,path\n1,a.png\n")
    code, _, err = run("data", "validate", bad)
    assert code == 3
    assert "missing required column(s) identity" in err


def test_validate_root_option(tiny_dataset: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, _, err = run("data", "validate", tiny_dataset, "--root", elsewhere)
    assert code == 3
    assert "7 problem(s)" in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "data", "validate", str(tmp_path / "nope.csv")])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "MetadataError"


def test_stats_prints_counts_and_writes_histogram(tiny_dataset: Path, tmp_path: Path) -> None:
    png = tmp_path / "plots" / "sizes.png"
    code, out, err = run("data", "stats", tiny_dataset, "--histogram", png)
    assert code == 0, err
    assert "identities" in out and "lion" in out
    assert png.read_bytes().startswith(b"\x89PNG")
    code, out, _ = run("data", "stats", tiny_dataset, "--json")
    stats = json.loads(out)
    assert stats["n_images"] == 7
    assert stats["n_identities"] == 3
    assert stats["n_unknown_images"] == 1
    assert stats["images_per_identity"] == {"ayo": 2, "bisa": 2, "chui": 2}
    assert stats["identity_size_histogram"] == {"2": 3}
    assert stats["viewpoints"] == {"right": 4, "left": 3}


def test_import_folders_writes_valid_metadata(tmp_path: Path) -> None:
    for identity in ("a", "b"):
        for k in range(2):
            write_png(tmp_path / "photos" / identity / f"{k}.png", value=k)
    out = tmp_path / "metadata.csv"
    code, stdout, err = run("data", "import", tmp_path / "photos", "--out", out)
    assert code == 0, err
    assert "4 rows, 2 identities" in stdout
    code, _, err = run("data", "validate", out)
    assert code == 0, err
    frame = pd.read_csv(out, dtype=str)
    assert sorted(frame["path"]) == [
        "photos/a/0.png",
        "photos/a/1.png",
        "photos/b/0.png",
        "photos/b/1.png",
    ]


def test_import_refuses_existing_output_and_bad_tables(tmp_path: Path) -> None:
    out = tmp_path / "metadata.csv"
    out.write_text("keep me")
    table = tmp_path / "table.csv"
    table.write_text("file,individual\nmissing.png,a\n")
    code, _, err = run("data", "import", table, "--out", out)
    assert code == 2 and "already exists" in err
    code, _, err = run(
        "data",
        "import",
        table,
        "--out",
        out,
        "--overwrite",
        "--column",
        "path=file",
        "--column",
        "identity=individual",
    )
    assert code == 3
    assert "'missing.png' does not exist" in err
    assert out.read_text() == "keep me"
    code, _, err = run("data", "import", table, "--out", tmp_path / "x.csv", "--column", "path")
    assert code == 2 and "WILDREID_COLUMN=SOURCE_COLUMN" in err


def test_split_writes_image_id_split_csv(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "split.csv"
    code, stdout, err = run(
        "data", "split", tiny_dataset, "--kind", "closed", "--seed", "3", "--out", out
    )
    assert code == 0, err
    assert "train: 3 images, 3 identities" in stdout
    split = pd.read_csv(out, dtype=str)
    assert list(split.columns) == ["image_id", "split"]
    assert sorted(split["image_id"]) == [f"img{i}" for i in range(6)]  # unknown excluded
    assert split["split"].value_counts().to_dict() == {"train": 3, "test": 3}
    again = tmp_path / "again.csv"
    run("data", "split", tiny_dataset, "--kind", "closed", "--seed", "3", "--out", again)
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("kind", ["open", "disjoint", "time"])
def test_split_other_kinds(tiny_dataset: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / f"{kind}.csv"
    code, stdout, err = run(
        "data", "split", tiny_dataset, "--kind", kind, "--out", out, "--unknown", "test"
    )
    assert code == 0, err
    split = pd.read_csv(out, dtype=str).set_index("image_id")["split"]
    assert split["img6"] == "test"  # the unknown animal is a new individual
    assert set(split) == {"train", "test"}
    if kind == "time":
        assert "cutoff: 2024-05-0" in stdout


def test_split_bad_input_writes_nothing(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "split.csv"
    code, _, err = run(
        "data", "split", tiny_dataset, "--kind", "closed", "--out", out, "--group-column", "camera"
    )
    assert code == 2 and "camera" in err
    code, _, err = run(
        "data", "split", tiny_dataset, "--kind", "closed", "--out", out, "--test-fraction", "1.5"
    )
    assert code == 2 and "test_fraction" in err
    code, _, err = run("data", "split", tiny_dataset, "--kind", "nearest", "--out", out)
    assert code == 2 and "nearest" in err
    edit_metadata(tiny_dataset, 4, "date", "someday")
    code, _, err = run("data", "split", tiny_dataset, "--kind", "time", "--out", out)
    assert code == 3 and "row 5 (line 6), column 'date'" in err
    assert not out.exists()
    assert list(tmp_path.glob(".split.csv*")) == []


def test_stats_counts_split_sides(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "split.csv"
    run("data", "split", tiny_dataset, "--kind", "closed", "--out", out)
    code, stdout, err = run("data", "stats", tiny_dataset, "--split", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["splits"] == {"train": 3, "test": 3}
    out.write_text("image_id,split\nimg0,holdout\n")
    code, _, err = run("data", "stats", tiny_dataset, "--split", out)
    assert code == 3 and "holdout" in err


def test_synth_generates_a_valid_split_dataset(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = ["data", "synth", "--out", out, "--identities", "3", "--size", "48", "--seed", "7"]
    code, stdout, err = run(*args, "--workers", "1")
    assert code == 0, err
    assert "wrote" in stdout and "33 images of 6 identities" in stdout
    code, _, err = run("data", "validate", out / "metadata.csv")
    assert code == 0, err
    split = pd.read_csv(out / "split.csv", dtype=str)
    assert split["split"].value_counts().to_dict() == {"query": 15, "train": 9, "gallery": 9}
    frame = pd.read_csv(out / "metadata.csv", dtype=str)
    assert json.loads(frame.loc[0, "landmarks"]).keys() == {"tip", "left", "right"}
    before = (out / "metadata.csv").read_bytes()
    code, _, err = run(*args)
    assert code == 2 and "--overwrite" in err
    assert (out / "metadata.csv").read_bytes() == before
    code, _, err = run(*args, "--overwrite")
    assert code == 0, err
    assert (out / "metadata.csv").read_bytes() == before  # same seed, same bytes


def test_synth_body_visible_is_recorded_and_drawn(tmp_path: Path) -> None:
    args = ["data", "synth", "--identities", "2", "--size", "48", "--workers", "1"]
    for name, flag in (("hidden", []), ("visible", ["--body-visible"])):
        code, _, err = run(*args, "--out", tmp_path / name, *flag)
        assert code == 0, err
    hidden = json.loads((tmp_path / "hidden" / "synth.json").read_text(encoding="utf-8"))
    visible = json.loads((tmp_path / "visible" / "synth.json").read_text(encoding="utf-8"))
    assert (hidden["body_visible"], visible["body_visible"]) == (False, True)
    image = pd.read_csv(tmp_path / "hidden" / "metadata.csv", dtype=str)["path"].iloc[0]
    assert (tmp_path / "hidden" / image).read_bytes() != (tmp_path / "visible" / image).read_bytes()


def test_synth_rejects_bad_sizes(tmp_path: Path) -> None:
    code, _, err = run("data", "synth", "--out", tmp_path / "s", "--identities", "0")
    assert code == 2 and "identities" in err
    assert not (tmp_path / "s").exists()
