"""The exception tree of wildreid.

Every error the library raises on purpose derives from :class:`WildReIDError`. Each class carries
an ``exit_code`` that the CLI uses, so scripts can tell failures apart without parsing messages.
Messages name the file, row or field at fault and say what to do about it.
"""

from __future__ import annotations

__all__ = [
    "CatalogueError",
    "ConfigError",
    "DataError",
    "DuplicateError",
    "EmbeddingSpaceError",
    "ImageReadError",
    "IndexBackendError",
    "MetadataError",
    "NotFoundError",
    "SchemaVersionError",
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


class CatalogueError(WildReIDError):
    """A catalogue operation cannot be done; the catalogue was left unchanged."""

    exit_code = 8


class NotFoundError(CatalogueError):
    """A catalogue, individual, image, query or decision does not exist."""

    exit_code = 9


class DuplicateError(CatalogueError):
    """Something that must be unique (an image id, a photo, an individual id) already exists."""

    exit_code = 10


class SchemaVersionError(CatalogueError):
    """A catalogue database was written by a newer wildreid (or is not a catalogue)."""

    exit_code = 11
