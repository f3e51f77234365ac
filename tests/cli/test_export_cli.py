"""``wildreid export`` and ``--runtime`` through Typer's runner, on a tiny trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_model_cli import FAST, lions, run
from wildreid.embeddings_file import load_embeddings
from wildreid.models.factory import load_model, save_checkpoint
from wildreid.models.onnx_export import read_onnx

__all__ = ["lions"]  # the fixture, re-used


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A wildreid checkpoint of a tiny timm net (random weights, as training would write)."""
    loaded = load_model("timm/test_efficientnet", weights="random")
    return save_checkpoint(tmp_path / "run", net=loaded.module, card=loaded.card)  # type: ignore[arg-type]


def test_export_checkpoint_then_embed_with_each_runtime(
    checkpoint: Path, lions: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model.onnx"
    code, stdout, err = run("export", checkpoint, "--format", "onnx", "--out", out, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["passed"] and report["min_cosine"] > 0.9999
    assert read_onnx(out).space == load_model(checkpoint).space
    vectors = {}
    for runtime, model in [("torch", checkpoint), ("onnxruntime", out), ("openvino", out)]:
        npz = tmp_path / f"{runtime}.npz"
        code, stdout, err = run(
            "embed", lions, "--out", npz, "--model", model, "--runtime", runtime, *FAST
        )
        assert code == 0, err
        assert f"runtime: {runtime}" in stdout
        vectors[runtime] = load_embeddings(npz)
    for runtime in ("onnxruntime", "openvino"):
        assert vectors[runtime].space == vectors["torch"].space
        np.testing.assert_allclose(
            vectors[runtime].vectors, vectors["torch"].vectors, atol=1e-4, rtol=0
        )


def test_export_refuses_unknown_format(tmp_path: Path) -> None:
    out = tmp_path / "model.trt"
    code, _, err = run("export", "efficientnet-lite0", "--format", "tensorrt", "--out", out)
    assert code == 2 and "unknown export format 'tensorrt'" in err
    assert not out.exists()


def test_unknown_runtime_is_a_usage_error(lions: Path, tmp_path: Path) -> None:
    code, _, err = run("embed", lions, "--out", tmp_path / "e.npz", "--runtime", "tensorrt")
    assert code == 2 and "unknown runtime 'tensorrt'" in err


def test_embed_refuses_onnx_without_metadata(lions: Path, tmp_path: Path) -> None:
    import onnx

    from tests.models.test_runtimes import CARD, SPACE, tiny_model
    from wildreid.models.onnx_export import onnx_model_proto

    proto = onnx_model_proto(tiny_model().module, SPACE, CARD)
    del proto.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(proto, str(plain))
    code, _, err = run("embed", lions, "--out", tmp_path / "e.npz", "--model", plain, *FAST)
    assert code == 5 and "wildreid export MODEL --format onnx" in err


def test_int8_needs_calibration_images(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    code, _, err = run("export", "efficientnet-lite0", "--int8", "--out", out)
    assert code == 2 and "--int8 needs --calibration" in err
    assert not out.exists()
