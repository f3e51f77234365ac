"""Parameters of the faiss index kinds (importable without faiss)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from wildreid.errors import ConfigError

__all__ = ["FAISS_KINDS", "FaissParams", "FlatParams", "HNSWParams", "IVFParams", "make_params"]

FAISS_KINDS = ("flat", "hnsw", "ivf")


def _check_positive(owner: object) -> None:
    for name, value in vars(owner).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{type(owner).__name__}.{name} must be an integer >= 1, got {value!r}"
            )


@dataclass(frozen=True)
class FlatParams:
    """The ``flat`` kind has no parameters."""


@dataclass(frozen=True)
class HNSWParams:
    """``m``: graph neighbours per node; ``ef_construction`` / ``ef_search``: beam widths.

    faiss does not widen the search beam to ``k``: an ``ef_search`` below the ``k`` asked for
    still returns ``k`` hits but with sharply lower recall. Keep ``ef_search >= k``.
    """

    m: int = 32
    ef_construction: int = 40
    ef_search: int = 64

    def __post_init__(self) -> None:
        _check_positive(self)


@dataclass(frozen=True)
class IVFParams:
    """``nlist``: number of k-means cells; ``nprobe``: cells visited per query."""

    nlist: int = 100
    nprobe: int = 8

    def __post_init__(self) -> None:
        _check_positive(self)


FaissParams = FlatParams | HNSWParams | IVFParams
_PARAM_TYPES: dict[str, type[FlatParams] | type[HNSWParams] | type[IVFParams]] = {
    "flat": FlatParams,
    "hnsw": HNSWParams,
    "ivf": IVFParams,
}


def make_params(kind: str, params: dict[str, Any]) -> FaissParams:
    """The parameter object of ``kind`` from keyword values; defaults fill the rest.

    Raises:
        ConfigError: unknown kind, a parameter the kind does not take (valid ones listed), or a
            value that is not an integer >= 1.
    """
    if kind not in _PARAM_TYPES:
        raise ConfigError(f"unknown faiss index kind {kind!r}; known: {', '.join(FAISS_KINDS)}")
    cls = _PARAM_TYPES[kind]
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"faiss {kind} index has no parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(valid) or 'none'}"
        )
    return cls(**params)
