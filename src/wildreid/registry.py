"""A generic name -> component registry.

Registering a name twice is an error; looking up an unknown name raises
:class:`~wildreid.errors.UnknownComponentError` that suggests the closest registered names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from wildreid.errors import ConfigError, UnknownComponentError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named components of one kind (``kind`` appears in error messages, e.g. ``"split kind"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; a duplicate name raises ConfigError."""
        if name in self._items:
            raise ConfigError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(item: T) -> T:
            return self.add(name, item)

        return decorate

    def get(self, name: str) -> T:
        """Return the component named ``name``.

        Raises:
            UnknownComponentError: no such name; the message lists close matches.
        """
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(map(repr, close))}?" if close else ""
            known = f"known: {', '.join(sorted(self._items))}"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}; {hint + ' ' if hint else ''}{known}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
