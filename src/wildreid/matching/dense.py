"""The dense networks of ALIKED and DISK through a compiled runtime (ONNX Runtime or OpenVINO).

A learned extractor has two parts: a dense network (image -> feature and score maps), most of
its time (92% for ALIKED at 512x384, measured), and a sparse part (keypoint selection; ALIKED's
deformable descriptor head) that is data-dependent (top-k, per-keypoint sampling) and cheap. Only
the dense network is exported; the sparse part stays in torch, so the keypoints and descriptors
come from the same code as in eager mode.

The graphs take an image whose height and width are multiples of :attr:`DenseNet.divisor`
(dynamic otherwise); the extractor pads before and crops after, exactly as the torch modules do
inside (ALIKED: replicate padding around the centre to multiples of 32; DISK: zeros at the
bottom and right to multiples of 16). The padding is not part of the graph because its amounts
are Python integers the tracer freezes at the export's size.

ALIKED's deformable convolutions clamp their offsets to ``max(H, W) / 4``. Traced as written,
Python's ``max`` picks the longer side of the *export's* input once and for all, so a graph
exported on a landscape image gave wrong maps (score differences up to 0.96) for portrait ones:
the reason the first probe failed on small LionData crops. :class:`AlikedDense` computes the
bound from the shape tensor instead, and the export check (:func:`export_dense`) runs both
orientations and a size other than the export's.

DISK exports unchanged (a U-Net of plain convolutions, instance norms and bilinear upsampling).

``dense_facts`` names an entry of :class:`~wildreid.models.compiled.CompiledCache`; bump
:data:`GRAPH_VERSION` when the wrappers here change what the graph computes.
"""

from __future__ import annotations

import copy
import logging
import types
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from wildreid.models.compiled import CompiledCache
from wildreid.models.onnx_export import export_graph
from wildreid.models.runtimes import GraphRunner

__all__ = ["GRAPH_VERSION", "AlikedDense", "CompiledDense", "DenseNet", "DiskDense"]

logger = logging.getLogger(__name__)

GRAPH_VERSION = "1"
MAX_REL_DIFF = 1e-4
"""Export check bound: max |onnx - torch| over the maps, relative to max(1, max |torch|)."""


class DenseNet(nn.Module):
    """A dense network: ``(1, 3, H, W)`` image in [0, 1], H and W multiples of :attr:`divisor`
    -> maps of the same height and width, in :attr:`outputs` order."""

    divisor: int
    outputs: tuple[str, ...]


def _traceable_deform_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """kornia's ``DeformableConv2d.forward`` with the offset bound computed from the shape
    tensor (same values; see the module docstring)."""
    from kornia.feature.aliked.deform_conv2d import deform_conv2d
    from torch.onnx.operators import shape_as_tensor

    max_offset = shape_as_tensor(x)[2:].max().to(x.dtype) / 4.0
    out = self.offset_conv(x)
    mask = None
    if self.mask:
        first, second, mask = torch.chunk(out, 3, dim=1)
        out = torch.cat((first, second), dim=1)
        mask = torch.sigmoid(mask)
    return deform_conv2d(
        input=x,
        offset=torch.clamp(out, -max_offset, max_offset),
        weight=self.regular_conv.weight,
        bias=self.regular_conv.bias,
        stride=self.stride,
        padding=self.padding,
        dilation=self.dilation,
        mask=mask,
    )


class AlikedDense(DenseNet):
    """ALIKED's ``extract_dense_map`` without the padding: -> ``features`` ``(1, C, H, W)``
    (L2-normalised) and ``scores`` ``(1, 1, H, W)`` in (0, 1). Holds a copy of ``model``."""

    divisor = 32
    outputs = ("features", "scores")

    def __init__(self, model: nn.Module) -> None:
        from kornia.feature.aliked.aliked import DeformableConv2d

        super().__init__()
        self.m = copy.deepcopy(model)
        for module in self.m.modules():
            if isinstance(module, DeformableConv2d):
                module.forward = types.MethodType(_traceable_deform_forward, module)  # type: ignore[method-assign]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m: Any = self.m
        x1 = m.block1(image)
        x2 = m.block2(m.pool2(x1))
        x3 = m.block3(m.pool4(x2))
        x4 = m.block4(m.pool4(x3))
        x1 = m.gate(m.conv1(x1))
        x2 = m.gate(m.conv2(x2))
        x3 = m.gate(m.conv3(x3))
        x4 = m.gate(m.conv4(x4))
        x1234 = torch.cat([x1, m.upsample2(x2), m.upsample8(x3), m.upsample32(x4)], dim=1)
        return functional.normalize(x1234, p=2, dim=1), torch.sigmoid(m.score_head(x1234))


class DiskDense(DenseNet):
    """DISK's U-Net: -> ``heatmaps`` ``(1, 1, H, W)`` and ``descriptors`` ``(1, D, H, W)``."""

    divisor = 16
    outputs = ("heatmaps", "descriptors")

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = copy.deepcopy(model)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        disk: Any = self.m
        heatmaps, descriptors = disk.heatmap_and_dense_descriptors(image)
        return heatmaps, descriptors


def _samples(divisor: int) -> list[torch.Tensor]:
    """Check inputs: the export's (landscape), a portrait one and a larger one, noise and a
    smooth picture (the deformable offsets reach their bounds on some and not on others)."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(2 * divisor, 3 * divisor), (5 * divisor, 2 * divisor), (4 * divisor, 4 * divisor)]
    samples = []
    for i, (height, width) in enumerate(shapes):
        if i % 2:
            ramp_y = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
            ramp_x = torch.linspace(0, 1, width).view(1, width).expand(height, width)
            image = torch.stack([ramp_y, ramp_x, (ramp_x * ramp_y).sqrt()])[None]
        else:
            image = torch.rand(1, 3, height, width, generator=generator)
        samples.append(image.contiguous())
    return samples


def export_dense(net: DenseNet, path: Path, *, name: str) -> float:
    """Export ``net`` with dynamic height and width, checked against torch on
    :func:`_samples` (raises :class:`~wildreid.errors.WeightsError` when it fails)."""
    axes = {"height": 2, "width": 3}
    dynamic = {name_: {i: axis for axis, i in axes.items()} for name_ in ("images", *net.outputs)}
    return export_graph(
        net,
        path,
        name=name,
        samples=_samples(net.divisor),
        output_names=list(net.outputs),
        dynamic_axes=dynamic,
        max_rel_diff=MAX_REL_DIFF,
    )


def dense_facts(name: str, weights_sha256: str) -> dict[str, Any]:
    """What identifies a compiled dense network (the cache entry's facts)."""
    return {
        "network": f"{name} dense",
        "weights_sha256": weights_sha256,
        "kornia_version": package_metadata.version("kornia"),
        "graph_version": GRAPH_VERSION,
    }


class CompiledDense:
    """A dense network compiled for ``runtime`` (through the on-disk cache) and called like
    the torch module: ``(1, 3, H, W)`` tensor -> tuple of map tensors.

    Raises:
        ConfigError: the runtime's package is missing.
        WeightsError: the export fails its check.
    """

    def __init__(
        self,
        net: DenseNet,
        *,
        runtime: str,
        name: str,
        weights_sha256: str,
        cache_dir: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.divisor = net.divisor
        self._graph: GraphRunner = CompiledCache(cache_dir).graph(
            runtime,
            name=f"{name} dense",
            facts=dense_facts(name, weights_sha256),
            write_onnx=lambda path: _log_check(export_dense(net, path, name=name), name),
            threads=threads,
        )

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if image.shape[-2] % self.divisor or image.shape[-1] % self.divisor:
            raise ValueError(f"pad the image to a multiple of {self.divisor} first")
        outputs = self._graph(image.detach().cpu().float().numpy())
        return tuple(torch.from_numpy(out) for out in outputs)


def _log_check(max_abs_diff: float, name: str) -> None:
    logger.info("%s dense network exported; max abs diff to torch %.2e", name, max_abs_diff)
