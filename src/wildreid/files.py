"""Files: atomic output (a reader never sees a half-written file) and content digests.

Every file wildreid writes goes through :func:`atomic_path`: the content is written to a temporary
file in the same folder and moved into place with :func:`os.replace` only when writing succeeded.
:func:`sha256_file` pins the content of weights and index files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "sha256_file"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` in one step.

    The parent folder is created if needed. If the body raises, the temporary file is removed
    and ``target`` is left as it was (absent, or its old content).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    # Created like any new file (mode 0o666 less the umask), unlike mkstemp's private 0o600.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes, streamed.

    Raises:
        OSError: the file cannot be read.
    """
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
