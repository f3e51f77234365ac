"""ALIKED and DISK with their dense network in ONNX Runtime / OpenVINO: the same features as
torch at odd small sizes and both orientations; checked export; cache rebuilt when stale."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.matching.local_images import photo
from wildreid.errors import ConfigError, UnknownComponentError, WeightsError
from wildreid.matching.dense import CompiledDense, DenseNet, dense_facts
from wildreid.matching.extractors import LOCAL_CPU_DEFAULT, ExtractorConfig, build_extractor
from wildreid.models.compiled import CompiledCache
from wildreid.types import LocalFeatures

SIZES = [(130, 119), (119, 130), (61, 45), (157, 200), (256, 192)]
"""(width, height): LionData-like small odd crops in both orientations, and a larger one."""


def crops() -> list[Image.Image]:
    return [photo(512).crop((40, 30, 40 + w, 30 + h)) for w, h in SIZES]


def _agreement(torch_f: LocalFeatures, other: LocalFeatures) -> tuple[float, float]:
    """Share of torch's keypoints the other finds within 0.01 px, and the smallest descriptor
    cosine similarity among those."""
    distance = np.linalg.norm(torch_f.keypoints[:, None] - other.keypoints[None], axis=2)
    near = distance.min(axis=1) < 0.01
    a = torch_f.descriptors[near]
    b = other.descriptors[distance.argmin(axis=1)[near]]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(near.mean()), float(cosine.min())


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", ["aliked", "disk"])
def test_compiled_dense_network_gives_torchs_features(name: str, runtime: str) -> None:
    reference = build_extractor(name=name, runtime="torch")
    compiled = build_extractor(name=name, runtime=runtime)
    assert compiled.runtime == runtime  # type: ignore[attr-defined]
    assert compiled.key == reference.key  # same features: cached ones stay valid
    for image in crops():
        want, got = reference.extract(image), compiled.extract(image)
        assert got.image_size == want.image_size
        assert len(want) > 5 and abs(len(got) - len(want)) <= max(1, len(want) // 50)
        same, cosine = _agreement(want, got)
        assert same >= 0.97, (image.size, same)
        assert cosine > 0.99, (image.size, cosine)


class _Tiny(DenseNet):
    """A small dense network (two maps) for the cache tests."""

    divisor = 8
    outputs = ("features", "scores")

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(image)
        return x, torch.sigmoid(x[:, :1])


class _FrozenLongSide(_Tiny):
    """Scales by ``max(H, W)`` read in Python, as ALIKED's deformable convolutions did: the
    trace keeps the export's longer side, wrong for the other orientation."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, scores = super().forward(image)
        longest = max(image.shape[2], image.shape[3])
        return features * longest, scores


def test_export_check_refuses_a_graph_with_a_frozen_shape(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not reproduce torch"):
        CompiledDense(_FrozenLongSide(), runtime="onnxruntime", name="frozen",
                      weights_sha256="0" * 64, cache_dir=str(tmp_path))  # fmt: skip
    assert not list(tmp_path.rglob("model.onnx"))  # nothing kept


def test_stale_compiled_dense_entry_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = torch.rand(1, 3, 16, 24)
    net_a, net_b = _Tiny(seed=0), _Tiny(seed=1)
    with torch.inference_mode():
        expected_b = net_b(image)[0].numpy()
    sha = "a" * 64
    CompiledDense(net_a, runtime="onnxruntime", name="tiny", weights_sha256=sha,
                  cache_dir=str(tmp_path))  # fmt: skip
    cache = CompiledCache(tmp_path)
    entry = cache.entry_dir("onnxruntime", dense_facts("tiny", sha))
    assert (entry / "entry.json").is_file()
    # Another runtime version: rebuilt in place (this time from network B).
    facts = json.loads((entry / "entry.json").read_text())
    (entry / "entry.json").write_text(json.dumps({**facts, "runtime_version": "0.0.1"}))
    with caplog.at_level(logging.WARNING, logger="wildreid.models.compiled"):
        rebuilt = CompiledDense(net_b, runtime="onnxruntime", name="tiny", weights_sha256=sha,
                                cache_dir=str(tmp_path))  # fmt: skip
    assert "runtime_version was '0.0.1'" in caplog.text
    np.testing.assert_allclose(rebuilt(image)[0].numpy(), expected_b, atol=1e-5)
    # A damaged graph: rebuilt, not trusted.
    (entry / "model.onnx").write_bytes(b"not a graph")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wildreid.models.compiled"):
        CompiledDense(net_b, runtime="onnxruntime", name="tiny", weights_sha256=sha,
                      cache_dir=str(tmp_path))  # fmt: skip
    assert "changed since it was compiled" in caplog.text
    # Other weights or another wrapper version: another entry.
    assert cache.entry_dir("onnxruntime", dense_facts("tiny", "b" * 64)) != entry
    assert cache.entry_dir("openvino", dense_facts("tiny", sha)) != entry


def test_compiled_dense_needs_padded_input(tmp_path: Path) -> None:
    dense = CompiledDense(_Tiny(), runtime="onnxruntime", name="tiny", weights_sha256="c" * 64,
                          cache_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(ValueError, match="multiple of 8"):
        dense(torch.rand(1, 3, 15, 24))


def test_runtime_setting_is_validated_and_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownComponentError, match="unknown runtime 'tensorrt'"):
        ExtractorConfig(runtime="tensorrt")
    auto = build_extractor(name="aliked", runtime="auto")
    assert auto.runtime == LOCAL_CPU_DEFAULT  # type: ignore[attr-defined]
    assert build_extractor(name="sift", runtime="openvino").extract(photo(64)) is not None
    # A missing runtime package: a clear error when asked for, torch when auto chose it.
    monkeypatch.setitem(sys.modules, LOCAL_CPU_DEFAULT, None)  # import fails
    with pytest.raises(ConfigError, match=f"pip install {LOCAL_CPU_DEFAULT}"):
        build_extractor(name="aliked", runtime=LOCAL_CPU_DEFAULT)
    auto = build_extractor(name="aliked", runtime="auto")
    assert auto.runtime == "torch"  # type: ignore[attr-defined]
    assert len(auto.extract(photo(96))) > 0
