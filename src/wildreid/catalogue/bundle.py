"""The catalogue bundle: one folder holding the database, the vector index and the image files.

Layout::

    DIR/catalogue.db              SQLite (WAL) database: records, vectors, audit log
    DIR/index.faiss(.json)        the active space's vector index (rebuilt from the database
                                  whenever it is missing, torn or out of step)
    DIR/images/ab/abcdef....jpg   image files named by the SHA-256 of their bytes
    DIR/features/                 local features of the images, one cache file per extractor
                                  setting (:class:`~wildreid.matching.feature_cache.FeatureCache`;
                                  recomputed whenever missing or stale)
    DIR/calibration.json          the calibration fitted on the catalogue's own images
                                  (``wildreid catalogue calibrate``), for one model and method

Files are content-addressed: the same photo added twice is stored once, and a file is never
overwritten with other bytes. Every file is written to a temporary name and moved into place, so
a crash never leaves a partial image under its final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from wildreid.data.importers import IMAGE_SUFFIXES
from wildreid.files import atomic_path

__all__ = ["CALIBRATION_NAME", "DB_NAME", "FEATURES_DIR", "IMAGES_DIR", "INDEX_NAME", "Bundle"]

DB_NAME = "catalogue.db"
INDEX_NAME = "index.faiss"
IMAGES_DIR = "images"
FEATURES_DIR = "features"
CALIBRATION_NAME = "calibration.json"
_CHUNK = 1 << 20


class Bundle:
    """Paths of a catalogue folder and its content-addressed image store."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def db_path(self) -> Path:
        """The SQLite database."""
        return self.root / DB_NAME

    @property
    def index_path(self) -> Path:
        """The vector index file of the active space."""
        return self.root / INDEX_NAME

    @property
    def features_dir(self) -> Path:
        """The local-feature cache folder."""
        return self.root / FEATURES_DIR

    @property
    def calibration_path(self) -> Path:
        """The calibration file."""
        return self.root / CALIBRATION_NAME

    def staged_index_path(self, space_key: str) -> Path:
        """Where a re-embedding builds the index of a new space before the switch."""
        return self.root / f"index-{space_key[:12]}.faiss"

    def file(self, relative: str) -> Path:
        """The absolute path of a stored file; refuses paths that leave the bundle."""
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise ValueError(f"{relative!r} is outside the catalogue {self.root}")
        return target

    def add_file(self, source: str | os.PathLike[str], *, suffix: str = "") -> tuple[str, str]:
        """Copy ``source`` into the image store (once per content).

        Returns:
            ``(sha256, path relative to the bundle)``.
        """
        source = Path(source)
        digest = hashlib.sha256()
        with source.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        sha = digest.hexdigest()
        relative = self.relative_for(sha, suffix or source.suffix)
        target = self.root / relative
        if not target.is_file():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        return sha, relative

    def add_bytes(self, data: bytes, *, suffix: str) -> tuple[str, str]:
        """Store ``data`` (once per content); returns ``(sha256, relative path)``."""
        sha = hashlib.sha256(data).hexdigest()
        relative = self.relative_for(sha, suffix)
        target = self.root / relative
        if not target.is_file():
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
        return sha, relative

    @staticmethod
    def relative_for(sha: str, suffix: str) -> str:
        """The store path of content ``sha``: ``images/<2 hex>/<sha><suffix>``."""
        suffix = suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            suffix = ".img"
        return f"{IMAGES_DIR}/{sha[:2]}/{sha}{suffix}"

    def stored_files(self) -> list[str]:
        """Every file of the image store, relative to the bundle (temporary files excluded)."""
        folder = self.root / IMAGES_DIR
        if not folder.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
