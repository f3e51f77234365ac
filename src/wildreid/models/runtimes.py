"""Inference runtimes for the embedder: PyTorch eager, ONNX Runtime and OpenVINO.

``runtime="auto"`` is resolved in one place, :func:`resolve_runtime`: on a CPU it is
:data:`CPU_DEFAULT` (the fastest measured, see ``docs/benchmarks.md``), on a GPU it is torch.
The compiled runtimes run the same weights exported to ONNX (:mod:`wildreid.models.onnx_export`)
in fp32, so their vectors stay in the model's :class:`~wildreid.types.EmbeddingSpace`: they agree
with torch's to about 1e-5 in cosine similarity (tested), like a change of batch size does.

OpenVINO is pinned to fp32 inference (``INFERENCE_PRECISION_HINT=f32``): on CPUs with AMX or
AVX512-BF16 it would otherwise run in bf16 and leave the space.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from wildreid.errors import ConfigError, UnknownComponentError, WeightsError

if TYPE_CHECKING:
    import torch

__all__ = [
    "COMPILED_RUNTIMES",
    "CPU_DEFAULT",
    "RUNTIMES",
    "GraphRunner",
    "Runner",
    "built_or_torch",
    "import_runtime",
    "open_graph",
    "open_runner",
    "resolve_runtime",
    "runtime_version",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


def built_or_torch(
    build: Callable[[], _T], *, requested: str, runtime: str, what: str
) -> _T | None:
    """``build()`` (opening or compiling something for ``runtime``), or ``None`` when it fails
    and the user asked for ``auto``: the caller then runs torch (logged). A runtime the user
    named explicitly raises instead.

    Raises:
        ConfigError, WeightsError: ``build`` failed and ``requested`` is not ``auto``.
    """
    try:
        return build()
    except (WeightsError, ConfigError) as exc:
        if requested != "auto":
            raise
        logger.warning("%s: runtime %s unavailable (%s); using torch", what, runtime, exc)
        return None


RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
"""The ``runtime`` values the embedder accepts."""
COMPILED_RUNTIMES = ("onnxruntime", "openvino")
"""The runtimes that run an exported ONNX graph."""
CPU_DEFAULT = "openvino"
"""What ``auto`` means on a CPU: the fastest runtime measured by ``benchmarks/bench_runtimes.py``
(EfficientNet-Lite0/1/2, see docs/benchmarks.md)."""
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


class Runner(Protocol):
    """A compiled network: ``(B, 3, H, W)`` float32 normalised -> ``(B, D)`` float32 features."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class GraphRunner(Protocol):
    """A compiled graph of one float32 input: every output, in the graph's order."""

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]: ...


def check_runtime(runtime: str) -> None:
    """Raise UnknownComponentError unless ``runtime`` is one of :data:`RUNTIMES`."""
    if runtime not in RUNTIMES:
        raise UnknownComponentError(
            f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}"
        )


def resolve_runtime(
    runtime: str, device: torch.device, *, precision: str = "auto", cpu_default: str = CPU_DEFAULT
) -> str:
    """The runtime to use: ``auto`` becomes torch on a GPU (or with a reduced precision) and
    ``cpu_default`` (the fastest measured for the network; :data:`CPU_DEFAULT` for the
    embedders) on a CPU.

    Raises:
        UnknownComponentError: not one of :data:`RUNTIMES`.
        ConfigError: a compiled runtime asked for on a GPU or with bf16/fp16 precision.
    """
    check_runtime(runtime)
    if runtime == "auto":
        if device.type != "cpu" or precision not in ("auto", "fp32"):
            return "torch"
        return cpu_default
    if runtime != "torch":
        if device.type != "cpu":
            raise ConfigError(
                f"runtime {runtime} runs on the CPU only, not on {device}; use --runtime torch "
                "on a GPU"
            )
        if precision not in ("auto", "fp32"):
            raise ConfigError(
                f"runtime {runtime} runs in fp32; precision {precision} needs --runtime torch"
            )
    return runtime


def import_runtime(runtime: str) -> ModuleType:
    """Import a compiled runtime's Python package.

    Raises:
        ConfigError: the package is not installed (the message says what to install).
    """
    package = _PACKAGES[runtime]
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(
            f"runtime {runtime} needs the Python package {package!r}, which is not installed: "
            f"`pip install {package}` (or `uv add {package}`), or use --runtime torch"
        ) from exc


def runtime_version(runtime: str) -> str:
    """The installed version of a runtime's package (of torch for ``torch``)."""
    package = "torch" if runtime == "torch" else _PACKAGES[runtime]
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        import_runtime(runtime)  # raises the install hint
        return "unknown"


def open_runner(runtime: str, onnx_path: Path, *, work_dir: Path | None = None) -> Runner:
    """Compile an ONNX file of one input and one output for the CPU with ``runtime``.

    Args:
        work_dir: a folder the runtime may keep its compiled form in (OpenVINO's blob cache);
            ``None``: compile in memory every time.

    Raises:
        ConfigError: the runtime's package is missing.
    """
    graph = open_graph(runtime, onnx_path, work_dir=work_dir)
    return lambda batch: graph(batch)[0]


def open_graph(
    runtime: str, onnx_path: Path, *, work_dir: Path | None = None, threads: int | None = None
) -> GraphRunner:
    """Compile an ONNX file of one float32 input for the CPU with ``runtime``; the runner
    returns all its outputs.

    Args:
        work_dir: see :func:`open_runner`.
        threads: CPU threads the runtime may use; ``None``: its default (one per core).

    Raises:
        ConfigError: the runtime's package is missing, or ``runtime`` does not run ONNX.
    """
    if runtime == "onnxruntime":
        return _OrtRunner(import_runtime(runtime), onnx_path, threads)
    if runtime == "openvino":
        return _OpenVinoRunner(import_runtime(runtime), onnx_path, work_dir, threads)
    raise ConfigError(
        f"runtime {runtime!r} does not run ONNX files; use one of {COMPILED_RUNTIMES}"
    )


class _OrtRunner:
    def __init__(self, ort: ModuleType, onnx_path: Path, threads: int | None) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        feed = {self._input: np.ascontiguousarray(batch, dtype=np.float32)}
        outputs: list[Any] = self._session.run(None, feed)
        return [np.asarray(out, dtype=np.float32) for out in outputs]


_OPENVINO_CORE_LOCK = threading.Lock()
_openvino_core: Any = None


def openvino_core(ov: ModuleType) -> Any:
    """The process's one ``openvino.Core``, created on first use and never freed.

    One core per process is OpenVINO's own advice, and here it is also a crash fix: each core's
    CPU plugin installs a fresh alternate signal stack on the thread that loads it, remembers
    the previous one, and on destruction puts that back and unmaps its own. Cores freed out of
    creation order (two runners collected by the garbage collector in the wrong order) leave
    the thread's alternate stack pointing at unmapped memory, and the next signal Python
    handles on it (Ctrl-C, SIGTERM, the SIGCHLD handler torch's DataLoader installs) kills the
    process with SIGSEGV. Seen with openvino 2026.4 on Linux: two ``Core()`` objects deleted
    first-created-first, then one ``subprocess.run`` under a Python SIGCHLD handler, exit 139.
    """
    global _openvino_core
    with _OPENVINO_CORE_LOCK:
        if _openvino_core is None:
            _openvino_core = ov.Core()
        return _openvino_core


class _OpenVinoRunner:
    def __init__(
        self, ov: ModuleType, onnx_path: Path, work_dir: Path | None, threads: int | None
    ) -> None:
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        if work_dir is not None:
            config["CACHE_DIR"] = os.fspath(work_dir)
        self._compiled = openvino_core(ov).compile_model(os.fspath(onnx_path), "CPU", config)
        # An InferRequest runs one inference at a time ("Infer Request is busy" otherwise);
        # the compiled model serves any number, so each thread (a service handling concurrent
        # requests) gets its own.
        self._local = threading.local()

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return [np.array(result[out], dtype=np.float32) for out in self._compiled.outputs]
