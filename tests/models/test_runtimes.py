"""ONNX export and the compiled runtimes: same vectors as torch, checked export, cache, errors."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from torch import nn

from tests.models.test_embedder import SPACE, tiny_model, write_dataset
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.errors import ConfigError, UnknownComponentError, WeightsError
from wildreid.models import runtimes
from wildreid.models.cards import ModelCard
from wildreid.models.compiled import CompiledCache
from wildreid.models.embedder import Embedder, EmbedderConfig
from wildreid.models.factory import EmbeddingModel, load_model
from wildreid.models.onnx_export import export_onnx, onnx_model_proto, read_onnx
from wildreid.models.quantize import calibration_batches, quantize_int8

TOLERANCE = 1e-4
"""Largest difference allowed between a compiled runtime's unit vectors and torch's, per value
(measured: about 1e-6 for EfficientNet-Lite0); cosine similarities agree to 1e-5."""
CPU = EmbedderConfig(device="cpu", batch_size=4, workers=0)
CARD = ModelCard(
    name=SPACE.model, architecture="tiny", embedding_dim=8, input_size=SPACE.input_size,
    mean=SPACE.mean, std=SPACE.std, licence="MIT", weights_source="test",
)  # fmt: skip


@pytest.fixture(scope="module")
def lite0() -> EmbeddingModel:
    return load_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def lite0_onnx(lite0: EmbeddingModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "lite0.onnx"
    check = export_onnx(lite0.module, out, space=lite0.space, card=lite0.card)
    assert check.passed and check.max_abs_diff < 1e-3 and check.min_cosine > 0.99999
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    """Generated animal photos (synthetic markings, 128 px): 9 images."""
    root = tmp_path_factory.mktemp("synth") / "data"
    config = SynthConfig(identities=3, train_examples=1, gallery_examples=1, query_examples=1)
    generate_synthetic(root, config=config, workers=1)
    return pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False), root


def test_export_carries_card_and_space(lite0: EmbeddingModel, lite0_onnx: Path) -> None:
    loaded = read_onnx(lite0_onnx)
    assert loaded.space == lite0.space
    assert loaded.card == lite0.card
    graph = onnx.load(str(lite0_onnx)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_each_runtime_matches_torch_on_photos(
    runtime: str,
    lite0: EmbeddingModel,
    lite0_onnx: Path,
    photos: tuple[pd.DataFrame, Path],
) -> None:
    metadata, root = photos
    config = dataclasses.replace(CPU, runtime="torch")
    expected = Embedder(lite0, config=config).embed_images(metadata, root=root).embeddings
    embedder = Embedder(read_onnx(lite0_onnx), config=dataclasses.replace(CPU, runtime=runtime))
    got = embedder.embed_images(metadata, root=root)
    assert got.runtime == runtime
    assert got.embeddings.space == expected.space  # caches and indexes stay valid
    assert got.embeddings.image_ids == expected.image_ids
    np.testing.assert_allclose(got.embeddings.vectors, expected.vectors, atol=TOLERANCE, rtol=0)
    cosines = (got.embeddings.vectors * expected.vectors).sum(axis=1)
    assert cosines.min() > 1 - 1e-5


def test_auto_is_the_fast_runtime_on_cpu_and_torch_elsewhere() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtimes.resolve_runtime("auto", cpu) == runtimes.CPU_DEFAULT == "openvino"
    assert runtimes.resolve_runtime("auto", cuda) == "torch"
    assert runtimes.resolve_runtime("auto", cpu, precision="bf16") == "torch"
    with pytest.raises(ConfigError, match="CPU only"):
        runtimes.resolve_runtime("openvino", cuda)
    with pytest.raises(ConfigError, match="fp32"):
        runtimes.resolve_runtime("onnxruntime", cpu, precision="bf16")


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(UnknownComponentError, match=r"tensorrt.*torch, onnxruntime, openvino"):
        EmbedderConfig(runtime="tensorrt")


def test_compiled_embedder_matches_torch_and_reuses_its_cache(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    cache_dir = tmp_path / "compiled"
    torch_vectors = (
        Embedder(tiny_model(), config=dataclasses.replace(CPU, runtime="torch"))
        .embed_images(metadata, root=tmp_path)
        .embeddings.vectors
    )
    config = dataclasses.replace(CPU, runtime="onnxruntime", compiled_cache_dir=cache_dir)
    first = Embedder(tiny_model(), config=config).embed_images(metadata, root=tmp_path)
    np.testing.assert_allclose(first.embeddings.vectors, torch_vectors, atol=TOLERANCE, rtol=0)
    (entry,) = cache_dir.iterdir()
    stamp = (entry / "entry.json").stat().st_mtime_ns
    second = Embedder(tiny_model(), config=config).embed_images(metadata, root=tmp_path)
    assert (entry / "entry.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    np.testing.assert_array_equal(second.embeddings.vectors, first.embeddings.vectors)


def _edit_entry(entry: Path, **changes: object) -> None:
    facts = json.loads((entry / "entry.json").read_text())
    facts.update(changes)
    (entry / "entry.json").write_text(json.dumps(facts))


def test_stale_compiled_cache_is_rebuilt_not_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = CompiledCache(tmp_path)
    batch = np.random.default_rng(0).normal(size=(3, 3, *SPACE.input_size)).astype(np.float32)
    model_a, model_b = tiny_model(seed=0), tiny_model(seed=1)
    with torch.inference_mode():
        expected_b = model_b.module(torch.from_numpy(batch)).numpy()
    cache.runner(model_a.module, SPACE, CARD, "onnxruntime")
    entry = cache.entry_dir("onnxruntime", SPACE)
    # Another runtime version wrote the entry: rebuilt.
    _edit_entry(entry, runtime_version="0.0.1")
    with caplog.at_level(logging.WARNING, logger="wildreid.models.compiled"):
        cache.runner(model_a.module, SPACE, CARD, "onnxruntime")
    assert "runtime_version was '0.0.1'" in caplog.text
    assert json.loads((entry / "entry.json").read_text())["runtime_version"] != "0.0.1"
    # The entry holds another model's graph (copied over, or a file replaced): rebuilt from B.
    other = CompiledCache(tmp_path / "other")
    other.runner(model_b.module, SPACE, CARD, "onnxruntime")
    other_onnx = other.entry_dir("onnxruntime", SPACE) / "model.onnx"
    (entry / "model.onnx").write_bytes(b"not the graph that was checked")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wildreid.models.compiled"):
        runner = cache.runner(model_b.module, SPACE, CARD, "onnxruntime")
    assert "changed since it was compiled" in caplog.text
    np.testing.assert_allclose(runner(batch), expected_b, atol=1e-5)
    assert (entry / "model.onnx").read_bytes() == other_onnx.read_bytes()
    # Another model's space: another entry, never this one.
    other_space = dataclasses.replace(SPACE, weights_sha256="1" * 64)
    assert cache.entry_dir("onnxruntime", other_space) != entry


class _BakedState(nn.Module):
    """Python state read at trace time is frozen into the graph: the export check catches it."""

    calls = 0  # on the class: shared by the copies the exporter and the check make

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return self.conv(x).mean(dim=(2, 3)) * type(self).calls


def test_failing_export_check_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bad.onnx"
    out.write_bytes(b"previous content")
    with pytest.raises(WeightsError, match=r"does not reproduce torch.*min cosine.*not written"):
        export_onnx(_BakedState(), out, space=SPACE, card=CARD)
    assert out.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["bad.onnx"]  # no temporary file left


def test_onnx_without_our_metadata_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.onnx"
    proto = onnx_model_proto(tiny_model().module, SPACE, CARD)
    del proto.metadata_props[:]  # what any other exporter writes
    onnx.save(proto, str(plain))
    with pytest.raises(WeightsError, match=r"no wildreid metadata.*wildreid export MODEL"):
        read_onnx(plain)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="cannot read it as an ONNX file"):
        read_onnx(tmp_path / "junk.onnx")


def test_onnx_file_cannot_run_with_torch(lite0_onnx: Path) -> None:
    with pytest.raises(ConfigError, match="--runtime onnxruntime or openvino"):
        Embedder(read_onnx(lite0_onnx), config=dataclasses.replace(CPU, runtime="torch"))


def test_missing_runtime_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_openvino(name: str, package: str | None = None) -> ModuleType:
        if name == "openvino":
            raise ModuleNotFoundError("No module named 'openvino'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_openvino)
    with pytest.raises(ConfigError, match=r"pip install openvino.*--runtime torch"):
        Embedder(tiny_model(), config=dataclasses.replace(CPU, runtime="openvino"))
    # auto falls back to torch (with a warning) rather than failing
    embedder = Embedder(tiny_model(), config=CPU)
    assert embedder.runtime == "torch"


def test_int8_is_calibrated_on_given_images_and_gets_its_own_space(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    model = tiny_model()
    batches = calibration_batches(metadata, root=tmp_path, space=SPACE, n_images=6, batch_size=4)
    assert [b.shape for b in batches] == [(4, 3, 24, 32), (2, 3, 24, 32)]
    out = tmp_path / "int8.onnx"
    space, check = quantize_int8(model.module, out, space=SPACE, card=CARD, calibration=batches)
    assert check.passed and check.min_cosine > 0.9
    assert check.n_images == 2  # checked on the held-out last batch, calibrated on the first
    loaded = read_onnx(out)
    assert loaded.space == space and space.model == "tiny-conv@int8"
    assert space.weights_sha256 != SPACE.weights_sha256  # int8 vectors never mix with fp32 ones
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(out)).graph.node)
    config = dataclasses.replace(CPU, runtime="onnxruntime")
    got = Embedder(loaded, config=config).embed_images(metadata, root=tmp_path).embeddings
    expected = (
        Embedder(model, config=dataclasses.replace(CPU, runtime="torch"))
        .embed_images(metadata, root=tmp_path)
        .embeddings
    )
    assert got.space == dataclasses.replace(space, dim=8)
    assert (got.vectors * expected.vectors).sum(axis=1).min() > 0.9


def test_openvino_runners_freed_in_any_order_leave_signals_working(tmp_path: Path) -> None:
    """Regression: one OpenVINO core per runner, freed first-created-first, left the thread's
    alternate signal stack unmapped and the next Python-handled signal crashed the process
    (an xdist worker died with SIGSEGV in a later ``subprocess.run``)."""
    pytest.importorskip("openvino")
    relu = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(relu, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    code = f"""
import gc, signal, subprocess, sys
import numpy as np
from pathlib import Path
from wildreid.models.runtimes import open_graph
signal.signal(signal.SIGCHLD, lambda signum, frame: None)
first = open_graph("openvino", Path({str(path)!r}))
second = open_graph("openvino", Path({str(path)!r}))
assert first(np.array([[-1, 2, -3, 4]], dtype=np.float32))[0].tolist() == [[0, 2, 0, 4]]
del first
gc.collect()
del second
gc.collect()
subprocess.run([sys.executable, "-c", "pass"], check=True)
print("alive")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "alive", result.stderr[-2000:]
