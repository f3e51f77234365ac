"""Embedding heads on top of timm backbones: pooling, optional projection, optional BNNeck.

An :class:`EmbeddingNet` is a timm backbone plus an :class:`EmbeddingHead`. Two backbone kinds:

* feature-map backbones (CNNs) are created with ``num_classes=0, global_pool=""`` and return
  ``(B, C, H, W)``; the head pools them (``pooling="avg"`` or ``"gem"``);
* token backbones (ViT, DINOv2/v3, CLIP, Swin) keep timm's own pooling (``num_classes=0`` and the
  default ``global_pool``) and return ``(B, C)``; the head uses ``pooling="none"``.

The net returns features *before* L2 normalisation; the embedder normalises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import timm
import torch
from torch import nn

from wildreid.errors import ConfigError
from wildreid.models.landmark import ReconstructionBlock, first_conv_name

__all__ = [
    "POOLINGS",
    "EmbeddingHead",
    "EmbeddingNet",
    "GeM",
    "NetConfig",
    "Pooling",
    "backbone_out_features",
    "build_backbone",
]


Pooling = Literal["avg", "gem", "none"]
POOLINGS: tuple[str, ...] = get_args(Pooling)


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial dimensions, with a learnable exponent ``p``.

    ``p = 1`` is average pooling, ``p -> inf`` approaches max pooling. Values are clamped to
    ``eps`` first so fractional powers stay defined.

    Shapes:
        input: (B, C, H, W).
        output: (B, C).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach().cpu()[0]):.4f}, eps={self.eps}"


class _AvgPool(nn.Module):
    """Global average pooling; (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class EmbeddingHead(nn.Module):
    """Pool -> optional linear projection -> optional BNNeck.

    BNNeck (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-ID"): a
    BatchNorm1d whose bias is frozen at zero. A metric loss (triplet) reads the features before
    it, an identity classifier the features after it, and at inference the embedding is the
    BN output. :meth:`forward_pair` gives both for training.

    Args:
        in_features: channels of the backbone output.
        pooling: ``avg`` or ``gem`` for (B, C, H, W) feature maps; ``none`` for backbones that
            already pool, (B, C).
        embedding_dim: output size of a linear projection; ``None`` for no projection.
        bnneck: add the BNNeck.

    Shapes:
        input: (B, C, H, W) for ``avg``/``gem``, (B, C) for ``none``.
        output: (B, D), D = ``embedding_dim`` or ``in_features``.

    Raises:
        ConfigError: unknown pooling, non-positive sizes, or (at forward) an input of the
            wrong rank for the pooling.
    """

    def __init__(
        self,
        in_features: int,
        *,
        pooling: Pooling = "avg",
        embedding_dim: int | None = None,
        bnneck: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling {pooling!r} not in {POOLINGS}")
        if in_features < 1 or (embedding_dim is not None and embedding_dim < 1):
            raise ConfigError(
                f"EmbeddingHead sizes must be positive, got in_features={in_features}, "
                f"embedding_dim={embedding_dim}"
            )
        self.in_features = in_features
        self.pooling: Pooling = pooling
        self.out_features = embedding_dim or in_features
        self.pool: nn.Module = {"avg": _AvgPool, "gem": GeM, "none": nn.Identity}[pooling]()
        self.proj: nn.Linear | None = None
        if embedding_dim is not None:
            # A bias in front of a BatchNorm is redundant: the BN mean removes it.
            self.proj = nn.Linear(in_features, embedding_dim, bias=not bnneck)
        self.bnneck: nn.BatchNorm1d | None = None
        if bnneck:
            self.bnneck = nn.BatchNorm1d(self.out_features)
            self.bnneck.bias.requires_grad_(False)

    def forward_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features before and after the BNNeck (the same tensor twice without a BNNeck).

        Shapes:
            x: as for :meth:`forward`.
            output: two (B, D) tensors.
        """
        expected_rank = 2 if self.pooling == "none" else 4
        if x.ndim != expected_rank:
            raise ConfigError(
                f"EmbeddingHead(pooling={self.pooling!r}) expects a {expected_rank}-D input, "
                f"got shape {tuple(x.shape)}"
            )
        pre = self.pool(x)
        if self.proj is not None:
            pre = self.proj(pre)
        post = self.bnneck(pre) if self.bnneck is not None else pre
        return pre, post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pair(x)[1]


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild an :class:`EmbeddingNet` without weights.

    Attributes:
        backbone: timm model name, with a pretrained tag where one decides defaults such as
            the input size (``vit_small_patch14_dinov2.lvd142m``); it is always built with
            ``num_classes=0`` and ``pretrained=False``.
        pooling: see :class:`EmbeddingHead`; ``none`` keeps timm's own pooling.
        embedding_dim: projection size, ``None`` for none.
        bnneck: see :class:`EmbeddingHead`.
        backbone_kwargs: extra ``timm.create_model`` keyword arguments (plain values only,
            e.g. ``{"img_size": 224}``).
        landmarks: Landmark-Id: names of the heatmap input channels after RGB (the backbone
            takes ``3 + k`` channels); empty for an RGB network.
        radius_frac: the heatmap blob radius the network was trained with.
        reconstruction_weight: ``alpha`` of the reconstruction loss; ``None`` for no
            reconstruction block.
    """

    backbone: str
    pooling: Pooling = "avg"
    embedding_dim: int | None = None
    bnneck: bool = False
    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)
    landmarks: tuple[str, ...] = ()
    radius_frac: float = 0.05
    reconstruction_weight: float | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"NetConfig.pooling {self.pooling!r} not in {POOLINGS}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (what ``torch.load(weights_only=True)`` can read back)."""
        return {
            "backbone": self.backbone,
            "pooling": self.pooling,
            "embedding_dim": self.embedding_dim,
            "bnneck": self.bnneck,
            "backbone_kwargs": dict(self.backbone_kwargs),
            "landmarks": list(self.landmarks),
            "radius_frac": self.radius_frac,
            "reconstruction_weight": self.reconstruction_weight,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NetConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: a field is missing or malformed.
        """
        try:
            pooling = str(raw.get("pooling", "avg"))
            if pooling not in POOLINGS:
                raise ValueError(f"pooling {pooling!r} not in {POOLINGS}")
            dim = raw.get("embedding_dim")
            return cls(
                backbone=str(raw["backbone"]),
                pooling=cast(Pooling, pooling),
                embedding_dim=None if dim is None else int(dim),
                bnneck=bool(raw.get("bnneck", False)),
                backbone_kwargs=dict(raw.get("backbone_kwargs") or {}),
                landmarks=tuple(str(n) for n in raw.get("landmarks") or ()),
                radius_frac=float(raw.get("radius_frac", 0.05)),
                reconstruction_weight=(
                    None
                    if raw.get("reconstruction_weight") is None
                    else float(raw["reconstruction_weight"])
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a serialised NetConfig: {exc}") from exc


def build_backbone(config: NetConfig, **timm_kwargs: Any) -> nn.Module:
    """Create the timm backbone of ``config`` (no classifier; own pooling only for ``none``).

    ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``pretrained=True`` with a
    ``pretrained_cfg_overlay``); without them the backbone is randomly initialised.

    Raises:
        ConfigError: timm does not know the architecture.
    """
    kwargs: dict[str, Any] = {**config.backbone_kwargs, "num_classes": 0, **timm_kwargs}
    if config.landmarks:
        kwargs["in_chans"] = 3 + len(config.landmarks)
    if config.pooling != "none":
        kwargs["global_pool"] = ""
    try:
        return timm.create_model(config.backbone, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"timm has no architecture {config.backbone!r}") from exc
        raise


def backbone_out_features(backbone: nn.Module, pooling: Pooling) -> int:
    """Channels a timm backbone hands to the head: pre-logits size when it pools itself."""
    size: Any = getattr(backbone, "num_features", None)
    if pooling == "none":
        size = getattr(backbone, "head_hidden_size", None) or size
    if not isinstance(size, int):
        raise ConfigError(f"{type(backbone).__name__} does not say its number of features")
    return size


class EmbeddingNet(nn.Module):
    """A timm backbone and an :class:`EmbeddingHead`: normalised images -> embeddings.

    Args:
        backbone: timm model made as :func:`build_backbone` makes it.
        head: the head; its ``in_features`` must match the backbone's output.
        config: how to rebuild the pair without weights (needed to save a checkpoint).

    Shapes:
        input: (B, 3, H, W), normalised with the model card's mean/std.
        output: (B, D), not L2-normalised.
    """

    def __init__(
        self, backbone: nn.Module, head: EmbeddingHead, *, config: NetConfig | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = config
        self.landmarks: tuple[str, ...] = config.landmarks if config is not None else ()
        self.reconstruction: ReconstructionBlock | None = None
        if config is not None and config.reconstruction_weight is not None:
            self.reconstruction = ReconstructionBlock(head.out_features, len(self.landmarks))
            self.own_loss_name = "reconstruction"

    @classmethod
    def from_config(cls, config: NetConfig) -> EmbeddingNet:
        """A randomly initialised net (on the current default device, e.g. ``meta``)."""
        backbone = build_backbone(config)
        head = EmbeddingHead(
            backbone_out_features(backbone, config.pooling),
            pooling=config.pooling,
            embedding_dim=config.embedding_dim,
            bnneck=config.bnneck,
        )
        return cls(backbone, head, config=config)

    @property
    def embedding_dim(self) -> int:
        """D, the length of the output vector."""
        return self.head.out_features

    def forward_features_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features before and after the BNNeck, for training (metric loss, ID classifier).

        Shapes:
            x: (B, 3, H, W).
            output: two (B, D) tensors (identical without a BNNeck).
        """
        return self.head.forward_pair(self.backbone(x))

    own_loss_name: str | None = None
    """The name of the loss term :meth:`forward_train` adds (``None``: none)."""

    def own_loss_names(self) -> list[str]:
        """``[own_loss_name]`` or ``[]`` (the extra ``metrics.csv`` column)."""
        return [] if self.own_loss_name is None else [self.own_loss_name]

    def module_groups(self) -> dict[str, nn.Module]:
        """The submodules the trainer gives parameter groups, by name (see
        :func:`wildreid.training.components.net_parameter_groups`)."""
        groups: dict[str, nn.Module] = {}
        if self.landmarks:
            groups["stem"] = self.backbone.get_submodule(first_conv_name(self.backbone))
        groups.update(backbone=self.backbone, head=self.head)
        if self.reconstruction is not None:
            groups["reconstruction"] = self.reconstruction
        return groups

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward_features_pair` and the network's own loss term (0 here; a landmark
        network adds its heatmap reconstruction loss).

        Shapes:
            output: (B, D), (B, D) and a scalar.
        """
        pre, post = self.forward_features_pair(x)
        if self.reconstruction is None or self.config is None:
            return pre, post, x.new_zeros(())
        weight = float(self.config.reconstruction_weight or 0.0)
        return pre, post, weight * self.reconstruction.loss(post, x[:, 3:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding: torch.Tensor = self.head(self.backbone(x))
        return embedding
