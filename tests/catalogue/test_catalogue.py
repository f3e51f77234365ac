"""The Catalogue: enrolment, identification, filters, decisions, curation, persistence, export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.catalogue.helpers import write_photo
from wildreid.catalogue import Catalogue, Filters, MemoryStore
from wildreid.catalogue.bundle import Bundle
from wildreid.data.schema import read_metadata
from wildreid.errors import (
    CatalogueError,
    ConfigError,
    DuplicateError,
    ImageReadError,
    MetadataError,
    NotFoundError,
)


def _snapshot(cat: Catalogue) -> tuple[object, ...]:
    """Everything a failed operation must leave unchanged."""
    return (
        cat.store.counts(),
        [(i.individual_id, i.name, i.merged_into) for i in cat.store.individuals()],
        [(i.image_id, i.individual_id, i.role) for i in cat.store.images()],
        sorted(cat._index.image_ids),
        sorted(cat.bundle.stored_files()),
    )


def test_enrol_copies_photos_by_content_and_detects_the_same_photo_twice(
    catalogue: Catalogue, gallery_csv: Path
) -> None:
    assert catalogue.stats()["images"] == 6 and catalogue.index_size == 6
    assert len(catalogue.bundle.stored_files()) == 6
    frame = read_metadata(gallery_csv)
    again = frame.iloc[:2].copy()
    again["image_id"] = ["other-a", "other-b"]  # same photos under new ids
    result = catalogue.enrol(again, root=gallery_csv.parent)
    assert result.added == ()
    assert result.duplicates == (("other-a", "g0-0"), ("other-b", "g0-1"))
    same = catalogue.enrol(frame.iloc[:1], root=gallery_csv.parent)  # same id, same photo
    assert same.duplicates == (("g0-0", "g0-0"),)
    assert catalogue.stats()["images"] == 6 and len(catalogue.bundle.stored_files()) == 6
    image = catalogue.image("g1-0")
    assert image.location == "south" and image.date == "2024-01-11"
    assert (
        catalogue.image_path("g1-0").read_bytes()
        == (gallery_csv.parent / "photos/ind1/0.png").read_bytes()
    )


def test_bad_metadata_or_a_reused_id_changes_nothing(
    catalogue: Catalogue, gallery_csv: Path, tmp_path: Path
) -> None:
    before = _snapshot(catalogue)
    frame = read_metadata(gallery_csv)
    broken = frame.copy()
    broken.loc[1, "path"] = "../../etc/passwd"
    with pytest.raises(MetadataError, match="escapes"):
        catalogue.enrol(broken, root=gallery_csv.parent)
    other = frame.iloc[:1].copy()
    write_photo(tmp_path / "survey/new.png", seed=4242)
    other["path"] = ["new.png"]
    with pytest.raises(DuplicateError, match=r"g0-0.*already used"):
        catalogue.enrol(other, root=gallery_csv.parent)
    assert _snapshot(catalogue) == before


def test_unreadable_photos_are_skipped_and_reported(catalogue: Catalogue, tmp_path: Path) -> None:
    folder = tmp_path / "more"
    write_photo(folder / "ok.png", seed=7)
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    frame = pd.DataFrame(
        {"image_id": ["ok", "bad"], "identity": ["ind0", "ind0"], "path": ["ok.png", "bad.png"]}
    )
    result = catalogue.enrol(frame, root=folder)
    assert result.added == ("ok",)
    assert [i for i, _ in result.skipped] == ["bad"]
    assert catalogue.store.get_image("bad") is None
    assert catalogue.check().ok


def test_identify_ranks_the_same_photo_first_and_records_model_and_filters(
    catalogue: Catalogue, gallery_csv: Path
) -> None:
    result = catalogue.identify(gallery_csv.parent / "photos/ind1/0.png", filename="0.png")
    top = result.candidates[0]
    assert (top.identity, top.image_id) == ("ind1", "g1-0")
    assert top.score == pytest.approx(1.0, abs=1e-5)
    assert [c.score for c in result.candidates] == sorted(
        (c.score for c in result.candidates), reverse=True
    )
    assert result.decision == "known" and result.duplicate_of == "g1-0"
    assert result.model == catalogue.model and result.identification_id > 0
    assert set(result.timings_ms) == {"decode", "embed", "search", "rerank", "decision"}
    stored = catalogue.store.identifications(result.query_image_id)
    assert [r.identification_id for r in stored] == [result.identification_id]
    again = catalogue.identify(gallery_csv.parent / "photos/ind1/0.png")
    assert again.query_image_id == result.query_image_id  # one query record per photo
    assert catalogue.stats()["queries"] == 1


def test_filters_restrict_the_gallery_and_say_when_they_hid_a_better_match(
    catalogue: Catalogue, gallery_csv: Path
) -> None:
    photo = gallery_csv.parent / "photos/ind1/0.png"  # ind1 lives in the south
    north = catalogue.identify(photo, filters=Filters(location="North"))
    assert {c.identity for c in north.candidates} == {"ind0", "ind2"}
    assert north.outside_filters is not None and north.outside_filters.identity == "ind1"
    assert north.filters == Filters(location="North")
    dated = catalogue.identify(photo, filters=Filters(date_from="2024-02-01"))
    assert {c.image_id for c in dated.candidates} <= {"g0-1", "g1-1", "g2-1"}
    south = catalogue.identify(photo, filters=Filters(species="lion", location="south"))
    assert south.candidates[0].identity == "ind1" and south.outside_filters is None
    with pytest.raises(ConfigError, match="ISO date"):
        Filters(date_from="yesterday")


def test_decisions_same_undo_new_are_logged_with_who_confidence_and_tags(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    photo = write_photo(tmp_path / "q.png", seed=999)
    result = catalogue.identify(photo)
    query = result.query_image_id
    event = catalogue.decide(
        query,
        "same",
        who="ann",
        individual_id="ind2",
        candidate_image_id="g2-0",
        confidence=0.8,
        tags=["photobomb"],
        identification_id=result.identification_id,
    )
    assert catalogue.image(query).individual_id == "ind2" and query in catalogue._index.image_ids
    again = catalogue.identify(photo)
    assert again.candidates[0].identity == "ind2"  # the confirmed photo is in the gallery now
    with pytest.raises(DuplicateError, match="undo"):
        catalogue.decide(query, "new", who="ann")
    undo = catalogue.undo(query, who="ann")
    assert undo.undoes == event.event_id
    assert catalogue.image(query).individual_id is None and query not in catalogue._index.image_ids
    new = catalogue.new_individual(query, who="bob", name="Scar", confidence=1.0)
    individual = catalogue.individual(new.individual_id)
    assert individual.name == "Scar" and catalogue.image(query).individual_id == new.individual_id
    catalogue.undo(query, who="bob")
    with pytest.raises(NotFoundError):
        catalogue.individual(new.individual_id)
    catalogue.decide(query, "different", who="cy", individual_id="ind0", tags=["scenery match"])
    log = catalogue.events(query_image_id=query)
    assert [(e.action, e.who) for e in log] == [
        ("same", "ann"),
        ("undo", "ann"),
        ("new", "bob"),
        ("undo", "bob"),
        ("different", "cy"),
    ]
    assert log[0].confidence == 0.8 and log[0].tags == ("photobomb",)
    catalogue.undo(query, who="cy")
    with pytest.raises(NotFoundError, match="no decision to undo"):
        catalogue.undo(query, who="cy")
    assert catalogue.check().ok


def test_merge_moves_everything_and_a_failed_merge_reports_no_success(
    catalogue: Catalogue, gallery_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _snapshot(catalogue)
    real = catalogue.store.update_image
    calls = {"n": 0}

    def lossy(image: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            return  # silently drops the first move: the merge must notice
        real(image)  # type: ignore[arg-type]

    monkeypatch.setattr(catalogue.store, "update_image", lossy)
    with pytest.raises(CatalogueError, match="did not move every image"):
        catalogue.merge("ind0", "ind1", who="ann")
    monkeypatch.setattr(catalogue.store, "update_image", real)
    assert _snapshot(catalogue) == before
    event = catalogue.merge("ind0", "ind1", who="ann", note="same scar")
    assert catalogue.individual("ind1").merged_into == "ind0"
    assert len(catalogue.store.images(individual_id="ind0")) == 4
    assert catalogue.store.images(individual_id="ind1") == []
    result = catalogue.identify(gallery_csv.parent / "photos/ind1/0.png")
    assert result.candidates[0].identity == "ind0"
    assert "ind1" not in {c.identity for c in result.candidates}
    assert [e.event_id for e in catalogue.events(individual_id="ind1")] == [event.event_id]
    with pytest.raises(CatalogueError, match="merged into"):
        catalogue.merge("ind2", "ind1", who="ann")
    with pytest.raises(ConfigError):
        catalogue.merge("ind2", "ind2", who="ann")
    assert catalogue.check().ok


def test_split_and_rename(catalogue: Catalogue, gallery_csv: Path) -> None:
    event = catalogue.split("ind0", ["g0-1"], who="ann", new_individual_id="ind9", name="Nine")
    assert event.individual_id == "ind9"
    assert [i.image_id for i in catalogue.store.images(individual_id="ind9")] == ["g0-1"]
    result = catalogue.identify(gallery_csv.parent / "photos/ind0/1.png")
    assert (result.candidates[0].identity, result.candidates[0].name) == ("ind9", "Nine")
    with pytest.raises(ConfigError, match="rename it instead"):
        catalogue.split("ind9", ["g0-1"], who="ann")
    with pytest.raises(ConfigError, match="do not belong"):
        catalogue.split("ind0", ["g1-0"], who="ann")
    catalogue.rename("ind0", "Ayo", who="bob")
    assert catalogue.individual("ind0").name == "Ayo"
    assert [e.action for e in catalogue.events(individual_id="ind0")] == ["split", "rename"]


def test_reopen_checks_and_rebuilds_the_index(catalogue: Catalogue, tmp_path: Path) -> None:
    root = catalogue.root
    catalogue.close()
    bundle = Bundle(root)
    bundle.index_path.write_bytes(b"garbage")  # corrupt: rebuilt from the database
    with Catalogue.open(root) as cat:
        assert cat.index_size == 6 and cat.check().ok
    bundle.index_path.unlink()
    Path(f"{bundle.index_path}.json").unlink()
    with Catalogue.open(root) as cat:
        assert cat.index_size == 6 and cat.check().ok


def test_another_process_writes_are_seen_before_identifying(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    other = Catalogue.open(catalogue.root)
    photo = write_photo(tmp_path / "fresh.png", seed=31337)
    result = other.identify(photo)
    other.new_individual(result.query_image_id, who="cli", individual_id="fresh")
    other.close()
    seen = catalogue.identify(photo)
    assert seen.candidates[0].identity == "fresh"
    assert seen.candidates[0].score == pytest.approx(1.0, abs=1e-5)


def test_bad_uploads_are_refused_and_change_nothing(catalogue: Catalogue, tmp_path: Path) -> None:
    before = _snapshot(catalogue)
    with pytest.raises(ImageReadError):
        catalogue.identify(b"definitely not an image", filename="x.jpg")
    with pytest.raises(ImageReadError):
        catalogue.identify(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, filename="x.png")
    small = Catalogue.open(catalogue.root, max_pixels=100)
    with pytest.raises(ImageReadError, match="pixel"):
        small.identify(write_photo(tmp_path / "big.png", seed=1, size=(40, 30)))
    small.close()
    assert _snapshot(catalogue) == before


def test_open_refuses_a_missing_catalogue_and_create_a_used_folder(
    tmp_path: Path, tiny_model: str, gallery_csv: Path
) -> None:
    with pytest.raises(NotFoundError, match="catalogue init"):
        Catalogue.open(tmp_path / "nothing")
    with pytest.raises(DuplicateError, match="not empty"):
        Catalogue.create(gallery_csv.parent, model=tiny_model)


def test_reembed_switches_space_only_when_complete(
    catalogue: Catalogue, gallery_csv: Path, tmp_path: Path
) -> None:
    from tests.catalogue.helpers import save_tiny_model

    old = catalogue.space
    import torch

    torch.manual_seed(1)
    other = save_tiny_model(tmp_path / "other.pt")
    assert other.read_bytes() != Path(catalogue.model).read_bytes()
    space = catalogue.reembed(str(other))
    assert space != old and catalogue.space == space and catalogue.index_size == 6
    assert catalogue.check().ok
    result = catalogue.identify(gallery_csv.parent / "photos/ind2/1.png")
    assert result.candidates[0].image_id == "g2-1"
    catalogue.close()
    with Catalogue.open(catalogue.root) as cat:
        assert cat.space == space and cat.model == str(other)


def test_export_then_import_round_trips(
    catalogue: Catalogue, tmp_path: Path, tiny_model: str
) -> None:
    catalogue.rename("ind0", "Ayo", who="ann")
    metadata = catalogue.export(tmp_path / "export")
    frame = read_metadata(metadata)
    assert len(frame) == 6 and set(frame["individual_name"]) >= {"Ayo", "ind1"}
    assert (tmp_path / "export/decisions.jsonl").read_text().count("rename") == 1
    with Catalogue.create(tmp_path / "copy", model=tiny_model) as copy:
        result = copy.enrol(frame, root=metadata.parent)
        assert len(result.added) == 6
        assert {i.image_id: i.sha256 for i in copy.store.images()} == {
            i.image_id: i.sha256 for i in catalogue.store.images()
        }


def test_a_catalogue_runs_on_the_in_memory_store(
    tmp_path: Path, catalogue: Catalogue, gallery_csv: Path
) -> None:
    mem = Catalogue.in_memory(
        tmp_path / "mem", MemoryStore(), space=catalogue.space, model=catalogue.model
    )
    mem.enrol(read_metadata(gallery_csv), root=gallery_csv.parent)
    result = mem.identify(gallery_csv.parent / "photos/ind2/0.png")
    assert result.candidates[0].image_id == "g2-0"
    mem.merge("ind0", "ind2", who="ann")
    assert mem.check().ok and mem.store.counts()["individuals"] == 2


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_every_runtime_embeds_into_the_catalogues_space(
    catalogue: Catalogue, gallery_csv: Path, runtime: str
) -> None:
    photo = gallery_csv.parent / "photos/ind2/1.png"
    catalogue.runtime = "torch"
    catalogue._embedder = None  # the fixture's embedder: reload it with the runtime asked for
    by_torch = catalogue.identify(photo).candidates
    root = catalogue.root
    catalogue.close()
    with Catalogue.open(root, runtime=runtime) as compiled:
        assert compiled.embedder().runtime == runtime
        found = compiled.identify(photo).candidates
    assert [c.image_id for c in found] == [c.image_id for c in by_torch]
    for ours, theirs in zip(found, by_torch, strict=True):
        assert ours.score == pytest.approx(theirs.score, abs=1e-5)


def test_an_unknown_runtime_is_refused_on_open(catalogue: Catalogue) -> None:
    from wildreid.errors import UnknownComponentError

    with pytest.raises(UnknownComponentError, match="unknown runtime 'tensorrt'"):
        Catalogue.open(catalogue.root, runtime="tensorrt")
