"""Embedder: unit vectors, determinism, workers, batch size, precision, bad images, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tests.builders import write_png
from wildreid.data.images import load_image
from wildreid.data.transforms import preprocess
from wildreid.errors import (
    ConfigError,
    EmbeddingSpaceError,
    ImageReadError,
    MetadataError,
    WeightsError,
)
from wildreid.models.embedder import (
    Embedder,
    EmbedderConfig,
    SupportsEmbedding,
    default_workers,
)
from wildreid.types import EmbeddingSpace

SPACE = EmbeddingSpace(
    model="tiny-conv",
    weights_sha256="0" * 64,
    input_size=(24, 32),
    mean=(0.5, 0.4, 0.3),
    std=(0.25, 0.2, 0.3),
    crop_mode="stretch",
)
CPU = EmbedderConfig(device="cpu", batch_size=4, workers=0, runtime="torch")


@dataclasses.dataclass(frozen=True)
class TinyModel:
    """An EmbeddingModel-like pair (SupportsEmbedding)."""

    module: nn.Module
    space: EmbeddingSpace


def tiny_model(space: EmbeddingSpace = SPACE, *, seed: int = 0) -> TinyModel:
    """A deterministic conv + average-pool network with 8-D output."""
    torch.manual_seed(seed)
    module = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()
    return TinyModel(module, space)


def write_dataset(root: Path, n: int = 10) -> pd.DataFrame:
    """``n`` small PNGs of various sizes, every third with a bbox; the metadata table."""
    rows = []
    for i in range(n):
        path = f"images/{i:02d}.png"
        write_png(root / path, size=(30 + 3 * i, 20 + 2 * (i % 4)), value=i)
        bbox = "[2, 1, 20, 15]" if i % 3 == 0 else ""
        rows.append(
            {"image_id": f"im{i:02d}", "identity": f"id{i % 3}", "path": path, "bbox": bbox}
        )
    return pd.DataFrame(rows)


def embed(root: Path, metadata: pd.DataFrame, **config: object) -> np.ndarray:
    result = Embedder(tiny_model(), config=dataclasses.replace(CPU, **config)).embed_images(
        metadata, root=root
    )
    return result.embeddings.vectors


def test_unit_float32_vectors_in_metadata_order_tagged_with_the_space(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    model: SupportsEmbedding = tiny_model()
    result = Embedder(model, config=CPU).embed_images(metadata, root=tmp_path)
    embeddings = result.embeddings
    assert embeddings.vectors.shape == (10, 8) and embeddings.vectors.dtype == np.float32
    assert embeddings.vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(embeddings.vectors, axis=1), 1.0, atol=1e-6)
    assert embeddings.image_ids == tuple(metadata["image_id"])
    assert embeddings.space == dataclasses.replace(SPACE, dim=8)
    assert (result.n_cached, result.n_computed, result.skipped) == (0, 10, ())
    assert result.seconds > 0


def test_same_input_same_bits(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    first, second = embed(tmp_path, metadata), embed(tmp_path, metadata)
    np.testing.assert_array_equal(first, second)
    assert len({row.tobytes() for row in first}) == 10  # different images, different vectors


def test_batch_size_changes_at_most_the_last_bits(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    np.testing.assert_allclose(
        embed(tmp_path, metadata, batch_size=1), embed(tmp_path, metadata, batch_size=7), atol=1e-6
    )


def test_images_equal_tensors_preprocessed_one_by_one(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path, n=4).assign(bbox="")
    embedder = Embedder(tiny_model(), config=CPU)  # batch_size 4: one batch, like below
    from_files = embedder.embed_images(metadata, root=tmp_path).embeddings.vectors
    batch = torch.stack(
        [
            preprocess(
                load_image(tmp_path / path, target_size=(32, 24)),
                input_size=SPACE.input_size,
                mean=SPACE.mean,
                std=SPACE.std,
            )
            for path in metadata["path"]
        ]
    )
    np.testing.assert_array_equal(embedder.embed_tensors(batch), from_files)


def test_bf16_is_close_to_fp32(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    fp32 = embed(tmp_path, metadata, precision="fp32")
    bf16 = embed(tmp_path, metadata, precision="bf16")
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-6)
    assert (np.sum(fp32 * bf16, axis=1) > 0.99).all()


def test_channels_last_does_not_change_the_result_much(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    np.testing.assert_allclose(
        embed(tmp_path, metadata, channels_last=True),
        embed(tmp_path, metadata, channels_last=False),
        atol=1e-6,
    )


def test_worker_processes_give_identical_results_and_clean_errors(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    (tmp_path / metadata.loc[4, "path"]).write_bytes(b"garbage")
    in_thread = embed(tmp_path, metadata, skip_bad_images=True)
    in_workers = embed(tmp_path, metadata, skip_bad_images=True, workers=2)
    np.testing.assert_array_equal(in_thread, in_workers)
    assert in_workers.shape == (9, 8)
    with pytest.raises(ImageReadError) as caught:
        embed(tmp_path, metadata, workers=2)
    message = str(caught.value)
    assert message.startswith("metadata row 5 (line 6), image_id 'im04'")
    assert "DataLoader worker" not in message and "Traceback" not in message


def test_skip_bad_images_reports_the_ids_and_reasons(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    (tmp_path / metadata.loc[2, "path"]).write_bytes(b"")
    metadata.loc[7, "path"] = "images/missing.png"
    config = dataclasses.replace(CPU, skip_bad_images=True)
    result = Embedder(tiny_model(), config=config).embed_images(metadata, root=tmp_path)
    assert [image_id for image_id, _ in result.skipped] == ["im02", "im07"]
    assert "empty" in result.skipped[0][1] and "does not exist" in result.skipped[1][1]
    assert result.n_computed == 8 and len(result.embeddings) == 8
    assert "im02" not in result.embeddings.image_ids
    reference = embed(tmp_path, metadata.drop(index=[2, 7]).reset_index(drop=True), batch_size=1)
    np.testing.assert_allclose(result.embeddings.vectors, reference, atol=1e-6)


def test_first_bad_image_stops_the_run_naming_its_row(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    metadata.loc[6, "path"] = "images/missing.png"
    with pytest.raises(ImageReadError, match=r"metadata row 7 \(line 8\), image_id 'im06'"):
        embed(tmp_path, metadata)


def test_progress_is_reported_up_to_the_total(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    calls: list[tuple[int, int]] = []
    Embedder(tiny_model(), config=CPU).embed_images(
        metadata, root=tmp_path, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]


def test_the_callers_module_is_not_modified(tmp_path: Path) -> None:
    model = tiny_model()
    model.module.train()
    weight = model.module[0].weight
    embedder = Embedder(model, config=dataclasses.replace(CPU, channels_last=True))
    assert model.module.training and weight.is_contiguous()
    assert model.module[0].weight is weight
    assert not embedder.module.training
    assert embedder.module[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_a_ready_module_is_used_as_it_is() -> None:
    model = tiny_model()
    model.module.to(memory_format=torch.channels_last)
    assert Embedder(model, config=CPU).module is model.module


def test_empty_metadata_gives_empty_embeddings(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path).iloc[:0]
    result = Embedder(tiny_model(), config=CPU).embed_images(metadata, root=tmp_path)
    assert result.embeddings.vectors.shape == (0, 8)
    assert result.embeddings.space.dim == 8


def test_duplicate_ids_and_missing_columns_are_metadata_errors(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    metadata.loc[5, "image_id"] = "im01"
    embedder = Embedder(tiny_model(), config=CPU)
    with pytest.raises(MetadataError, match=r"row 6 \(line 7\).*duplicates row 2"):
        embedder.embed_images(metadata, root=tmp_path)
    with pytest.raises(MetadataError, match="path"):
        embedder.embed_images(metadata.drop(columns="path"), root=tmp_path)


def test_embed_tensors_checks_the_batch_shape() -> None:
    embedder = Embedder(tiny_model(), config=CPU)
    out = embedder.embed_tensors(torch.randn(3, 3, 24, 32))
    assert out.shape == (3, 8)
    with pytest.raises(ConfigError, match=r"\(B, 3, 24, 32\)"):
        embedder.embed_tensors(torch.randn(3, 3, 32, 24))
    with pytest.raises(ConfigError, match="float"):
        embedder.embed_tensors(torch.zeros(1, 3, 24, 32, dtype=torch.uint8))


def test_space_dimension_must_match_the_network() -> None:
    embedder = Embedder(tiny_model(dataclasses.replace(SPACE, dim=16)), config=CPU)
    with pytest.raises(EmbeddingSpaceError, match="8-D"):
        _ = embedder.space


def test_non_finite_features_name_the_image(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path, n=3)
    model = tiny_model()
    with torch.no_grad():
        model.module[0].bias.fill_(float("nan"))
    with pytest.raises(WeightsError, match="'im00'"):
        Embedder(model, config=CPU).embed_images(metadata, root=tmp_path)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"workers": -1}, "workers"),
        ({"workers": False}, "workers"),
        ({"precision": "int8"}, "precision"),
    ],
)
def test_invalid_configs_are_refused(config: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EmbedderConfig(**config)  # type: ignore[arg-type]


def test_fp16_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="CUDA"):
        Embedder(tiny_model(), config=dataclasses.replace(CPU, precision="fp16"))


def test_default_workers() -> None:
    assert default_workers(torch.device("cpu")) == 0
    assert 0 <= default_workers(torch.device("cuda")) <= 7
    assert Embedder(tiny_model(), config=dataclasses.replace(CPU, workers=None)).workers == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_is_close_to_cpu_fp32(tmp_path: Path) -> None:
    metadata = write_dataset(tmp_path)
    cpu = embed(tmp_path, metadata)
    for workers in (0, 2):
        cuda = embed(tmp_path, metadata, device="cuda", precision="auto", workers=workers)
        assert (np.sum(cpu * cuda, axis=1) > 0.99).all()
