"""Training losses: thin typed adapters over pytorch-metric-learning, plus what it lacks.

Build a weighted sum of named losses with :func:`build_loss` from :class:`LossSpec` terms
(see :mod:`wildreid.losses.composite` for the names and their options); the resulting
:class:`CompositeLoss` takes pre-BNNeck ``features``, post-BNNeck ``embeddings`` and integer
``labels`` and returns a :class:`LossOutput`. Importing this package imports torch and
pytorch-metric-learning.
"""

from __future__ import annotations

from wildreid.losses.base import LossComponent, LossContext, LossKind, LossParamGroup
from wildreid.losses.composite import (
    LOSSES,
    CompositeLoss,
    LossOutput,
    LossSpec,
    bnneck_baseline_specs,
    build_loss,
)
from wildreid.losses.margins import dynamic_margins

__all__ = [
    "LOSSES",
    "CompositeLoss",
    "LossComponent",
    "LossContext",
    "LossKind",
    "LossOutput",
    "LossParamGroup",
    "LossSpec",
    "bnneck_baseline_specs",
    "build_loss",
    "dynamic_margins",
]
