"""Atomic file output: a reader never sees a half-written file.

Every file wildreid writes goes through :func:`atomic_path`: the content is written to a temporary
file in the same folder and moved into place with :func:`os.replace` only when writing succeeded.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
