"""ImageDataset: items, bbox crops, bad-image records, collation, metadata errors."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from tests.builders import write_png
from wildreid.data.dataset import BadImage, ImageDataset, collate_images, iterate_batches
from wildreid.data.images import load_image
from wildreid.data.transforms import Resize
from wildreid.errors import ImageReadError, MetadataError

RESIZE = Resize(input_size=(6, 8))


def _metadata(tmp_path: Path, n: int = 3, **overrides: str) -> pd.DataFrame:
    rows = []
    for i in range(n):
        path = f"images/{i}.png"
        write_png(tmp_path / path, size=(20, 14), value=i)
        rows.append({"image_id": f"img{i}", "identity": "a", "path": path, "bbox": ""})
    frame = pd.DataFrame(rows)
    for column_row, value in overrides.items():
        column, row = column_row.rsplit("_", 1)
        frame.loc[int(row), column] = value
    return frame


def test_items_are_transformed_images_with_their_row_position(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path, bbox_1="[2, 3, 10, 8]")
    dataset = ImageDataset(tmp_path, metadata, transform=RESIZE, target_size=RESIZE.target_size)
    assert len(dataset) == 3
    image, index = dataset[1]  # type: ignore[misc]
    assert index == 1
    assert image.shape == (3, 6, 8) and image.dtype == torch.uint8
    crop = load_image(tmp_path / "images/1.png", bbox=(2, 3, 10, 8))
    assert torch.equal(image, RESIZE(crop))


def test_indices_select_rows_and_keep_their_positions(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path, n=4)
    dataset = ImageDataset(tmp_path, metadata, transform=RESIZE, indices=[3, 1])
    assert len(dataset) == 2
    assert [dataset[i][1] for i in range(2)] == [3, 1]  # type: ignore[index]
    assert dataset.image_id(0) == "img3"


def test_unreadable_image_is_a_record_naming_row_line_id_and_path(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path)
    (tmp_path / "images/1.png").write_bytes(b"not a png at all")
    dataset = ImageDataset(tmp_path, metadata, transform=RESIZE)
    record = dataset[1]
    assert isinstance(record, BadImage)
    assert (record.index, record.row, record.image_id) == (1, 2, "img1")
    error = record.error()
    assert isinstance(error, ImageReadError)
    message = str(error)
    assert "metadata row 2 (line 3)" in message
    assert "'img1'" in message
    assert str(tmp_path / "images/1.png") in message
    assert "skip_bad_images" in message


def test_missing_file_record_names_the_path(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path, path_0="images/nope.png")
    record = ImageDataset(tmp_path, metadata, transform=RESIZE)[0]
    assert isinstance(record, BadImage)
    assert "does not exist" in record.reason
    assert "nope.png" in str(record.error())


def test_bbox_outside_the_image_is_a_bad_image(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path, bbox_2="[100, 100, 5, 5]")
    record = ImageDataset(tmp_path, metadata, transform=RESIZE)[2]
    assert isinstance(record, BadImage)
    assert "outside" in record.reason


def test_invalid_bbox_cell_fails_on_construction_naming_the_row(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path, bbox_1="[1, 2, 3]")
    with pytest.raises(MetadataError, match=r"row 2 \(line 3\), column 'bbox'"):
        ImageDataset(tmp_path, metadata, transform=RESIZE)
    # a row that is not selected is not checked
    assert len(ImageDataset(tmp_path, metadata, transform=RESIZE, indices=[0, 2])) == 2


def test_missing_bbox_cells_mean_no_bbox(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path)
    metadata["bbox"] = [None, float("nan"), "[0, 0, 5, 5]"]  # a table not read as strings
    dataset = ImageDataset(tmp_path, metadata, transform=RESIZE)
    full = RESIZE(load_image(tmp_path / "images/1.png"))
    assert torch.equal(dataset[1][0], full)  # type: ignore[index]


def test_missing_columns_and_bad_indices_are_refused(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path)
    with pytest.raises(MetadataError, match="path"):
        ImageDataset(tmp_path, metadata.drop(columns="path"), transform=RESIZE)
    with pytest.raises(IndexError):
        ImageDataset(tmp_path, metadata, transform=RESIZE, indices=[3])


def test_collate_stacks_samples_and_keeps_bad_records_apart(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path, path_1="images/nope.png")
    dataset = ImageDataset(tmp_path, metadata, transform=RESIZE)
    batch = collate_images([dataset[i] for i in range(3)])
    assert batch.images is not None and batch.images.shape == (2, 3, 6, 8)
    assert batch.indices.tolist() == [0, 2]
    assert [b.image_id for b in batch.bad] == ["img1"]
    empty = collate_images([dataset[1]])
    assert empty.images is None and empty.indices.tolist() == [] and len(empty.bad) == 1


def test_dataset_pickles_without_the_table(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path)
    dataset = ImageDataset(tmp_path, metadata, transform=RESIZE, target_size=(8, 6))
    clone = pickle.loads(pickle.dumps(dataset))
    metadata.loc[0, "path"] = "elsewhere.png"  # later edits do not reach the dataset
    assert torch.equal(clone[0][0], dataset[0][0])  # type: ignore[index]


def _explode(image: Image.Image) -> torch.Tensor:
    raise RuntimeError("boom")


def test_batches_from_the_thread_keep_order_and_bad_records(tmp_path: Path) -> None:
    metadata = _metadata(tmp_path, n=5, path_3="images/nope.png")
    dataset = ImageDataset(tmp_path, metadata, transform=RESIZE)
    batches = list(iterate_batches(dataset, batch_size=2))
    assert [b.indices.tolist() for b in batches] == [[0, 1], [2], [4]]
    assert [[r.image_id for r in b.bad] for b in batches] == [[], ["img3"], []]


def test_errors_in_the_thread_reach_the_consumer(tmp_path: Path) -> None:
    dataset = ImageDataset(tmp_path, _metadata(tmp_path), transform=_explode)
    with pytest.raises(RuntimeError, match="boom"):
        list(iterate_batches(dataset, batch_size=2))
    assert not [t for t in threading.enumerate() if t.name == "wildreid-decode"]


def test_closing_early_stops_the_thread(tmp_path: Path) -> None:
    dataset = ImageDataset(tmp_path, _metadata(tmp_path, n=6), transform=RESIZE)
    batches = iterate_batches(dataset, batch_size=1)
    assert next(batches).indices.tolist() == [0]
    batches.close()
    assert not [t for t in threading.enumerate() if t.name == "wildreid-decode"]
