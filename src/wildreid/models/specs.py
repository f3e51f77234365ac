"""What the model registry holds: a card, the architecture, and how to load the weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wildreid.models.cards import ModelCard
from wildreid.models.heads import EmbeddingNet, NetConfig

__all__ = ["LoadWeights", "ModelSpec"]

LoadWeights = Callable[[Path | None], tuple[EmbeddingNet, Path]]
"""``load(weights)`` builds the net with weights from ``weights`` (a local file), or from the
model's default source when ``None`` (which may download). Returns the net (on the CPU) and the
file actually read, whose SHA-256 identifies the embedding space."""


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes:
        card: the model card (no weights needed to show it).
        net_config: the architecture; ``EmbeddingNet.from_config(net_config)`` is the model
            with random weights (cheap on the ``meta`` device).
        load: see :data:`LoadWeights`.
    """

    card: ModelCard
    net_config: NetConfig
    load: LoadWeights
