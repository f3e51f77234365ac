"""Turn images into L2-normalised embedding vectors of one :class:`~wildreid.types.EmbeddingSpace`.

The pipeline: metadata rows -> :class:`~wildreid.data.dataset.ImageDataset` (decode at reduced
scale, bbox crop, fit and resize to 8-bit tensors) -> batches -> normalise where the model runs
-> forward pass -> float32 L2 normalisation -> :class:`~wildreid.types.Embeddings`.

Numerics: the same input gives bit-identical vectors on CPU for the same batch composition (the
worker count does not matter; decoding and resizing are exact integer work). Changing the batch
size, the device or the precision can change the last bits (different kernels and summation
orders), and vectors taken from an :class:`~wildreid.models.cache.EmbeddingCache` were computed
in the batches of an earlier run: expect cosine similarities to agree to about 1e-6 in fp32.

Runtime: ``"auto"`` runs the network with the fastest runtime measured on a CPU (OpenVINO, see
:mod:`wildreid.models.runtimes`) and with torch on a GPU. The compiled runtimes run the same
weights exported to ONNX in fp32; their vectors stay in the model's space and agree with torch's
to about 1e-5 in cosine similarity. The compiled network is kept on disk
(:class:`~wildreid.models.compiled.CompiledCache`), so only the first run pays for the export.

Precision: ``"auto"`` is fp32 on CPU and autocast (AMP) on CUDA, in bf16 where the GPU supports
it and fp16 otherwise; ``"bf16"`` autocasts on either device (on CPUs without native bf16 support,
AVX512-BF16 or AMX, it is much slower than fp32: 8x for EfficientNet-Lite0 on AVX2); ``"fp16"``
is CUDA-only. Features are cast to float32 before normalising, whatever the precision.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)

from wildreid.data.dataset import BadImage, ImageDataset, iterate_batches
from wildreid.data.schema import Problem
from wildreid.data.transforms import Resize, normalize
from wildreid.device import autocast_dtype, resolve_device
from wildreid.errors import ConfigError, EmbeddingSpaceError, MetadataError, WeightsError
from wildreid.ids import first_repeat
from wildreid.models.cache import CacheRow, EmbeddingCache
from wildreid.models.cards import ModelCard
from wildreid.models.compiled import CompiledCache
from wildreid.models.onnx_export import OnnxModel
from wildreid.models.runtimes import (
    CPU_DEFAULT,
    Runner,
    built_or_torch,
    check_runtime,
    open_runner,
    resolve_runtime,
)
from wildreid.types import Embeddings, EmbeddingSpace

__all__ = [
    "EmbedResult",
    "Embedder",
    "EmbedderConfig",
    "Precision",
    "SupportsEmbedding",
    "default_workers",
]

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CACHE_FLUSH_S = 30.0
"""Computed vectors are written to the cache at least this often (and at the end of a run)."""


def _int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


class SupportsEmbedding(Protocol):
    """What the embedder needs of a model (``wildreid.models.factory.EmbeddingModel`` has it).

    Attributes:
        module: ``(B, 3, h, w)`` normalised float -> ``(B, D)`` features (not normalised).
        space: the embedding space; ``input_size``, ``mean``, ``std`` and ``crop_mode`` define the
            preprocessing, ``dim`` may be 0 (then it is found with one forward pass).
    """

    @property
    def module(self) -> torch.nn.Module: ...

    @property
    def space(self) -> EmbeddingSpace: ...


@dataclass(frozen=True)
class EmbedderConfig:
    """How to embed.

    Attributes:
        batch_size: images per forward pass.
        workers: DataLoader worker processes decoding images; ``0`` decodes in a background
            thread of this process (overlapping the forward pass); ``None`` chooses
            :func:`default_workers`. Workers start with ``forkserver`` (else ``spawn``): they
            inherit no threads or locks, each imports torch (seconds), and a script using them
            needs the usual ``if __name__ == "__main__":`` guard.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``; see :func:`wildreid.device.resolve_device`.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``; see the module docstring.
        channels_last: run convolutional networks in channels-last memory format (1.7x faster
            for EfficientNet-Lite0 on an AVX2 CPU); ignored for networks without 2-D
            convolutions.
        skip_bad_images: skip unreadable images and report them in
            :attr:`EmbedResult.skipped`; otherwise the first one raises ImageReadError.
        runtime: ``"auto"``, ``"torch"``, ``"onnxruntime"`` or ``"openvino"``; see the module
            docstring and :func:`wildreid.models.runtimes.resolve_runtime`.
        compiled_cache_dir: where compiled networks are kept; ``None``:
            :func:`wildreid.models.compiled.default_cache_dir`.
    """

    batch_size: int = 32
    workers: int | None = None
    device: str = "auto"
    precision: Precision = "auto"
    channels_last: bool = True
    skip_bad_images: bool = False
    runtime: str = "auto"
    compiled_cache_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        if not _int_at_least(self.batch_size, 1):
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.workers is not None and not _int_at_least(self.workers, 0):
            raise ConfigError(f"workers must be an integer >= 0 or None, got {self.workers!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} not in {PRECISIONS}")


@dataclass(frozen=True)
class EmbedResult:
    """What :meth:`Embedder.embed_images` did.

    Attributes:
        embeddings: one vector per readable image, in metadata order.
        skipped: ``(image_id, reason)`` of each unreadable image (with ``skip_bad_images``).
        n_cached: vectors taken from the cache.
        n_computed: vectors computed in this run.
        seconds: wall time of the call.
        runtime: the runtime that computed the vectors (``torch``, ``onnxruntime``,
            ``openvino``).
    """

    embeddings: Embeddings
    skipped: tuple[tuple[str, str], ...]
    n_cached: int
    n_computed: int
    seconds: float
    runtime: str = "torch"


def default_workers(device: torch.device) -> int:
    """The worker processes to use when ``workers`` is ``None``.

    On CUDA (or MPS) the forward pass is fast and decoding is the bottleneck: one process per
    core up to 8, leaving one core to the main process. On CPU the forward pass already keeps
    every core busy and decoding costs a few percent of it, so ``0`` (a background decoding
    thread) is used: measured with ``benchmarks/bench_embedding.py`` on 2 cores
    (EfficientNet-Lite0, 512 JPEGs of 640x480), it reaches 0.95 of the bare forward pass end to
    end, while 1 or 2 worker processes reach 0.79: they compete with the forward pass for the
    cores and each spends seconds importing torch before the first batch.
    """
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(cores or 1, 8) - 1)


class Embedder:
    """Embeds images or preprocessed tensors with one model, in batches.

    The model's module is not modified: when it must change (device, memory format, eval mode)
    the embedder works on a copy.

    Args:
        model: the network and its embedding space, or an exported ONNX file
            (:func:`wildreid.models.onnx_export.read_onnx`, run with a compiled runtime).
        config: batch size, workers, device, precision, runtime, memory format, bad-image
            policy.
        cache: reuse vectors of unchanged images across runs (:meth:`embed_images` only).

    Attributes:
        runtime: the runtime actually used (``auto`` resolved).

    Raises:
        ConfigError: the device is unavailable, the precision does not exist on it, the runtime
            cannot run there (or its package is missing), or an ONNX file is given with
            ``runtime="torch"``.
        WeightsError: a compiled runtime was asked for and the network does not export.
    """

    def __init__(
        self,
        model: SupportsEmbedding | OnnxModel,
        *,
        config: EmbedderConfig = EmbedderConfig(),
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        self._space_in = model.space
        self._space: EmbeddingSpace | None = None
        self._runner: Runner | None = None
        self.module: torch.nn.Module | None = None
        self.channels_last = False
        if isinstance(model, OnnxModel):
            self.device = torch.device("cpu")
            self.runtime = CPU_DEFAULT if config.runtime == "auto" else config.runtime
            if self.runtime == "torch":
                raise ConfigError(
                    f"{model.path} is an ONNX file: run it with --runtime onnxruntime or "
                    "openvino, or give the torch model (zoo name or checkpoint) for torch"
                )
            resolve_runtime(self.runtime, self.device, precision=config.precision)
            self._runner = open_runner(self.runtime, model.path)
        else:
            self.device = resolve_device(config.device)
            self.runtime = resolve_runtime(config.runtime, self.device, precision=config.precision)
            if self.runtime != "torch":
                self._runner = self._compile(model)
        self.autocast_dtype = autocast_dtype(config.precision, self.device)
        self.workers = default_workers(self.device) if config.workers is None else config.workers
        if self._runner is None:
            assert not isinstance(model, OnnxModel)  # refused above
            module = model.module
            self.channels_last = config.channels_last and any(
                isinstance(m, torch.nn.Conv2d) for m in module.modules()
            )
            self.module = _prepared(module, self.device, self.channels_last)

    def _compile(self, model: SupportsEmbedding) -> Runner | None:
        """The compiled runner of ``model`` for :attr:`runtime`; ``None`` (torch) when ``auto``
        chose the runtime and compiling fails (logged)."""
        space = model.space
        card = getattr(model, "card", None)
        if not isinstance(card, ModelCard):
            card = ModelCard(
                name=space.model, architecture="unknown", embedding_dim=space.dim,
                input_size=space.input_size, mean=space.mean, std=space.std,
                licence="unknown", weights_source="unknown", crop_mode=space.crop_mode,
            )  # fmt: skip
        cache = CompiledCache(self.config.compiled_cache_dir)
        runner = built_or_torch(
            lambda: cache.runner(model.module, space, card, self.runtime),
            requested=self.config.runtime,
            runtime=self.runtime,
            what=space.model,
        )
        if runner is None:
            self.runtime = "torch"
        return runner

    @property
    def space(self) -> EmbeddingSpace:
        """The model's space with ``dim`` filled in (one forward pass the first time if needed).

        Raises:
            EmbeddingSpaceError: the network's output dimension differs from the space's ``dim``.
        """
        if self._space is None:
            height, width = self._space_in.input_size
            probe = torch.zeros(1, 3, height, width)
            dim = int(self._forward(probe.to(self.device)).shape[1])
            if self._space_in.dim and self._space_in.dim != dim:
                raise EmbeddingSpaceError(
                    f"the network outputs {dim}-D features but its space "
                    f"{self._space_in.describe()} says {self._space_in.dim}; fix the model card"
                )
            self._space = replace(self._space_in, dim=dim)
        return self._space

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Embed a batch of preprocessed images.

        Shapes:
            batch: (B, 3, h, w) float (cast to float32), normalised, ``(h, w) = space.input_size``.
            returns: (B, D) float32, each row of unit L2 norm.

        Raises:
            ConfigError: the batch has the wrong shape or dtype.
            WeightsError: the network produced NaN or infinite features.
        """
        expected = (3, *self._space_in.input_size)
        if batch.dim() != 4 or tuple(batch.shape[1:]) != expected or not batch.is_floating_point():
            raise ConfigError(
                f"expected a (B, {', '.join(map(str, expected))}) float batch, got "
                f"{tuple(batch.shape)} {batch.dtype}"
            )
        on_device = batch.to(self.device, torch.float32, non_blocking=self._pinned(batch))
        vectors = self._forward(on_device)
        _check_finite(vectors, None, self._precision_hint())
        return vectors

    def embed_images(
        self,
        metadata: pd.DataFrame,
        *,
        root: str | os.PathLike[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> EmbedResult:
        """Embed the image of every metadata row (its bbox crop when the row has one).

        Args:
            metadata: the metadata table with string cells: ``image_id``, ``path``, optional
                ``bbox``; only read.
            root: the folder the ``path`` cells are relative to.
            progress: called as ``progress(rows_done, rows_total)`` after each batch (and once
                after the cache lookup).

        Returns:
            The embeddings in metadata order (skipped rows left out) and counts.

        Raises:
            MetadataError: a column is missing, an image id is empty or repeated, or a bbox cell
                is invalid (naming the row).
            ImageReadError: an image cannot be read and ``skip_bad_images`` is off; the message
                names the metadata row, its line, the image id and the file.
            WeightsError: the network produced NaN or infinite features.
        """
        start = time.perf_counter()
        ids = _image_ids(metadata)
        space = self.space
        root = Path(root)
        vectors = np.zeros((len(ids), space.dim), dtype=np.float32)
        done = np.zeros(len(ids), dtype=bool)
        cache_rows = self._cache_rows(metadata, root)
        if self.cache is not None:
            found, _ = self.cache.lookup(space, cache_rows)
            for position, image_id in enumerate(ids):
                if image_id in found:
                    vectors[position], done[position] = found[image_id], True
        todo = np.flatnonzero(~done).tolist()
        n_cached = len(ids) - len(todo)
        logger.info(
            "embedding %d image(s) (%d cached) with %s on %s, %s, %s, %d worker(s)",
            len(todo), n_cached, space.model, self.device, self.runtime, self._precision_name(),
            self.workers,
        )  # fmt: skip
        if progress is not None:
            progress(n_cached, len(ids))
        skipped = self._run(metadata, root, todo, vectors, done, cache_rows, progress)
        seconds = time.perf_counter() - start
        n_computed = len(todo) - len(skipped)
        logger.info(
            "embedded %d image(s) in %.1f s (%.1f images/s), %d skipped",
            n_computed, seconds, n_computed / max(seconds, 1e-9), len(skipped),
        )  # fmt: skip
        keep = np.flatnonzero(done)
        embeddings = Embeddings(
            np.ascontiguousarray(vectors[keep]), tuple(ids[i] for i in keep), space
        )
        return EmbedResult(embeddings, tuple(skipped), n_cached, n_computed, seconds, self.runtime)

    def _run(
        self,
        metadata: pd.DataFrame,
        root: Path,
        todo: list[int],
        vectors: np.ndarray,
        done: np.ndarray,
        cache_rows: list[CacheRow],
        progress: Callable[[int, int], None] | None,
    ) -> list[tuple[str, str]]:
        """Embed the rows at positions ``todo`` into ``vectors``; return the skipped rows."""
        resize = Resize.from_space(self.space)
        dataset = ImageDataset(
            root, metadata, transform=resize, target_size=resize.target_size, indices=todo
        )
        skipped: list[tuple[str, str]] = []
        pending: list[int] = []
        last_flush = time.monotonic()
        n_done = len(vectors) - len(todo)
        batches = iterate_batches(
            dataset,
            batch_size=self.config.batch_size,
            workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        try:
            for batch in batches:
                self._handle_bad(batch.bad, skipped)
                if batch.images is not None:
                    positions = batch.indices.tolist()
                    out = self._embed_uint8(batch.images)
                    names = [repr(cache_rows[p].image_id) for p in positions]
                    _check_finite(out, names, self._precision_hint())
                    vectors[positions], done[positions] = out, True
                    pending.extend(positions)
                n_done += len(batch.indices) + len(batch.bad)
                if progress is not None:
                    progress(n_done, len(vectors))
                if time.monotonic() - last_flush > CACHE_FLUSH_S:
                    self._flush(pending, vectors, cache_rows)
                    last_flush = time.monotonic()
        finally:
            batches.close()
            self._flush(pending, vectors, cache_rows)
        return skipped

    def _handle_bad(self, bad: tuple[BadImage, ...], skipped: list[tuple[str, str]]) -> None:
        for record in bad:
            if not self.config.skip_bad_images:
                raise record.error()
            logger.warning("skipping %s", record.error())
            skipped.append((record.image_id, record.reason))

    def _flush(self, pending: list[int], vectors: np.ndarray, rows: list[CacheRow]) -> None:
        if self.cache is not None and pending:
            self.cache.store(self.space, [rows[p] for p in pending], vectors[pending])
        pending.clear()

    def _cache_rows(self, metadata: pd.DataFrame, root: Path) -> list[CacheRow]:
        ids = metadata["image_id"].astype(str).tolist()
        if self.cache is None:
            return [CacheRow(image_id, "", -1, -1) for image_id in ids]
        paths = metadata["path"].astype(str).tolist()
        bboxes = (
            metadata["bbox"].fillna("").astype(str).tolist()
            if "bbox" in metadata.columns
            else [""] * len(ids)
        )
        return [CacheRow.of(i, root / p, b) for i, p, b in zip(ids, paths, bboxes, strict=True)]

    def _embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        batch = images.to(self.device, non_blocking=self._pinned(images))
        space = self._space_in
        return self._forward(normalize(batch, mean=space.mean, std=space.std))

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        """Run the network on a normalised batch already on the device; unit-norm float32 out."""
        if self._runner is not None:
            features = torch.from_numpy(self._runner(batch.contiguous().numpy()))
            return self._normalised(features, batch)
        assert self.module is not None  # torch runtime
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        dtype = self.autocast_dtype
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None),
        ):
            features = self.module(batch)
        return self._normalised(features, batch)

    @staticmethod
    def _normalised(features: torch.Tensor, batch: torch.Tensor) -> np.ndarray:
        if features.dim() != 2 or features.shape[0] != batch.shape[0]:
            raise ConfigError(
                f"the network returned features of shape {tuple(features.shape)} for a batch "
                f"of {batch.shape[0]}; an embedding model must return (B, D)"
            )
        with torch.inference_mode():
            unit = F.normalize(features.float(), dim=1)
        return unit.cpu().numpy()

    def _pinned(self, tensor: torch.Tensor) -> bool:
        return self.device.type == "cuda" and tensor.is_pinned()

    def _precision_name(self) -> str:
        return "fp32" if self.autocast_dtype is None else f"autocast {self.autocast_dtype}"

    def _precision_hint(self) -> str:
        return "" if self.autocast_dtype is None else "; try precision fp32"


def _prepared(
    module: torch.nn.Module, device: torch.device, channels_last: bool
) -> torch.nn.Module:
    """``module`` in eval mode on ``device``, channels-last if asked; a copy if it must change."""
    tensors = [*module.parameters(), *module.buffers()]
    needs_change = (
        module.training
        or any(t.device != device for t in tensors)
        or (
            channels_last
            and any(
                t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last)
                for t in tensors
            )
        )
    )
    if not needs_change:
        return module
    prepared = copy.deepcopy(module).eval().to(device)
    return prepared.to(memory_format=torch.channels_last) if channels_last else prepared


def _image_ids(metadata: pd.DataFrame) -> list[str]:
    missing = [c for c in ("image_id", "path") if c not in metadata.columns]
    if missing:
        raise MetadataError(
            f"metadata lacks column(s) {', '.join(missing)}; images need image_id and path"
        )
    ids = metadata["image_id"].astype(str).tolist()
    for row, image_id in enumerate(ids, start=1):
        if not image_id.strip():
            raise MetadataError(str(Problem("is empty", row, "image_id")))
    repeat = first_repeat(ids)
    if repeat is not None:
        earlier, later = repeat
        problem = Problem(f"{ids[later]!r} duplicates row {earlier + 1}", later + 1, "image_id")
        raise MetadataError(str(problem))
    return ids


def _check_finite(vectors: np.ndarray, names: Sequence[str] | None, hint: str) -> None:
    """Raise WeightsError naming the first non-finite row (``names[i]`` or its batch position)."""
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        first = int(bad[0])
        raise WeightsError(
            f"the network produced NaN or infinite features for {bad.size} image(s), first "
            f"{names[first] if names else f'batch item {first}'}{hint}; check the weights"
        )
