"""What every loss component shares: the module base class, its registry entry, option parsing.

A *loss kind* (:class:`LossKind`) pairs a frozen dataclass of keyword options with a builder
that turns validated options into a :class:`LossComponent`. Options arrive as a plain mapping
(from YAML or Python); :func:`parse_params` rejects unknown keys and values of the wrong type,
and builders check ranges with :func:`require`. Every message names the loss and the option.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin, get_type_hints

import torch
from torch import nn

from wildreid.errors import ConfigError

__all__ = [
    "LossComponent",
    "LossContext",
    "LossKind",
    "LossParamGroup",
    "parse_params",
    "require",
]

P = TypeVar("P")

Reads = Literal["features", "embeddings"]


@dataclass(frozen=True)
class LossParamGroup:
    """Learnable parameters of one loss and how the trainer should optimise them.

    Attributes:
        name: the loss name (``"center"``, ``"softmax_ce"``, ...).
        params: the parameters, each in exactly one group.
        lr: absolute learning rate for this group; ``None`` means the trainer's base rate
            (and its schedule).
        own_sgd: step this group with its own plain SGD (no momentum, no weight decay, no
            schedule) at ``lr`` instead of the trainer's optimizer, as the centre-loss papers
            do for the class centres.
        weight_decay: override of the trainer's weight decay; ``None`` keeps it.
    """

    name: str
    params: tuple[nn.Parameter, ...]
    lr: float | None = None
    own_sgd: bool = False
    weight_decay: float | None = None

    def to_torch(self) -> dict[str, Any]:
        """A ``torch.optim`` parameter-group dict (``lr``/``weight_decay`` only when set)."""
        group: dict[str, Any] = {"params": list(self.params)}
        if self.lr is not None:
            group["lr"] = self.lr
        if self.weight_decay is not None:
            group["weight_decay"] = self.weight_decay
        return group


class LossComponent(nn.Module):
    """One unweighted loss term; :class:`~wildreid.losses.CompositeLoss` weights and sums them.

    Subclasses set :attr:`reads` and implement :meth:`forward`; classification losses also
    implement :meth:`logits`, losses with special optimiser needs :meth:`parameter_groups`.

    Shapes:
        x: (B, D), the tensor named by :attr:`reads`.
        labels: (B,) int64 class indices.
        output: a scalar loss and the number of mined triplets/pairs (``None`` when the loss
            does not mine).
    """

    reads: ClassVar[Reads] = "embeddings"
    """``features`` (pre-BNNeck, metric losses) or ``embeddings`` (post-BNNeck, classifiers)."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        raise NotImplementedError

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor | None:
        """Class scores (B, num_classes) for accuracy logging; ``None`` if not a classifier."""
        return None

    def parameter_groups(self, *, name: str, weight: float) -> list[LossParamGroup]:
        """Default: all parameters (if any) in one group trained like the model."""
        params = tuple(p for p in self.parameters() if p.requires_grad)
        return [LossParamGroup(name=name, params=params)] if params else []


@dataclass(frozen=True)
class LossContext:
    """What a builder knows besides its options.

    Attributes:
        name: the registered loss name (for messages).
        num_classes: number of training identities; labels lie in ``[0, num_classes)``.
        embedding_dim: D of the features and embeddings.
        class_counts: training images per class, index = label, or ``None`` if not given.
        given: the option keys the spec set explicitly (to reject contradictory ones).
    """

    name: str
    num_classes: int
    embedding_dim: int
    class_counts: tuple[int, ...] | None = None
    given: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LossKind(Generic[P]):
    """A registered loss: its option dataclass and the builder of its component.

    Attributes:
        params_type: frozen dataclass of keyword options; fields typed ``float``, ``int``,
            ``bool`` or ``Literal[...]`` of strings, all with defaults.
        build: validated options + context -> component; raises ConfigError for bad values.
        summary: one line for listings.
    """

    params_type: type[P]
    build: Callable[[P, LossContext], LossComponent]
    summary: str


def require(ok: bool, loss: str, option: str, problem: str) -> None:
    """Raise ``ConfigError("loss 'loss': option ...")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"loss {loss!r}: option {option!r} {problem}")


def _coerce(loss: str, option: str, hint: Any, value: Any) -> Any:
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        require(value in choices, loss, option, f"must be one of {list(choices)}, got {value!r}")
        return value
    if hint is bool:
        require(isinstance(value, bool), loss, option, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        require(ok, loss, option, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        require(
            ok and math.isfinite(value), loss, option, f"must be a finite number, got {value!r}"
        )
        return float(value)
    raise TypeError(f"unsupported option type {hint!r} for {loss}.{option}")  # programming error


def parse_params(loss: str, params_type: type[P], raw: Mapping[str, Any]) -> P:
    """Validate ``raw`` options of ``loss`` and build its option dataclass.

    Raises:
        ConfigError: an unknown key (the message lists the valid ones) or a value of the
            wrong type or outside a ``Literal``'s choices.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"loss {loss!r}: params must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(params_type)
    names = [f.name for f in dataclasses.fields(params_type)]  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        valid = ", ".join(names) if names else "none"
        raise ConfigError(
            f"loss {loss!r}: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; valid options: {valid}"
        )
    values = {key: _coerce(loss, key, hints[key], value) for key, value in raw.items()}
    return params_type(**values)
