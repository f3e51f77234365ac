"""``wildreid catalogue ...`` through Typer's runner, end to end on a tiny gallery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.catalogue.helpers import save_tiny_model, write_gallery, write_photo
from wildreid.cli.app import app
from wildreid.errors import NotFoundError

runner = CliRunner()


def run(*args: object, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.stdout


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt"))


def test_init_add_identify_decide_curate_export_check(tmp_path: Path, tiny_model: str) -> None:
    survey = write_gallery(tmp_path / "survey")
    cat = tmp_path / "cat"
    assert "created catalogue" in run("catalogue", "init", cat, "--model", tiny_model)
    log = tmp_path / "committed.txt"
    out = run(
        "catalogue", "add", cat, "--metadata", survey, "--committed-log", log, "--chunk-size", 4
    )
    assert "added 6 image(s), 0 duplicate(s)" in out
    assert len(log.read_text().split()) == 6
    again = json.loads(run("catalogue", "add", cat, "--metadata", survey, "--json"))
    assert again["added"] == 0 and len(again["duplicates"]) == 6
    some = json.loads(
        run("catalogue", "add", cat, "--metadata", survey, "--only", "location=south", "--json")
    )
    assert len(some["duplicates"]) == 2  # ind1's two photos
    result = runner.invoke(
        app, ["catalogue", "add", str(cat), "--metadata", str(survey), "--only", "nope"]
    )
    assert result.exit_code == 2 and "COLUMN=VALUE" in result.stderr

    query = write_photo(tmp_path / "q.png", seed=555)
    photo = survey.parent / "photos/ind1/1.png"
    results = json.loads(run("catalogue", "identify", cat, photo, query, "--json"))
    assert [r["image"] for r in results] == [str(photo), str(query)]
    first = results[0]
    assert first["candidates"][0]["identity"] == "ind1"
    assert set(first["candidates"][0]) >= {"identity", "image_id", "score", "probability"}
    assert first["decision"] == "known"
    filtered = run("catalogue", "identify", cat, photo, "--location", "north", "--threshold", 0.9)
    assert "filters left it out" in filtered and "-> new" in filtered

    q = results[1]["query_image_id"]
    event = json.loads(
        run("catalogue", "confirm", cat, q, "ind2", "--who", "ann", "--tag", "photobomb", "--json")
    )
    assert event["action"] == "same" and event["tags"] == ["photobomb"]
    assert "undo same" in run("catalogue", "undo", cat, q, "--who", "ann", "--json")
    assert "-> ind9" in run("catalogue", "new", cat, q, "--id", "ind9", "--name", "Nine")
    run("catalogue", "reject", cat, q, "ind0", "--cannot-tell", "--who", "bo")
    assert "ind0 now has 4 image(s)" in run("catalogue", "merge", cat, "ind0", "ind1")
    run("catalogue", "split", cat, "ind0", "g1-0", "--id", "ind7")
    run("catalogue", "rename", cat, "ind7", "Seven")
    shown = json.loads(run("catalogue", "show", cat, "ind7", "--json"))
    assert shown["individual"]["name"] == "Seven"
    assert [e["action"] for e in shown["decisions"]] == ["split", "rename"]
    assert [s["image_ids"] for s in shown["sightings"]] == [["g1-0"]]

    stats = json.loads(run("catalogue", "stats", cat, "--json"))
    assert stats["individuals"] == 4 and stats["images"] == 7 and stats["index_vectors"] == 7
    assert "ok" in run("catalogue", "check", cat)
    run("catalogue", "export", cat, "--out", tmp_path / "export")
    assert (tmp_path / "export/metadata.csv").is_file()


def test_errors_are_one_line_with_exit_codes(tmp_path: Path, tiny_model: str) -> None:
    result = runner.invoke(app, ["catalogue", "stats", str(tmp_path / "none")])
    assert result.exit_code == NotFoundError.exit_code
    assert "no catalogue here" in result.stderr
    cat = tmp_path / "cat"
    run("catalogue", "init", cat, "--model", tiny_model)
    result = runner.invoke(app, ["catalogue", "merge", str(cat), "a", "b"])
    assert result.exit_code == NotFoundError.exit_code and "no individual 'a'" in result.stderr
    (cat / "images").mkdir(exist_ok=True)
    (cat / "catalogue.db").write_bytes(b"broken" * 100)
    result = runner.invoke(app, ["catalogue", "check", str(cat)])
    assert result.exit_code != 0 and "not a readable catalogue" in result.stderr
