"""Shared CLI output: results on stdout (rich or JSON), progress bars on stderr."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["echo_json", "progress_callback", "stderr_progress", "stdout_console"]


def stdout_console() -> Console:
    """A console for results; no colour codes and wide tables when stdout is not a terminal."""
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=200)
    return console


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (paths and dates as strings)."""
    print(json.dumps(value, indent=2, default=str))


def stderr_progress() -> Progress:
    """Progress bars on stderr, in the CLI's one style (use as a context manager)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


@contextlib.contextmanager
def progress_callback(description: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a progress bar on stderr."""
    with stderr_progress() as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
