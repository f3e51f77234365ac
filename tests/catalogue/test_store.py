"""The CatalogueStore protocol: the SQLite store and the in-memory reference behave alike."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from wildreid.catalogue import (
    SCHEMA_VERSION,
    CatalogueStore,
    Event,
    ImageRecord,
    Individual,
    MemoryStore,
    SQLiteStore,
)
from wildreid.errors import DuplicateError, NotFoundError, SchemaVersionError


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CatalogueStore:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "c.db", create=True)


def _image(image_id: str, individual: str | None = "a", sha: str = "s1") -> ImageRecord:
    role = "gallery" if individual else "query"
    return ImageRecord(image_id, sha, f"images/{sha}.png", individual, role, date="2024-01-01")


def test_both_stores_satisfy_the_protocol(store: CatalogueStore) -> None:
    assert isinstance(store, CatalogueStore)


def test_records_round_trip_and_failed_transactions_change_nothing(store: CatalogueStore) -> None:
    with store.transaction():
        store.add_individual(Individual("a", "Ayo"))
        store.add_image(_image("i1"))
        store.put_vectors("space", ["i1"], np.ones((1, 4), dtype=np.float32) / 2)
    assert store.get_individual("a") == Individual("a", "Ayo")
    assert store.get_image("i1") == _image("i1")
    np.testing.assert_array_equal(store.vectors("space", ["i1"]), np.full((1, 4), 0.5))
    with pytest.raises(DuplicateError), store.transaction():
        store.add_image(_image("i2", sha="s2"))
        store.add_individual(Individual("b", "Bisa"))
        store.add_image(_image("i1"))  # duplicate id: the whole transaction rolls back
    assert store.get_image("i2") is None and store.get_individual("b") is None
    assert store.counts()["images"] == 1
    with pytest.raises(NotFoundError):
        store.vectors("space", ["i2"])


def test_events_are_numbered_in_order_and_filtered(store: CatalogueStore) -> None:
    with store.transaction():
        first = store.append_event(Event(0, "t1", "ann", "same", "q1", "a", confidence=0.5))
        second = store.append_event(Event(0, "t2", "bob", "merge", "", "b", other_id="a"))
    assert second > first
    assert [e.event_id for e in store.events(individual_id="a")] == [first, second]
    assert [e.who for e in store.events(query_image_id="q1")] == ["ann"]


def test_the_sqlite_audit_log_is_append_only(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db", create=True)
    with store.transaction():
        store.append_event(Event(0, "t1", "ann", "same", "q1", "a"))
    store.close()
    db = sqlite3.connect(tmp_path / "c.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE events SET who = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM events")


def test_sqlite_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = SQLiteStore(path, create=True)
    assert [m[0] for m in store.migrations()] == list(range(1, SCHEMA_VERSION + 1))
    assert store.get_meta("x") is None
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaVersionError, match="newer"):
        SQLiteStore(path)


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(SchemaVersionError, match="not a readable catalogue"):
        SQLiteStore(path)
    with pytest.raises(NotFoundError):
        SQLiteStore(tmp_path / "missing.db")
