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
    by_torch = json.loads(run("catalogue", "identify", cat, photo, "--runtime", "torch", "--json"))
    top, top_torch = first["candidates"][0], by_torch[0]["candidates"][0]
    assert top_torch["image_id"] == top["image_id"]
    assert top_torch["score"] == pytest.approx(top["score"], abs=1e-5)
    result = runner.invoke(app, ["catalogue", "identify", str(cat), str(photo), "--runtime", "x"])
    assert result.exit_code == 2 and "unknown runtime 'x'" in result.stderr

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


def test_identify_with_sift_rerank_and_calibrate(tmp_path: Path, tiny_model: str) -> None:
    import pandas as pd

    from wildreid.data.synthetic import SynthConfig, generate_synthetic
    from wildreid.errors import ConfigError

    data = tmp_path / "synthetic"
    config = SynthConfig(
        identities=6,
        size_px=128,
        train_examples=1,
        gallery_examples=4,
        query_examples=1,
        supersample=1,
    )
    generate_synthetic(data, config=config, workers=1)
    metadata = pd.read_csv(data / "metadata.csv")
    cat = tmp_path / "cat"
    run("catalogue", "init", cat, "--model", tiny_model)
    run("catalogue", "add", cat, "--metadata", data / "metadata.csv", "--only", "subset=gallery")
    queries = metadata[metadata["subset"] == "query"]
    photos = [data / p for p in queries["path"]]
    results = json.loads(
        run("catalogue", "identify", cat, *photos, "--rerank", "sift", "--shortlist", 0, "--json")
    )
    assert [r["candidates"][0]["identity"] for r in results] == list(queries["identity"])
    first = results[0]
    assert first["reranked"] and first["rerank"]["method"] == "sift"
    assert first["candidates"][0]["n_inliers"] > first["candidates"][1]["n_inliers"]
    assert first["candidates"][0]["probability"] is None and first["calibration"] == {}
    text = run("catalogue", "identify", cat, photos[0], "--rerank", "sift")
    assert "inliers /" in text and "matches via" in text

    bad = runner.invoke(
        app, ["catalogue", "identify", str(cat), str(photos[0]), "--rerank", "surf"]
    )
    assert bad.exit_code == ConfigError.exit_code
    assert "'surf' is not one of" in bad.stderr and "sift" in bad.stderr

    state = json.loads(
        run("catalogue", "calibrate", cat, "--rerank", "sift", "--shortlist", 0, "--json")
    )
    assert state["local_matcher"] == "sift/inliers" and 0 < state["threshold"] < 1
    assert state["positive_pairs"] >= 10 and state["model"] == tiny_model
    (after,) = json.loads(
        run("catalogue", "identify", cat, photos[1], "--rerank", "sift", "--shortlist", 0, "--json")
    )
    top = after["candidates"][0]
    assert 0 <= top["probability"] <= 1 and after["threshold"] == state["threshold"]
    assert after["calibration"]["matcher"] == "global-cosine+sift/inliers"
    assert after["decision"] == ("known" if top["probability"] >= state["threshold"] else "new")
