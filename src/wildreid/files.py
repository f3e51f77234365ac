"""Atomic file output: a reader never sees a half-written file.

Every file wildreid writes goes through :func:`atomic_path`: the content is written to a temporary
file in the same folder and moved into place with :func:`os.replace` only when writing succeeded.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]


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
