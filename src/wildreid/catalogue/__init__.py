"""The catalogue of known individuals: records, stores, the bundle and the :class:`Catalogue`.

Importing this package does not import torch or faiss; the model is loaded when a catalogue
first embeds an image.
"""

from __future__ import annotations

from wildreid.catalogue.bundle import Bundle
from wildreid.catalogue.catalogue import Catalogue, CheckReport, DecisionPolicy, EnrolResult
from wildreid.catalogue.records import (
    VERDICTS,
    CatalogueCandidate,
    Event,
    Filters,
    IdentificationRecord,
    ImageRecord,
    Individual,
)
from wildreid.catalogue.sqlite import SCHEMA_VERSION, SQLiteStore
from wildreid.catalogue.store import CatalogueStore, MemoryStore

__all__ = [
    "SCHEMA_VERSION",
    "VERDICTS",
    "Bundle",
    "Catalogue",
    "CatalogueCandidate",
    "CatalogueStore",
    "CheckReport",
    "DecisionPolicy",
    "EnrolResult",
    "Event",
    "Filters",
    "IdentificationRecord",
    "ImageRecord",
    "Individual",
    "MemoryStore",
    "SQLiteStore",
]
