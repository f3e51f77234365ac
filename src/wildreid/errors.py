"""The exception tree of wildreid.

Every error the library raises on purpose derives from :class:`WildReIDError`. Each class carries
an ``exit_code`` that the CLI uses, so scripts can tell failures apart without parsing messages.
Messages name the file, row or field at fault and say what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "EmbeddingSpaceError",
    "ImageReadError",
    "IndexBackendError",
    "MetadataError",
    "UnknownComponentError",
    "WeightsError",
    "WildReIDError",
]


class WildReIDError(Exception):
    """Root of every error wildreid raises on purpose."""

    exit_code: int = 1


class ConfigError(WildReIDError):
    """A configuration value or option is invalid; nothing was done."""

    exit_code = 2


class UnknownComponentError(ConfigError):
    """A named component (model, loss, split kind, ...) is not registered."""


class DataError(WildReIDError):
    """Input data (metadata, images, splits) is unusable."""

    exit_code = 3


class MetadataError(DataError):
    """A metadata table failed validation.

    Attributes:
        problems: every problem found, each naming its row and column.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class ImageReadError(DataError):
    """An image file is missing, empty, truncated, corrupt, not an image, or too large."""

    exit_code = 4


class WeightsError(WildReIDError):
    """Model weights are missing, unreadable, or do not fit the architecture."""

    exit_code = 5


class EmbeddingSpaceError(WildReIDError):
    """Vectors from different embedding spaces (model, weights, preprocessing) were mixed."""

    exit_code = 6


class IndexBackendError(WildReIDError):
    """A vector index backend is unavailable or its file is unreadable."""

    exit_code = 7
