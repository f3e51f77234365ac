"""Image-id checks shared by every table, file and value object that holds ids.

One implementation of "are these ids unique?": :func:`first_repeat` finds the first id that
repeats an earlier one; callers word the error for their own source (a CSV row, a file
position, a protocol side) and raise their own exception type.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["first_repeat"]


def first_repeat(ids: Iterable[str]) -> tuple[int, int] | None:
    """Positions ``(earlier, later)`` of the first id equal to an earlier one, else ``None``.

    Positions are 0-based, in iteration order; ``later`` is the smallest position whose id
    occurred before, ``earlier`` that id's first position.
    """
    first: dict[str, int] = {}
    for position, image_id in enumerate(ids):
        earlier = first.setdefault(image_id, position)
        if earlier != position:
            return earlier, position
    return None
