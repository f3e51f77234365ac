"""An on-disk cache of per-image results keyed by (settings, image id, file fingerprint).

What is cached is opaque bytes: embeddings (:class:`~wildreid.models.cache.EmbeddingCache`) and
local features (:class:`~wildreid.matching.feature_cache.FeatureCache`) build on it, so both
invalidate and recover the same way.

Format:
    One SQLite database per settings key in the cache folder, named
    ``<first 16 hex digits of sha256(key)>.sqlite``, where ``key`` is a JSON text of everything
    that decides the result (an embedding space, an extractor's settings). Table ``meta`` holds
    ``format`` (``"1"``) and ``space`` (the key, checked on every use); table ``vectors`` holds one
    row per image: ``image_id`` (primary key), the fingerprint ``path`` (absolute), ``size``
    (bytes), ``mtime_ns`` and ``bbox`` (the metadata cell, verbatim), and ``vector`` (the bytes).

A cached entry is used only when the whole fingerprint still matches: rewriting or touching the
file, moving the dataset root or editing the bbox cell recomputes that image. The fingerprint is
taken (:meth:`CacheRow.of`) before the image is read, so a file changed while it is processed is
processed again next time.

Robustness: every write is one SQLite transaction, so a crash leaves the previous content, and
concurrent readers and writers are serialised by SQLite's locking (wait up to ``timeout_s``). The
cache never fails a run: an unreadable, corrupt or foreign file is logged as a warning and
replaced by an empty database (atomically, :func:`os.replace`); a busy or read-only cache is logged
and skipped. Keep the folder on a local disk: SQLite's locking is unreliable on network shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CacheRow", "FingerprintCache"]

logger = logging.getLogger(__name__)

FORMAT = "1"
_QUERY_CHUNK = 500  # ids per SELECT ... IN (...), under SQLite's variable limit
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS vectors (image_id TEXT PRIMARY KEY, path TEXT NOT NULL, "
    "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, bbox TEXT NOT NULL, vector BLOB NOT NULL)",
)


@dataclass(frozen=True)
class CacheRow:
    """One metadata row with the fingerprint of its image file.

    Attributes:
        image_id: the row's id.
        path: the image file, absolute.
        size: file size in bytes; ``-1`` when the file could not be examined (never cached).
        mtime_ns: modification time in nanoseconds.
        bbox: the metadata ``bbox`` cell, verbatim (empty when absent).
    """

    image_id: str
    path: str
    size: int
    mtime_ns: int
    bbox: str = ""

    @classmethod
    def of(cls, image_id: str, path: str | os.PathLike[str], bbox: str = "") -> CacheRow:
        """Fingerprint ``path`` now (a missing or unreadable file gives ``size=-1``)."""
        absolute = Path(path).absolute()
        try:
            info = absolute.stat()
        except OSError:
            return cls(image_id, str(absolute), -1, -1, bbox)
        return cls(image_id, str(absolute), info.st_size, info.st_mtime_ns, bbox)

    @property
    def fingerprint(self) -> tuple[str, int, int, str]:
        """``(path, size, mtime_ns, bbox)``."""
        return self.path, self.size, self.mtime_ns, self.bbox


class _CorruptCacheError(Exception):
    """The database exists but is not a cache of the expected space and format."""


class FingerprintCache:
    """Bytes on disk, one SQLite file per settings key (see the module docstring).

    Args:
        directory: the cache folder (created on the first store).
        timeout_s: how long to wait for another process's write lock before giving up.
        what: what is cached, for log messages (``"embedding"``, ``"feature"``).
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, timeout_s: float = 30.0, what: str = "result"
    ) -> None:
        self.directory = Path(directory)
        self.timeout_s = timeout_s
        self.what = what

    def path_for_key(self, key: str) -> Path:
        """The database file of settings ``key``."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        return self.directory / f"{digest}.sqlite"

    def lookup_bytes(
        self, key: str, rows: Sequence[CacheRow]
    ) -> tuple[dict[str, bytes], list[CacheRow]]:
        """Split ``rows`` into cached entries (by image id) and rows to compute (in order)."""
        path = self.path_for_key(key)
        stored: dict[str, tuple[tuple[str, int, int, str], bytes]] = {}
        if path.is_file():
            try:
                with self._open(path, key, create=False) as db:
                    if db is not None:
                        stored = self._select(db, [r.image_id for r in rows if r.size >= 0])
            except (sqlite3.Error, _CorruptCacheError) as exc:
                self._recover(path, exc)
        found: dict[str, bytes] = {}
        missing: list[CacheRow] = []
        for row in rows:
            hit = stored.get(row.image_id)
            if hit is None or row.size < 0 or hit[0] != row.fingerprint:
                missing.append(row)
            else:
                found[row.image_id] = hit[1]
        logger.debug("cache %s: %d hit(s), %d miss(es)", path.name, len(found), len(missing))
        return found, missing

    def store_bytes(self, key: str, rows: Sequence[CacheRow], blobs: Sequence[bytes]) -> int:
        """Save the entries of ``rows`` (replacing older entries of the same image ids).

        Rows whose file could not be fingerprinted (``size < 0``) are not saved. Failures are
        logged, never raised.

        Returns:
            The number of entries saved.
        """
        if len(blobs) != len(rows):
            raise ValueError(f"{len(rows)} rows but {len(blobs)} entries")
        records = [
            (*row.fingerprint, row.image_id, blob)
            for row, blob in zip(rows, blobs, strict=True)
            if row.size >= 0
        ]
        if not records:
            return 0
        path = self.path_for_key(key)
        for attempt in (1, 2):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with self._open(path, key, create=True) as db:
                    assert db is not None  # created
                    with db:
                        db.executemany(
                            "INSERT OR REPLACE INTO vectors (path, size, mtime_ns, bbox, "
                            "image_id, vector) VALUES (?, ?, ?, ?, ?, ?)",
                            records,
                        )
                return len(records)
            except (sqlite3.Error, _CorruptCacheError, OSError) as exc:
                if attempt == 2 or not self._recover(path, exc):
                    break
        logger.warning("%s cache %s: %d entries not saved", self.what, path, len(records))
        return 0

    @contextlib.contextmanager
    def _open(self, path: Path, key: str, *, create: bool) -> Iterator[sqlite3.Connection | None]:
        """Connect and check the file; yield ``None`` for an empty file unless ``create``."""
        db = sqlite3.connect(path, timeout=self.timeout_s)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                if not create:
                    yield None
                    return
                tables = self._create(db, key)
            elif not {"meta", "vectors"} <= tables:
                raise _CorruptCacheError(f"tables {sorted(tables)} are not a {self.what} cache's")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != FORMAT or meta.get("space") != key:
                raise _CorruptCacheError(f"format {meta.get('format')!r} or space differs")
            yield db
        finally:
            db.close()

    @staticmethod
    def _create(db: sqlite3.Connection, key: str) -> set[str]:
        """Create the schema in one transaction, unless another process did it first.

        The write lock is taken before looking again, so a concurrent reader or writer sees
        either no tables or the whole schema with its metadata, never a half-made cache.
        """
        db.execute("BEGIN IMMEDIATE")
        try:
            query = "SELECT name FROM sqlite_master WHERE type='table'"
            tables = {r[0] for r in db.execute(query)}
            if not tables:
                for statement in _SCHEMA:
                    db.execute(statement)
                db.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [("format", FORMAT), ("space", key)],
                )
                tables = {r[0] for r in db.execute(query)}
            db.commit()
        except BaseException:
            db.rollback()
            raise
        return tables

    @staticmethod
    def _select(
        db: sqlite3.Connection, image_ids: list[str]
    ) -> dict[str, tuple[tuple[str, int, int, str], bytes]]:
        stored: dict[str, tuple[tuple[str, int, int, str], bytes]] = {}
        for start in range(0, len(image_ids), _QUERY_CHUNK):
            chunk = image_ids[start : start + _QUERY_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT image_id, path, size, mtime_ns, bbox, vector FROM vectors "
                f"WHERE image_id IN ({marks})"
            )
            for image_id, path, size, mtime_ns, bbox, vector in db.execute(query, chunk):
                stored[image_id] = ((path, size, mtime_ns, bbox), bytes(vector))
        return stored

    def _recover(self, path: Path, exc: Exception) -> bool:
        """Replace a corrupt file by an empty one; return whether it was replaced."""
        if isinstance(exc, OSError) or (
            isinstance(exc, sqlite3.OperationalError) and not _looks_corrupt(exc)
        ):
            logger.warning("%s cache %s unusable (%s); continuing without it", self.what, path, exc)
            return False
        logger.warning(
            "%s cache %s is corrupt or not a cache of these settings (%s); rebuilding it",
            self.what,
            path,
            exc,
        )
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)  # an empty file is an empty SQLite database
            Path(tmp).replace(path)
        except OSError as replace_exc:
            logger.warning("%s cache %s could not be replaced (%s)", self.what, path, replace_exc)
            return False
        for suffix in ("-journal", "-wal", "-shm"):  # stale companions of the old file
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return True


def _looks_corrupt(exc: sqlite3.OperationalError) -> bool:
    """Whether an OperationalError means a damaged file rather than a busy or read-only one."""
    text = str(exc).lower()
    return "no such table" in text or "no such column" in text or "malformed" in text
