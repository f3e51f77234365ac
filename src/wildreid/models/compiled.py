"""Compiled models on disk, per model, input shape and runtime version.

Layout: ``<directory>/<runtime>-<16 hex digits>/`` per (runtime, facts): the facts say what the
graph is (an embedding network: its space and input shape; a local-feature network: its name,
weights digest and wrapper version). Each entry holds ``model.onnx`` (the checked export),
``runtime/`` (the runtime's own compiled form: OpenVINO's blob cache) and ``entry.json``,
written last: the cache format, the runtime and its version, the torch version that exported
the graph, the facts and the SHA-256 of ``model.onnx``.

An entry is used only when every one of those still matches; otherwise (another runtime or torch
version, a damaged or replaced file, an interrupted build) it is rebuilt, never trusted. Models
with random weights (space sha ``random``) are compiled in a temporary folder instead: their
facts do not identify their weights.

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from wildreid.files import atomic_path, sha256_file
from wildreid.models.cards import ModelCard
from wildreid.models.onnx_export import export_onnx
from wildreid.models.runtimes import (
    GraphRunner,
    Runner,
    import_runtime,
    open_graph,
    runtime_version,
)
from wildreid.types import EmbeddingSpace

__all__ = ["CompiledCache", "default_cache_dir", "embedding_facts"]

logger = logging.getLogger(__name__)

FORMAT = "2"
_ENTRY, _ONNX = "entry.json", "model.onnx"
_NEW = "not compiled yet"


def default_cache_dir() -> Path:
    """The compiled-model folder used when none is given (see the module docstring)."""
    if os.environ.get("WILDREID_CACHE_DIR"):
        return Path(os.environ["WILDREID_CACHE_DIR"]) / "compiled"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wildreid" / "compiled"


class CompiledCache:
    """Compile torch networks for a runtime, reusing earlier compilations.

    One entry per (runtime, facts): ``facts`` is a JSON-able mapping of everything that decides
    the graph (for an embedding network its space and input shape, :func:`embedding_facts`; for
    a local-feature network its name, weights digest and wrapper version). The runtime and torch
    versions are checked too but are not part of the entry's name, so an upgrade rebuilds the
    entry in place.

    Args:
        directory: the cache folder; ``None``: :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def entry_dir(self, runtime: str, facts: Mapping[str, Any] | EmbeddingSpace) -> Path:
        """The folder of one (runtime, facts) entry (an embedding space stands for
        :func:`embedding_facts` of it)."""
        if isinstance(facts, EmbeddingSpace):
            facts = embedding_facts(facts)
        text = json.dumps({"runtime": runtime, **facts}, sort_keys=True)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return self.directory / f"{runtime}-{digest}"

    def runner(
        self, module: nn.Module, space: EmbeddingSpace, card: ModelCard, runtime: str
    ) -> Runner:
        """A compiled runner of an embedding ``module`` (``(B, 3, H, W)`` -> ``(B, D)``) for
        ``runtime``, exported and checked by :func:`~wildreid.models.onnx_export.export_onnx`.

        Raises:
            WeightsError: the network cannot be exported or fails the export check.
            ConfigError: the runtime's package is missing.
        """
        graph = self.graph(
            runtime,
            name=space.model,
            facts=embedding_facts(space),
            write_onnx=lambda path: _write_onnx(module, space, card, path),
            cacheable=space.weights_sha256 != "random",
        )
        return lambda batch: graph(batch)[0]

    def graph(
        self,
        runtime: str,
        *,
        name: str,
        facts: Mapping[str, Any],
        write_onnx: Callable[[Path], None],
        cacheable: bool = True,
        threads: int | None = None,
    ) -> GraphRunner:
        """A compiled graph for ``runtime``: the entry of ``facts`` when it is valid, otherwise
        built with ``write_onnx(path)`` (which exports and checks the graph, raising when the
        check fails) and recorded.

        Args:
            name: the network, for log messages.
            facts: see the class docstring (JSON-able).
            write_onnx: writes the checked ONNX file to the path it is given.
            cacheable: ``False``: compile in a temporary folder (random weights, whose facts do
                not identify them).
            threads: see :func:`~wildreid.models.runtimes.open_graph`.

        Raises:
            ConfigError: the runtime's package is missing.
            WeightsError: (from ``write_onnx``) the export fails or fails its check.
        """
        import_runtime(runtime)  # a missing package fails before the export, not after
        if not cacheable:
            with tempfile.TemporaryDirectory(prefix="wildreid-compile-") as tmp:
                onnx_path = Path(tmp) / _ONNX
                write_onnx(onnx_path)
                return open_graph(runtime, onnx_path, threads=threads)
        entry = self.entry_dir(runtime, facts)
        expected = _entry_facts(runtime, facts)
        reason = _stale_reason(entry, expected)
        if reason is not None:
            log = logger.info if reason == _NEW else logger.warning
            log("compiling %s for %s into %s (%s)", name, runtime, entry, reason)
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(parents=True, exist_ok=True)
            write_onnx(entry / _ONNX)
            recorded = {**expected, "onnx_sha256": sha256_file(entry / _ONNX)}
            with atomic_path(entry / _ENTRY) as tmp:
                tmp.write_text(json.dumps(recorded, indent=1, sort_keys=True), encoding="utf-8")
        else:
            logger.info("using compiled %s for %s from %s", name, runtime, entry)
        return open_graph(runtime, entry / _ONNX, work_dir=entry / "runtime", threads=threads)


def embedding_facts(space: EmbeddingSpace) -> dict[str, Any]:
    """The cache facts of an embedding network: its space and input shape."""
    height, width = space.input_size
    return {"space": space.to_json(), "input_shape": [3, height, width]}


def _write_onnx(module: nn.Module, space: EmbeddingSpace, card: ModelCard, path: Path) -> None:
    """Export and check (see :func:`wildreid.models.onnx_export.export_onnx`)."""
    export_onnx(module, path, space=space, card=card)


def _entry_facts(runtime: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
        "torch_version": runtime_version("torch"),
        **facts,
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
