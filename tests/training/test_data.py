"""Training data: row selection, validation carving, labels, the training dataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.builders import write_png
from wildreid.data.dataset import BadImage
from wildreid.data.images import load_image
from wildreid.data.transforms import Resize
from wildreid.errors import ConfigError, DataError, ImageReadError, MetadataError
from wildreid.evaluation.protocol import protocol_from_split
from wildreid.training.data import (
    VAL_ROLE_COLUMN,
    LabelEncoder,
    TrainDataset,
    check_bad_images,
    collate_train,
    group_keys,
    prepare_training_data,
)
from wildreid.training.sampling import PKSampler

# images per training identity; "solo" has one image
TRAIN_COUNTS = {f"id{i:02d}": n for i, n in enumerate([4, 3, 2, 5, 4, 3, 2, 4, 3, 2])}
TRAIN_COUNTS["solo"] = 1


def _tables(three_way: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metadata (string cells) and a split: train identities, 2 test identities, unknowns."""
    rows, sides = [], []

    def add(identity: str, n: int, side: str) -> None:
        for j in range(n):
            image_id = f"{identity}-{side}-{j}"
            rows.append(
                {
                    "image_id": image_id,
                    "identity": identity,
                    "path": f"images/{image_id}.png",
                    "encounter": f"{identity}-enc{j // 2}",
                }
            )
            sides.append(side)

    for identity, n in TRAIN_COUNTS.items():
        add(identity, n, "train")
    add("unknown", 2, "train")
    if three_way:
        for identity in ("t0", "t1"):
            add(identity, 2, "gallery")
            add(identity, 2, "query")
    else:
        add("t0", 3, "test")
        add("t1", 3, "test")
        add("unknown", 1, "test")
    add("v0", 2, "val")
    metadata = pd.DataFrame(rows)
    split = pd.DataFrame({"image_id": metadata["image_id"], "split": sides})
    return metadata.sample(frac=1.0, random_state=0).reset_index(drop=True), split


@pytest.mark.parametrize("three_way", [False, True])
@pytest.mark.parametrize("val_kind", ["disjoint", "closed"])
def test_only_train_rows_of_known_animals_are_used(val_kind: str, three_way: bool) -> None:
    metadata, split = _tables(three_way)
    data = prepare_training_data(metadata, split, root="r", val_kind=val_kind, val_fraction=0.3)
    train_side = set(split.loc[split["split"] == "train", "image_id"])
    for frame in (data.train, data.val):
        assert set(frame["image_id"]) <= train_side
        assert not (frame["identity"] == "unknown").any()
    assert set(data.val_split["image_id"]) == set(data.val["image_id"])
    assert data.excluded_unknown == 2
    assert data.root == Path("r")


def test_disjoint_validation_holds_out_whole_identities() -> None:
    metadata, split = _tables()
    data = prepare_training_data(metadata, split, root=".", val_fraction=0.3)
    train_ids, val_ids = set(data.train["identity"]), set(data.val["identity"])
    assert not train_ids & val_ids
    assert train_ids | val_ids == set(TRAIN_COUNTS)
    assert len(val_ids) == 3  # round(0.3 * 11) identities
    assert set(data.labels.identities) == train_ids
    roles = data.val[VAL_ROLE_COLUMN]
    assert set(roles) == {"query", "gallery"}
    for identity, group in data.val.groupby("identity"):
        n = TRAIN_COUNTS[str(identity)]
        expected_queries = 0 if n == 1 else min(max(int(n * 0.5 + 0.5), 1), n - 1)
        assert int((group[VAL_ROLE_COLUMN] == "query").sum()) == expected_queries
    expected = np.where(roles == "query", "test", "train")
    np.testing.assert_array_equal(data.val_split["split"].to_numpy(), expected)
    protocol = protocol_from_split(metadata, data.val_split)
    assert set(protocol.query_ids) == set(data.val.loc[roles == "query", "image_id"])


def test_closed_validation_keeps_identities_and_trains_on_the_gallery() -> None:
    metadata, split = _tables()
    data = prepare_training_data(metadata, split, root=".", val_kind="closed", val_fraction=0.5)
    queries = data.val[data.val[VAL_ROLE_COLUMN] == "query"]
    gallery = data.val[data.val[VAL_ROLE_COLUMN] == "gallery"]
    assert not set(queries["image_id"]) & set(data.train["image_id"])
    assert set(gallery["image_id"]) == set(data.train["image_id"])
    assert set(queries["identity"]) <= set(data.train["identity"])
    per_identity = queries["identity"].value_counts().to_dict()
    # take(0.5, n): round half up, clamped to 1 .. n - 1; one image stays on train
    expected = {i: {2: 1, 3: 2, 4: 2, 5: 3}[n] for i, n in TRAIN_COUNTS.items() if n > 1}
    assert per_identity == expected
    assert set(data.labels.identities) == set(TRAIN_COUNTS)


def test_singletons_are_counted_and_kept() -> None:
    metadata, split = _tables()
    data = prepare_training_data(metadata, split, root=".", val_fraction=0)
    assert data.singleton_identities == 1
    assert "solo" in data.labels.identities
    closed = prepare_training_data(metadata, split, root=".", val_kind="closed", val_fraction=0.5)
    # take(0.5, n) leaves one image on train of identities with 2 or 3 images
    assert closed.singleton_identities == 1 + sum(n in (2, 3) for n in TRAIN_COUNTS.values())


def test_no_validation_when_val_fraction_is_zero() -> None:
    metadata, split = _tables()
    data = prepare_training_data(metadata, split, root=".", val_fraction=0)
    assert data.val.empty and VAL_ROLE_COLUMN in data.val.columns
    assert data.val_split.empty and list(data.val_split.columns) == ["image_id", "split"]
    assert len(data.train) == sum(TRAIN_COUNTS.values())


def test_carving_is_deterministic_and_depends_on_the_seed() -> None:
    metadata, split = _tables()
    first = prepare_training_data(metadata, split, root=".", seed=1)
    again = prepare_training_data(metadata.iloc[::-1], split.iloc[::-1], root=".", seed=1)
    assert set(first.val["image_id"]) == set(again.val["image_id"])
    assert first.labels == again.labels
    other = prepare_training_data(metadata, split, root=".", seed=2)
    assert set(other.val["identity"]) != set(first.val["identity"])


def test_frames_are_metadata_rows_in_order_and_the_input_is_untouched() -> None:
    metadata, split = _tables()
    before = metadata.copy()
    data = prepare_training_data(metadata, split, root=".")
    pd.testing.assert_frame_equal(metadata, before)
    pd.testing.assert_frame_equal(data.train, metadata.loc[data.train.index])
    assert data.train.index.is_monotonic_increasing
    assert data.val.index.is_monotonic_increasing


def test_group_column_keeps_encounters_on_one_side() -> None:
    metadata, split = _tables()
    data = prepare_training_data(
        metadata, split, root=".", val_kind="closed", val_fraction=0.5, group_column="encounter"
    )
    queries = data.val[data.val[VAL_ROLE_COLUMN] == "query"]
    assert not set(queries["encounter"]) & set(data.train["encounter"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"val_kind": "open"}, "val_kind"),
        ({"val_query_fraction": 0.0}, "val_query_fraction"),
        ({"seed": 1.5}, "seed"),
        ({"group_column": "nope"}, "group_column"),
        ({"group_column": "nope", "val_fraction": 0}, "group_column"),
    ],
)
def test_invalid_options_are_config_errors(kwargs: dict[str, object], field: str) -> None:
    metadata, split = _tables()
    with pytest.raises(ConfigError, match=field):
        prepare_training_data(metadata, split, root=".", **kwargs)  # type: ignore[arg-type]


def test_too_few_identities_to_carve_is_a_data_error() -> None:
    metadata, split = _tables()
    one = split["image_id"].str.startswith(("id00-", "t0-"))
    with pytest.raises(DataError, match="cannot carve a disjoint validation set from 1 identit"):
        prepare_training_data(metadata, split[one], root=".")


def test_a_split_without_known_train_rows_is_a_data_error() -> None:
    metadata, split = _tables()
    no_train = split[split["split"] != "train"]
    with pytest.raises(DataError, match="no 'train' rows"):
        prepare_training_data(metadata, no_train, root=".")


def test_split_ids_missing_from_the_metadata_are_a_data_error() -> None:
    metadata, split = _tables()
    extra = pd.concat([split, pd.DataFrame({"image_id": ["ghost"], "split": ["train"]})])
    with pytest.raises(DataError, match="ghost"):
        prepare_training_data(metadata, extra, root=".")


def test_label_encoder_round_trip_and_errors() -> None:
    encoder = LabelEncoder.from_identities(["zebra", "ayo", "mbili", "ayo"])
    assert encoder.identities == ("ayo", "mbili", "zebra") and encoder.num_classes == 3
    labels = encoder.encode(["mbili", "zebra", "ayo", "mbili"])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [1, 2, 0, 1])
    assert encoder.decode(labels) == ["mbili", "zebra", "ayo", "mbili"]
    with pytest.raises(ConfigError, match="'tatu'"):
        encoder.encode(["ayo", "tatu"])
    with pytest.raises(ConfigError, match="label 3"):
        encoder.decode([3])
    with pytest.raises(ConfigError, match="sorted"):
        LabelEncoder(("b", "a"))
    with pytest.raises(ConfigError, match="unknown"):
        LabelEncoder.from_identities(["a", "unknown"])


RESIZE = Resize(input_size=(6, 8))


def _dataset(tmp_path: Path) -> tuple[TrainDataset, pd.DataFrame]:
    metadata, split = _tables()
    data = prepare_training_data(metadata, split, root=tmp_path, val_fraction=0)
    for i, path in enumerate(data.train["path"]):
        write_png(tmp_path / path, size=(20, 14), value=i)
    rows = data.train.assign(bbox="")
    rows.loc[rows.index[0], "bbox"] = "[2, 3, 10, 8]"
    return TrainDataset(tmp_path, rows, labels=data.labels, transform=RESIZE), rows


def test_dataset_items_are_transformed_crops_with_their_labels(tmp_path: Path) -> None:
    dataset, rows = _dataset(tmp_path)
    assert len(dataset) == len(rows)
    assert dataset.target_size == RESIZE.target_size  # taken from the transform
    for i in (0, 5):
        image, label = dataset[i]  # type: ignore[misc]
        assert isinstance(label, int)
        assert dataset.labels.dtype == np.int64 and dataset.labels[i] == label
        identity = rows["identity"].iloc[i]
        assert label == LabelEncoder.from_identities(rows["identity"]).encode([identity])[0]
    image, _ = dataset[0]  # type: ignore[misc]
    crop = load_image(tmp_path / rows["path"].iloc[0], bbox=(2, 3, 10, 8))
    torch.testing.assert_close(image, RESIZE(crop), atol=0, rtol=0)
    copy = pickle.loads(pickle.dumps(dataset))
    torch.testing.assert_close(copy[0][0], image, atol=0, rtol=0)


def test_unreadable_image_raises_naming_the_metadata_row_or_is_skipped(tmp_path: Path) -> None:
    dataset, rows = _dataset(tmp_path)
    (tmp_path / rows["path"].iloc[2]).write_bytes(b"not an image")
    record = dataset[2]
    assert isinstance(record, BadImage)
    assert record.index == rows.index[2]  # the metadata position, not the position in rows
    batch = collate_train([dataset[1], record, dataset[3]])
    assert batch.images is not None and batch.images.shape == (2, 3, 6, 8)
    np.testing.assert_array_equal(batch.labels.numpy(), dataset.labels[[1, 3]])
    image_id = rows["image_id"].iloc[2]
    row = rows.index[2] + 1
    with pytest.raises(ImageReadError, match=rf"metadata row {row} .*'{image_id}'"):
        check_bad_images(batch, skip_bad_images=False)
    assert check_bad_images(batch, skip_bad_images=True) == 1
    assert check_bad_images(collate_train([dataset[1]]), skip_bad_images=False) == 0
    assert collate_train([record]).images is None


def _encoder(rows: pd.DataFrame) -> LabelEncoder:
    return LabelEncoder.from_identities(rows["identity"])


def test_dataset_errors_name_the_row_or_identity(tmp_path: Path) -> None:
    _, rows = _dataset(tmp_path)
    bad_box = rows.copy()
    bad_box.loc[rows.index[1], "bbox"] = "[1, 2]"
    with pytest.raises(MetadataError, match=rf"row {rows.index[1] + 1} "):
        TrainDataset(tmp_path, bad_box, labels=_encoder(rows), transform=RESIZE)
    stranger = rows.assign(identity="stranger")
    with pytest.raises(ConfigError, match="'stranger'"):
        TrainDataset(tmp_path, stranger, labels=_encoder(rows), transform=RESIZE)
    with pytest.raises(MetadataError, match="path"):
        TrainDataset(tmp_path, rows.drop(columns="path"), labels=_encoder(rows), transform=RESIZE)


def test_loader_with_pk_sampler_gives_p_by_k_label_batches(tmp_path: Path) -> None:
    dataset, _ = _dataset(tmp_path)
    sampler = PKSampler(dataset.labels, p=2, k=2, seed=0, batches_per_epoch=3)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=sampler.batch_size, sampler=sampler, collate_fn=collate_train
    )
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert batch.images is not None and batch.images.shape == (4, 3, 6, 8)
        labels = batch.labels.view(2, 2)
        assert (labels[:, 0] == labels[:, 1]).all() and labels[0, 0] != labels[1, 0]


def test_group_keys_strip_text_and_make_empty_cells_their_own_group() -> None:
    column = pd.Series(["clipA", " clipA ", "", None, float("nan"), "clipB"])
    keys = group_keys(column)
    assert keys[0] == keys[1] == "clipA" and keys[5] == "clipB"
    assert len({keys[2], keys[3], keys[4]}) == 3 and not {keys[2], keys[3], keys[4]} & {"clipA"}
