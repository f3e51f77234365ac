""":class:`SQLiteStore`: the catalogue's records in one SQLite file (WAL, versioned schema).

The schema is built by numbered migrations; each applied one is a row of the ``migrations`` table
(and ``PRAGMA user_version`` holds the newest), so a newer wildreid upgrades an older catalogue in
one transaction and an older wildreid refuses a newer catalogue instead of misreading it.

Durability: WAL journal with ``synchronous=FULL``: a transaction that returned is on disk, and a
process killed at any moment leaves the database at its last committed transaction. One
connection serves every thread of a process (guarded by a lock); other processes (the CLI beside a
running server) wait up to ``timeout_s`` for the write lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from wildreid.catalogue.records import (
    CatalogueCandidate,
    Event,
    Filters,
    IdentificationRecord,
    ImageRecord,
    Individual,
)
from wildreid.errors import CatalogueError, DuplicateError, NotFoundError, SchemaVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "individuals, encounters, images, spaces, vectors, identifications, audit log",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE individuals (
            individual_id TEXT PRIMARY KEY, name TEXT NOT NULL, species TEXT NOT NULL,
            notes TEXT NOT NULL, created_at TEXT NOT NULL,
            merged_into TEXT REFERENCES individuals(individual_id));
        CREATE TABLE encounters (
            encounter_id TEXT PRIMARY KEY, date TEXT NOT NULL, location TEXT NOT NULL);
        CREATE TABLE images (
            image_id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, path TEXT NOT NULL,
            individual_id TEXT REFERENCES individuals(individual_id),
            role TEXT NOT NULL CHECK (role IN ('gallery', 'query')),
            species TEXT NOT NULL, date TEXT NOT NULL, location TEXT NOT NULL,
            viewpoint TEXT NOT NULL, encounter TEXT NOT NULL, bbox TEXT NOT NULL,
            landmarks TEXT NOT NULL, original_name TEXT NOT NULL, added_at TEXT NOT NULL);
        CREATE INDEX images_by_individual ON images(individual_id);
        CREATE INDEX images_by_sha ON images(sha256);
        CREATE TABLE vectors (
            space TEXT NOT NULL, image_id TEXT NOT NULL REFERENCES images(image_id),
            vector BLOB NOT NULL, PRIMARY KEY (space, image_id));
        CREATE TABLE identifications (
            identification_id INTEGER PRIMARY KEY AUTOINCREMENT,
            query_image_id TEXT NOT NULL REFERENCES images(image_id), created_at TEXT NOT NULL,
            candidates TEXT NOT NULL, decision TEXT NOT NULL, threshold REAL,
            filters TEXT NOT NULL, space TEXT NOT NULL, model TEXT NOT NULL,
            outside_filters TEXT, duplicate_of TEXT, reranked INTEGER NOT NULL,
            timings TEXT NOT NULL);
        CREATE INDEX identifications_by_query ON identifications(query_image_id);
        CREATE TABLE events (
            event_id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT NOT NULL,
            action TEXT NOT NULL, query_image_id TEXT NOT NULL, individual_id TEXT NOT NULL,
            other_id TEXT NOT NULL, candidate_image_id TEXT NOT NULL, identification_id INTEGER,
            confidence REAL, tags TEXT NOT NULL, note TEXT NOT NULL, undoes INTEGER,
            details TEXT NOT NULL);
        CREATE INDEX events_by_query ON events(query_image_id);
        CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        """,
    ),
    (
        2,
        "identifications: re-ranking, calibration and notes (details JSON)",
        """
        ALTER TABLE identifications ADD COLUMN details TEXT NOT NULL DEFAULT '{}';
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_IMAGE_COLUMNS = (
    "image_id, sha256, path, individual_id, role, species, date, location, viewpoint, "
    "encounter, bbox, landmarks, original_name, added_at"
)
_EVENT_COLUMNS = (
    "event_id, at, who, action, query_image_id, individual_id, other_id, candidate_image_id, "
    "identification_id, confidence, tags, note, undoes, details"
)
_ID_COLUMNS = (
    "identification_id, query_image_id, created_at, candidates, decision, threshold, filters, "
    "space, model, outside_filters, duplicate_of, reranked, timings, details"
)


def _image(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(**dict(row))


def _event(row: sqlite3.Row) -> Event:
    values = dict(row)
    values["tags"] = tuple(json.loads(values["tags"]))
    return Event(**values)


def _candidate(raw: dict[str, Any] | None) -> CatalogueCandidate | None:
    return None if raw is None else CatalogueCandidate(**raw)


def _identification(row: sqlite3.Row) -> IdentificationRecord:
    outside = row["outside_filters"]
    details = json.loads(row["details"] or "{}")
    return IdentificationRecord(
        identification_id=row["identification_id"],
        query_image_id=row["query_image_id"],
        created_at=row["created_at"],
        candidates=tuple(CatalogueCandidate(**c) for c in json.loads(row["candidates"])),
        decision=row["decision"],
        threshold=row["threshold"],
        filters=Filters(**json.loads(row["filters"])),
        space=row["space"],
        model=row["model"],
        outside_filters=_candidate(json.loads(outside)) if outside else None,
        duplicate_of=row["duplicate_of"],
        reranked=bool(row["reranked"]),
        timings_ms=json.loads(row["timings"]),
        rerank=dict(details.get("rerank", {})),
        calibration=dict(details.get("calibration", {})),
        notes=tuple(details.get("notes", ())),
    )


class SQLiteStore:
    """A :class:`~wildreid.catalogue.store.CatalogueStore` in one SQLite file.

    Args:
        path: the database file; created (with the newest schema) when ``create`` is set.
        create: make a new database; the file must not exist.
        timeout_s: how long to wait for another process's write lock.

    Raises:
        NotFoundError: ``path`` does not exist (and ``create`` is off).
        SchemaVersionError: the file is not a catalogue database, or a newer wildreid wrote it.
    """

    def __init__(self, path: str | Path, *, create: bool = False, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise NotFoundError(f"{self.path}: no catalogue database here")
        if create and self.path.exists():
            raise DuplicateError(f"{self.path} already exists")
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self._db = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise SchemaVersionError(
                f"{self.path} is not a readable catalogue database ({exc}); restore it from a "
                "backup or export"
            ) from exc

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} has schema version {version}, newer than this wildreid's "
                f"{SCHEMA_VERSION}; upgrade wildreid to open it"
            )
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            for number, description, sql in MIGRATIONS:
                if number <= version:
                    continue
                for statement in _statements(sql):
                    self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO migrations VALUES (?, ?, datetime('now'))", (number, description)
                )
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def migrations(self) -> list[tuple[int, str, str]]:
        """The applied migrations: ``(version, description, applied_at)``."""
        rows = self._db.execute("SELECT * FROM migrations ORDER BY version").fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def integrity_problems(self) -> list[str]:
        """SQLite's own integrity and foreign-key checks; empty when the file is sound."""
        with self._lock:
            result = [r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall()]
            problems = [] if result == ["ok"] else [f"sqlite integrity: {r}" for r in result]
            for row in self._db.execute("PRAGMA foreign_key_check").fetchall():
                problems.append(f"sqlite foreign key: table {row[0]} row {row[1]} -> {row[2]}")
            return problems

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def _write(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        if not self._depth:
            raise CatalogueError("internal: a store write outside a transaction")
        try:
            return self._db.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            raise DuplicateError(f"{self.path}: {exc}") from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add_individual(self, individual: Individual) -> None:
        if self.get_individual(individual.individual_id) is not None:
            raise DuplicateError(f"individual {individual.individual_id!r} already exists")
        i = individual
        self._write(
            "INSERT INTO individuals VALUES (?, ?, ?, ?, ?, ?)",
            (i.individual_id, i.name, i.species, i.notes, i.created_at, i.merged_into),
        )

    def update_individual(self, individual: Individual) -> None:
        i = individual
        cursor = self._write(
            "UPDATE individuals SET name=?, species=?, notes=?, merged_into=? "
            "WHERE individual_id=?",
            (i.name, i.species, i.notes, i.merged_into, i.individual_id),
        )
        if cursor.rowcount != 1:
            raise NotFoundError(f"no individual {i.individual_id!r}")

    def delete_individual(self, individual_id: str) -> None:
        self._write("DELETE FROM individuals WHERE individual_id = ?", (individual_id,))

    def get_individual(self, individual_id: str) -> Individual | None:
        rows = self._read("SELECT * FROM individuals WHERE individual_id = ?", (individual_id,))
        return Individual(**dict(rows[0])) if rows else None

    def individuals(self) -> list[Individual]:
        rows = self._read("SELECT * FROM individuals ORDER BY individual_id")
        return [Individual(**dict(r)) for r in rows]

    def add_image(self, image: ImageRecord) -> None:
        if self.get_image(image.image_id) is not None:
            raise DuplicateError(f"image id {image.image_id!r} already exists")
        self._write(
            f"INSERT INTO images ({_IMAGE_COLUMNS}) VALUES ({', '.join('?' * 14)})",
            tuple(image.__dict__[c.strip()] for c in _IMAGE_COLUMNS.split(",")),
        )
        if image.encounter:
            self._write(
                "INSERT OR IGNORE INTO encounters VALUES (?, ?, ?)",
                (image.encounter, image.date, image.location),
            )

    def update_image(self, image: ImageRecord) -> None:
        columns = [c.strip() for c in _IMAGE_COLUMNS.split(",")][1:]
        cursor = self._write(
            f"UPDATE images SET {', '.join(f'{c}=?' for c in columns)} WHERE image_id=?",
            (*(image.__dict__[c] for c in columns), image.image_id),
        )
        if cursor.rowcount != 1:
            raise NotFoundError(f"no image {image.image_id!r}")

    def get_image(self, image_id: str) -> ImageRecord | None:
        rows = self._read(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE image_id = ?", (image_id,))
        return _image(rows[0]) if rows else None

    def images(
        self, *, individual_id: str | None = None, role: str | None = None
    ) -> list[ImageRecord]:
        where, args = [], []
        if individual_id is not None:
            where.append("individual_id = ?")
            args.append(individual_id)
        if role is not None:
            where.append("role = ?")
            args.append(role)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {_IMAGE_COLUMNS} FROM images {clause} ORDER BY date, image_id", args
        )
        return [_image(r) for r in rows]

    def images_by_content(self, sha256: str) -> list[ImageRecord]:
        rows = self._read(
            f"SELECT {_IMAGE_COLUMNS} FROM images WHERE sha256 = ? ORDER BY image_id", (sha256,)
        )
        return [_image(r) for r in rows]

    def encounters(self) -> list[tuple[str, str, str]]:
        """Every encounter as ``(encounter_id, date, location)``."""
        rows = self._read("SELECT * FROM encounters ORDER BY date, encounter_id")
        return [(r[0], r[1], r[2]) for r in rows]

    def put_vectors(self, space: str, image_ids: Sequence[str], vectors: np.ndarray) -> None:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self._depth:
            raise CatalogueError("internal: a store write outside a transaction")
        self._db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
            ((space, i, row.tobytes()) for i, row in zip(image_ids, matrix, strict=True)),
        )

    def vectors(self, space: str, image_ids: Sequence[str]) -> np.ndarray:
        found: dict[str, bytes] = {}
        with self._lock:
            for start in range(0, len(image_ids), 500):
                chunk = list(image_ids[start : start + 500])
                marks = ", ".join("?" * len(chunk))
                for row in self._db.execute(
                    f"SELECT image_id, vector FROM vectors WHERE space = ? AND image_id IN "
                    f"({marks})",
                    (space, *chunk),
                ):
                    found[row[0]] = row[1]
        missing = [i for i in image_ids if i not in found]
        if missing:
            raise NotFoundError(f"no vector in the catalogue's space for image {missing[0]!r}")
        if not image_ids:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.frombuffer(found[i], dtype=np.float32) for i in image_ids])

    def vector_ids(self, space: str) -> set[str]:
        return {r[0] for r in self._read("SELECT image_id FROM vectors WHERE space = ?", (space,))}

    def drop_space(self, space: str) -> None:
        self._write("DELETE FROM vectors WHERE space = ?", (space,))

    def add_identification(self, record: IdentificationRecord) -> int:
        r = record
        cursor = self._write(
            f"INSERT INTO identifications ({_ID_COLUMNS}) VALUES (NULL, {', '.join('?' * 13)})",
            (
                r.query_image_id,
                r.created_at,
                json.dumps([c.to_dict() for c in r.candidates]),
                r.decision,
                r.threshold,
                json.dumps(r.filters.__dict__),
                r.space,
                r.model,
                json.dumps(r.outside_filters.to_dict()) if r.outside_filters else None,
                r.duplicate_of,
                int(r.reranked),
                json.dumps(r.timings_ms),
                json.dumps(r.details()),
            ),
        )
        return int(cursor.lastrowid or 0)

    def identifications(self, query_image_id: str) -> list[IdentificationRecord]:
        rows = self._read(
            f"SELECT {_ID_COLUMNS} FROM identifications WHERE query_image_id = ? "
            "ORDER BY identification_id",
            (query_image_id,),
        )
        return [_identification(r) for r in rows]

    def append_event(self, event: Event) -> int:
        e = event
        cursor = self._write(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (NULL, {', '.join('?' * 13)})",
            (
                e.at,
                e.who,
                e.action,
                e.query_image_id,
                e.individual_id,
                e.other_id,
                e.candidate_image_id,
                e.identification_id,
                e.confidence,
                json.dumps(list(e.tags)),
                e.note,
                e.undoes,
                e.details,
            ),
        )
        return int(cursor.lastrowid or 0)

    def events(
        self, *, query_image_id: str | None = None, individual_id: str | None = None
    ) -> list[Event]:
        where, args = [], []
        if query_image_id is not None:
            where.append("query_image_id = ?")
            args.append(query_image_id)
        if individual_id is not None:
            where.append("(individual_id = ? OR other_id = ?)")
            args.extend([individual_id, individual_id])
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT {_EVENT_COLUMNS} FROM events {clause} ORDER BY event_id", args)
        return [_event(r) for r in rows]

    def counts(self) -> dict[str, int]:
        def one(sql: str) -> int:
            return int(self._read(sql)[0][0])

        return {
            "individuals": one("SELECT COUNT(*) FROM individuals WHERE merged_into IS NULL"),
            "images": one("SELECT COUNT(*) FROM images WHERE role = 'gallery'"),
            "queries": one("SELECT COUNT(*) FROM images WHERE role = 'query'"),
            "identifications": one("SELECT COUNT(*) FROM identifications"),
            "decisions": one("SELECT COUNT(*) FROM events"),
        }


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (triggers hold ``;`` inside ``BEGIN ... END``)."""
    statements, current = [], ""
    for line in sql.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
