"""Pydantic request bodies of the HTTP API (they define the OpenAPI spec's inputs)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["DecisionIn", "MergeIn", "RenameIn", "SplitIn", "UndoIn"]


class DecisionIn(BaseModel):
    """A person's verdict on a query."""

    verdict: str = Field(description="same, different, cannot_tell or new")
    who: str = Field(min_length=1, max_length=200, description="Who decides (audit log).")
    individual_id: str | None = Field(None, description="The candidate (same / different).")
    candidate_image_id: str = ""
    new_individual_id: str | None = Field(None, description="Id for a new individual.")
    name: str = Field("", max_length=200, description="Display name for a new individual.")
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    tags: list[str] = Field(default_factory=list, max_length=20)
    note: str = Field("", max_length=2000)
    identification_id: int | None = None


class UndoIn(BaseModel):
    """Who undoes the last decision on a query."""

    who: str = Field(min_length=1, max_length=200)


class MergeIn(BaseModel):
    """Merge ``absorb`` into the individual of the path."""

    absorb: str
    who: str = Field(min_length=1, max_length=200)
    note: str = Field("", max_length=2000)


class SplitIn(BaseModel):
    """Move ``image_ids`` of the individual of the path to a new individual."""

    image_ids: list[str] = Field(min_length=1)
    who: str = Field(min_length=1, max_length=200)
    new_individual_id: str | None = None
    name: str = ""
    note: str = Field("", max_length=2000)


class RenameIn(BaseModel):
    """A new display name."""

    name: str = Field(min_length=1, max_length=200)
    who: str = Field(min_length=1, max_length=200)
