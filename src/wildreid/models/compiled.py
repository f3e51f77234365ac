"""Compiled models on disk, per model, input shape and runtime version.

Layout: ``<directory>/<runtime>-<16 hex digits>/`` per (runtime, embedding space, input shape),
holding ``model.onnx`` (the checked export, :mod:`wildreid.models.onnx_export`), ``runtime/``
(the runtime's own compiled form: OpenVINO's blob cache) and ``entry.json``, written last:
the cache format, the runtime and its version, the torch version that exported the graph, the
space, the input shape and the SHA-256 of ``model.onnx``.

An entry is used only when every one of those still matches; otherwise (another runtime or torch
version, a damaged or replaced file, an interrupted build) it is rebuilt, never trusted. Models
with random weights (space sha ``random``) are compiled in a temporary folder instead: their
space does not identify their weights.

The default folder is ``$WILDREID_CACHE_DIR/compiled``, else ``$XDG_CACHE_HOME/wildreid/compiled``,
else ``~/.cache/wildreid/compiled``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from wildreid.files import atomic_path, sha256_file
from wildreid.models.cards import ModelCard
from wildreid.models.onnx_export import export_onnx
from wildreid.models.runtimes import Runner, import_runtime, open_runner, runtime_version
from wildreid.types import EmbeddingSpace

__all__ = ["CompiledCache", "default_cache_dir"]

logger = logging.getLogger(__name__)

FORMAT = "1"
_ENTRY, _ONNX = "entry.json", "model.onnx"
_NEW = "not compiled yet"


def default_cache_dir() -> Path:
    """The compiled-model folder used when none is given (see the module docstring)."""
    if os.environ.get("WILDREID_CACHE_DIR"):
        return Path(os.environ["WILDREID_CACHE_DIR"]) / "compiled"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wildreid" / "compiled"


class CompiledCache:
    """Compile a torch embedding network for a runtime, reusing earlier compilations.

    Args:
        directory: the cache folder; ``None``: :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def entry_dir(self, runtime: str, space: EmbeddingSpace) -> Path:
        """The folder of one (runtime, space, input shape) entry."""
        digest = hashlib.sha256(space.to_json().encode("utf-8")).hexdigest()[:16]
        return self.directory / f"{runtime}-{digest}"

    def runner(
        self, module: nn.Module, space: EmbeddingSpace, card: ModelCard, runtime: str
    ) -> Runner:
        """A compiled runner of ``module`` (``(B, 3, H, W)`` -> ``(B, D)``) for ``runtime``.

        Raises:
            WeightsError: the network cannot be exported or fails the export check.
            ConfigError: the runtime's package is missing.
        """
        import_runtime(runtime)  # a missing package fails before the export, not after
        if space.weights_sha256 == "random":
            with tempfile.TemporaryDirectory(prefix="wildreid-compile-") as tmp:
                onnx_path = Path(tmp) / _ONNX
                _write_onnx(module, space, card, onnx_path)
                return open_runner(runtime, onnx_path)
        entry = self.entry_dir(runtime, space)
        expected = _entry_facts(runtime, space)
        reason = _stale_reason(entry, expected)
        if reason is not None:
            log = logger.info if reason == _NEW else logger.warning
            log("compiling %s for %s into %s (%s)", space.model, runtime, entry, reason)
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(parents=True, exist_ok=True)
            _write_onnx(module, space, card, entry / _ONNX)
            facts = {**expected, "onnx_sha256": sha256_file(entry / _ONNX)}
            with atomic_path(entry / _ENTRY) as tmp:
                tmp.write_text(json.dumps(facts, indent=1, sort_keys=True), encoding="utf-8")
        else:
            logger.info("using compiled %s for %s from %s", space.model, runtime, entry)
        return open_runner(runtime, entry / _ONNX, work_dir=entry / "runtime")


def _write_onnx(module: nn.Module, space: EmbeddingSpace, card: ModelCard, path: Path) -> None:
    """Export and check (see :func:`wildreid.models.onnx_export.export_onnx`)."""
    export_onnx(module, path, space=space, card=card)


def _entry_facts(runtime: str, space: EmbeddingSpace) -> dict[str, Any]:
    height, width = space.input_size
    return {
        "format": FORMAT,
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
        "torch_version": runtime_version("torch"),
        "space": space.to_json(),
        "input_shape": [3, height, width],
    }


def _stale_reason(entry: Path, expected: dict[str, Any]) -> str | None:
    """Why ``entry`` cannot be used (``None``: it can)."""
    try:
        facts = json.loads((entry / _ENTRY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _NEW
    except (OSError, ValueError) as exc:
        return f"unreadable entry ({exc})"
    if not isinstance(facts, dict):
        return "damaged entry"
    for key, value in expected.items():
        if facts.get(key) != value:
            return f"{key} was {facts.get(key)!r}, now {value!r}"
    try:
        sha = sha256_file(entry / _ONNX)
    except OSError:
        return "model.onnx missing"
    if sha != facts.get("onnx_sha256"):
        return "model.onnx changed since it was compiled"
    return None
