"""Weighted sums of named losses: :class:`LossSpec` -> :func:`build_loss` -> :class:`CompositeLoss`.

=====================  ===========  =============================================================
name                   reads        options (defaults)
=====================  ===========  =============================================================
``triplet``            features     ``margin=0.3, mining="semihard", distance="euclidean",
                                    normalize_embeddings=True, soft_margin=False,
                                    reduction="mean_nonzero"``
``center``             features     ``center_lr=0.5``
``softmax_ce``         embeddings   ``label_smoothing=0.1``
``arcface``            embeddings   ``margin_rad=0.5, scale=64.0``
``subcenter_arcface``  embeddings   ``sub_centers=3, scale=30.0, margin_rad=0.5,
                                    dynamic_margin=False, margin_min_rad=0.05,
                                    margin_max_rad=0.5, margin_power=0.25``
=====================  ===========  =============================================================

*features* are the pre-BNNeck vectors, *embeddings* the post-BNNeck (inference) ones, as in
the BNNeck baseline (Luo et al. 2019); without a BNNeck pass the same tensor twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from wildreid.errors import ConfigError
from wildreid.losses import classification, metric
from wildreid.losses.base import LossComponent, LossContext, LossKind, LossParamGroup, parse_params
from wildreid.registry import Registry

__all__ = [
    "LOSSES",
    "CompositeLoss",
    "LossOutput",
    "LossSpec",
    "bnneck_baseline_specs",
    "build_loss",
]


def _build_registry() -> Registry[LossKind[Any]]:
    registry: Registry[LossKind[Any]] = Registry("loss")
    for name, kind in {**metric.kinds(), **classification.kinds()}.items():
        registry.add(name, kind)
    return registry


LOSSES: Registry[LossKind[Any]] = _build_registry()
"""Every registered loss kind, by name."""


@dataclass(frozen=True)
class LossSpec:
    """One term of a composite loss.

    Attributes:
        name: a name in :data:`LOSSES`.
        weight: multiplies the term; finite and > 0 (drop a term rather than weight it 0).
        params: the loss's keyword options (see the module table); validated by
            :func:`build_loss`. Copied on creation.

    Raises:
        ConfigError: a weight that is not a finite positive number, or params that are not
            a mapping.
    """

    name: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        weight = self.weight
        number = isinstance(weight, int | float) and not isinstance(weight, bool)
        if not (number and math.isfinite(weight) and weight > 0):
            raise ConfigError(
                f"loss {self.name!r}: weight must be a finite number > 0, got {weight!r}"
            )
        if not isinstance(self.params, Mapping):
            raise ConfigError(
                f"loss {self.name!r}: params must be a mapping of option names to values, "
                f"got {type(self.params).__name__}"
            )
        object.__setattr__(self, "params", dict(self.params))


@dataclass(frozen=True)
class LossOutput:
    """The result of one :class:`CompositeLoss` call.

    Attributes:
        total: scalar, differentiable: the sum of the weighted terms.
        parts: each term's weighted value (detached), by loss name.
        n_triplets: triplets mined by the triplet loss this batch (0: the batch had no
            identity with two images, or no violating triplet); ``None`` without one.
    """

    total: torch.Tensor
    parts: dict[str, float]
    n_triplets: int | None


class CompositeLoss(nn.Module):
    """Weighted sum of named loss terms.

    Terms with learnable parameters (classifier, ArcFace weights, centres) are submodules:
    the optimiser must include them, either all of ``composite.parameters()`` or, to honour
    per-loss needs such as the centres' own SGD, :meth:`parameter_groups`.

    Args:
        terms: ``(name, weight, component)`` triples, names unique.
        num_classes: C; labels must lie in ``[0, C)``.
        embedding_dim: D.
    """

    def __init__(
        self,
        terms: Sequence[tuple[str, float, LossComponent]],
        *,
        num_classes: int,
        embedding_dim: int,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.components = nn.ModuleDict({name: component for name, _, component in terms})
        self.weights: dict[str, float] = {name: weight for name, weight, _ in terms}

    def forward(
        self, *, features: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> LossOutput:
        """Compute every term and their weighted sum, in float32 with autocast off.

        Mixed-precision inputs are cast up: pml's ArcFace losses cast their weight *in place*
        to the input's dtype, and pml's Euclidean distance has a slow float16 path. The
        composite must live on the inputs' device (``composite.to(device)``).

        Shapes:
            features: (B, D) pre-BNNeck (triplet, centre loss).
            embeddings: (B, D) post-BNNeck (classification losses); may be ``features``.
            labels: (B,) integer class indices in ``[0, num_classes)``.

        Raises:
            ConfigError: shapes that do not match, non-integer labels, or labels outside
                ``[0, num_classes)``.
        """
        labels = self._check(features, embeddings, labels)
        features, embeddings = features.float(), embeddings.float()
        total = features.new_zeros(())
        parts: dict[str, float] = {}
        n_triplets: int | None = None
        for name, component in self._terms():
            x = features if component.reads == "features" else embeddings
            with torch.autocast(device_type=x.device.type, enabled=False):
                value, mined = component(x, labels)
            weighted = self.weights[name] * value
            total = total + weighted
            parts[name] = float(weighted.detach())
            if mined is not None:
                n_triplets = mined + (n_triplets or 0)
        return LossOutput(total=total, parts=parts, n_triplets=n_triplets)

    def classification_logits(self, embeddings: torch.Tensor) -> torch.Tensor | None:
        """Logits (B, C) of the first classification term (for accuracy), or ``None``."""
        for _, component in self._terms():
            logits = component.logits(embeddings)
            if logits is not None:
                return logits
        return None

    def parameter_groups(self) -> list[LossParamGroup]:
        """The learnable parameters by term, with their learning-rate needs.

        Groups with ``own_sgd=False`` join the model's optimiser (at the base rate unless
        ``lr`` is set); groups with ``own_sgd=True`` (the centres) get a plain
        ``torch.optim.SGD([g.to_torch() for g in own])``, stepped after the main optimiser and
        left out of its schedule. Every parameter appears in exactly one group.
        """
        groups: list[LossParamGroup] = []
        for name, component in self._terms():
            groups.extend(component.parameter_groups(name=name, weight=self.weights[name]))
        return groups

    def _terms(self) -> list[tuple[str, LossComponent]]:
        return [(name, cast(LossComponent, c)) for name, c in self.components.items()]

    def _check(
        self, features: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        expected = f"(B, {self.embedding_dim})"
        for what, tensor in (("features", features), ("embeddings", embeddings)):
            if tensor.ndim != 2 or tensor.shape[1] != self.embedding_dim or tensor.shape[0] < 1:
                raise ConfigError(f"{what} must have shape {expected}, got {tuple(tensor.shape)}")
        if features.shape != embeddings.shape:
            raise ConfigError(
                f"features {tuple(features.shape)} and embeddings {tuple(embeddings.shape)} differ"
            )
        if labels.shape != (features.shape[0],):
            raise ConfigError(
                f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}"
            )
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise ConfigError(f"labels must be integer class indices, got {labels.dtype}")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            raise ConfigError(
                f"labels must lie in [0, {self.num_classes}), got [{low}, {high}]; "
                "num_classes must count every training identity"
            )
        return labels.long()

    def extra_repr(self) -> str:
        return ", ".join(f"{name}*{weight:g}" for name, weight in self.weights.items())


def build_loss(
    specs: Sequence[LossSpec],
    *,
    num_classes: int,
    embedding_dim: int,
    class_counts: Sequence[int] | None = None,
) -> CompositeLoss:
    """Build the weighted sum of ``specs``.

    Args:
        specs: one or more terms with distinct names.
        num_classes: number of training identities.
        embedding_dim: D of features and embeddings.
        class_counts: training images per class (index = label); needed by
            ``subcenter_arcface(dynamic_margin=True)``.

    Raises:
        UnknownComponentError: a loss name is not registered (close names are suggested).
        ConfigError: no specs, a repeated name, an unknown option or bad value (the message
            names the loss and the option), bad sizes, or ``class_counts`` of the wrong
            length or with negative counts.
    """
    if not specs:
        raise ConfigError("no losses given; e.g. bnneck_baseline_specs() for the BNNeck baseline")
    if num_classes < 1 or embedding_dim < 1:
        raise ConfigError(
            f"num_classes and embedding_dim must be >= 1, got {num_classes} and {embedding_dim}"
        )
    counts: tuple[int, ...] | None = None
    if class_counts is not None:
        counts = tuple(int(n) for n in class_counts)
        if len(counts) != num_classes or min(counts) < 0:
            raise ConfigError(
                f"class_counts must hold {num_classes} non-negative counts (one per class), "
                f"got {len(counts)} values"
                + (f" with minimum {min(counts)}" if counts and min(counts) < 0 else "")
            )
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"loss {repeated[0]!r} is listed more than once; merge the entries into one "
            "(a term's weight can be any positive number)"
        )
    terms: list[tuple[str, float, LossComponent]] = []
    for spec in specs:
        kind = LOSSES.get(spec.name)
        params = parse_params(spec.name, kind.params_type, spec.params)
        context = LossContext(
            name=spec.name,
            num_classes=num_classes,
            embedding_dim=embedding_dim,
            class_counts=counts,
            given=frozenset(spec.params),
        )
        terms.append((spec.name, float(spec.weight), kind.build(params, context)))
    return CompositeLoss(terms, num_classes=num_classes, embedding_dim=embedding_dim)


def bnneck_baseline_specs() -> list[LossSpec]:
    """The BNNeck strong baseline (Luo et al. 2019): ID loss + batch-hard triplet + centres.

    ``softmax_ce(label_smoothing=0.1)`` on the embeddings, ``triplet(margin=0.3,
    mining="hard")`` on the raw (un-normalised) features averaged over every anchor, and
    ``center`` with weight 0.0005 and centre learning rate 0.5, as in the paper's code.
    """
    return [
        LossSpec("softmax_ce", 1.0, {"label_smoothing": 0.1}),
        LossSpec(
            "triplet",
            1.0,
            {"margin": 0.3, "mining": "hard", "normalize_embeddings": False, "reduction": "mean"},
        ),
        LossSpec("center", 0.0005, {"center_lr": 0.5}),
    ]
