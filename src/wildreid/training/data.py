"""Training data: which rows train, which validate, integer labels, and a dataset of
(augmented image, label) pairs.

:func:`prepare_training_data` reads a metadata table and an evaluation split. Only ``train`` rows
of the split are used (with a ``train``/``gallery``/``query`` split, the ``train`` subset): test,
query, gallery and ``val`` rows are never trained on or validated on, so the evaluation stays
honest. Rows of ``unknown`` animals are dropped and counted. A validation set is carved from the
training rows with :func:`~wildreid.data.splits.make_split` (hash-ordered, no random generator),
under seeds derived from ``seed`` so that it does not reuse the evaluation split's hash order:

* ``disjoint`` (default): ``val_fraction`` of the training identities are held out; their images
  are split per identity (kind ``closed``, ``val_query_fraction``) into val gallery and val query.
  The model is validated on animals it never saw, as it will be used.
* ``closed``: per identity, ``take(val_fraction, n)`` images become val queries (identities with
  one image keep it); the other training images both train and form the val gallery.

Integer labels exist only here (:class:`LabelEncoder`, over the training identities, sorted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch.utils.data import Dataset

from wildreid.data.dataset import BadImage, bbox_tuple
from wildreid.data.images import DEFAULT_MAX_PIXELS, load_image
from wildreid.data.landmarks import landmark_points, landmark_table
from wildreid.data.schema import UNKNOWN_IDENTITY
from wildreid.data.splits import SplitConfig, make_split, summarize_split
from wildreid.errors import ConfigError, DataError, ImageReadError, MetadataError

__all__ = [
    "VAL_KINDS",
    "VAL_ROLE_COLUMN",
    "LabelEncoder",
    "TrainBatch",
    "TrainDataset",
    "TrainSample",
    "TrainingData",
    "check_bad_images",
    "collate_train",
    "group_keys",
    "prepare_training_data",
]

logger = logging.getLogger(__name__)

VAL_KINDS = ("closed", "disjoint")
VAL_ROLE_COLUMN = "val_role"
"""Column of :attr:`TrainingData.val`: ``query`` or ``gallery``."""

TrainSample = tuple[torch.Tensor, int]
"""A loaded training item: the transformed image and its integer label."""


@dataclass(frozen=True)
class LabelEncoder:
    """String identities <-> integer labels ``0 .. n - 1`` in sorted identity order.

    Raises:
        ConfigError: ``identities`` is not sorted and unique, or contains ``"unknown"``.
    """

    identities: tuple[str, ...]

    def __post_init__(self) -> None:
        if not all(isinstance(name, str) for name in self.identities):
            raise ConfigError("identities must be strings")
        if list(self.identities) != sorted(set(self.identities)):
            raise ConfigError("identities must be sorted and unique; use from_identities")
        if UNKNOWN_IDENTITY in self.identities:
            raise ConfigError(f"{UNKNOWN_IDENTITY!r} marks unidentified animals, not a class")

    @classmethod
    def from_identities(cls, identities: Iterable[str]) -> LabelEncoder:
        """The encoder of the distinct values of ``identities`` (``pandas.factorize``, sorted)."""
        _, uniques = pd.factorize(
            pd.Series([str(name) for name in identities], dtype=object), sort=True
        )
        return cls(tuple(str(name) for name in uniques))

    @property
    def num_classes(self) -> int:
        """Number of identities (the classifier's output size)."""
        return len(self.identities)

    def encode(self, identities: Iterable[str]) -> npt.NDArray[np.int64]:
        """The label of each identity.

        Shapes:
            returns: (N,) int64.

        Raises:
            ConfigError: an identity is not one of :attr:`identities` (the message names it).
        """
        names = [str(name) for name in identities]
        labels = pd.Index(self.identities, dtype=object).get_indexer(pd.Index(names, dtype=object))
        if (labels < 0).any():
            missing = sorted({n for n, label in zip(names, labels, strict=True) if label < 0})
            raise ConfigError(
                f"identity {missing[0]!r} is not among the {self.num_classes} training "
                f"identities ({len(missing)} unknown in all); labels exist only for those"
            )
        return np.asarray(labels, dtype=np.int64)

    def decode(self, labels: Iterable[int]) -> list[str]:
        """The identity of each label.

        Raises:
            ConfigError: a label is outside ``0 .. num_classes - 1``.
        """
        out = []
        for label in labels:
            if not 0 <= int(label) < self.num_classes:
                raise ConfigError(f"label {label} outside 0..{self.num_classes - 1}")
            out.append(self.identities[int(label)])
        return out


@dataclass(frozen=True)
class TrainingData:
    """The rows to train and validate on. Frames are copies of metadata rows (all columns) in
    metadata order, indexed by their 0-based metadata position.

    Attributes:
        root: the folder the ``path`` cells are relative to.
        train: rows to fit on.
        val: validation rows, carved from the training side; column :data:`VAL_ROLE_COLUMN`
            says ``query`` or ``gallery``. Empty when validation is disabled.
        val_split: ``image_id,split`` of ``val`` (``train`` = val gallery, ``test`` = val query),
            for :func:`wildreid.evaluation.protocol.protocol_from_split`.
        labels: the encoder over the identities of ``train``.
        excluded_unknown: ``unknown`` rows of the training side, left out.
        singleton_identities: identities of ``train`` with one image (kept for classification
            losses, left out of P x K sampling).
    """

    root: Path
    train: pd.DataFrame
    val: pd.DataFrame
    val_split: pd.DataFrame
    labels: LabelEncoder
    excluded_unknown: int
    singleton_identities: int


def prepare_training_data(
    metadata: pd.DataFrame,
    split: pd.DataFrame,
    *,
    root: str | os.PathLike[str],
    val_fraction: float = 0.2,
    val_kind: str = "disjoint",
    val_query_fraction: float = 0.5,
    group_column: str | None = None,
    seed: int = 0,
) -> TrainingData:
    """Select the training rows of ``split`` and carve a validation set from them.

    Args:
        metadata: the metadata table (string cells); only read.
        split: the evaluation split (``image_id,split``); only its ``train`` rows are used.
        root: the folder image paths are relative to.
        val_fraction: share of training identities (disjoint) or of each identity's images
            (closed) used for validation; 0 disables validation.
        val_kind: ``disjoint`` or ``closed`` (module docstring).
        val_query_fraction: share of each held-out identity's images that are val queries
            (disjoint).
        group_column: metadata column whose non-empty values (e.g. ``encounter``) are kept on one
            side of every carve, so near-duplicate photos do not leak into validation.
        seed: seed of the carving.

    Raises:
        ConfigError: an option is invalid, or ``group_column`` is not a column.
        DataError: the split or metadata is malformed, the split has no known training rows, or
            the rows are too few to carve the validation set.
    """
    _check_options(val_fraction, val_kind, val_query_fraction, seed)
    if group_column is not None and group_column not in metadata.columns:
        raise ConfigError(f"group_column {group_column!r} is not a metadata column")
    summarize_split(metadata, split)  # validates both tables and that split ids are metadata ids
    meta = metadata.reset_index(drop=True)
    sides = dict(zip(split["image_id"].astype(str), split["split"].astype(str), strict=True))
    on_train = meta["image_id"].astype(str).map(sides) == "train"
    unknown = meta["identity"].astype(str) == UNKNOWN_IDENTITY
    pool = meta[on_train & ~unknown]
    if pool.empty:
        raise DataError(
            f"the split has no 'train' rows with a known identity ({int(on_train.sum())} train "
            "rows in all); training needs identified animals on the train side"
        )
    in_train, role = _carve(pool, val_fraction, val_kind, val_query_fraction, group_column, seed)
    val = pool[role != ""].assign(**{VAL_ROLE_COLUMN: role[role != ""]})
    val_split = pd.DataFrame(
        {
            "image_id": val["image_id"].astype(str).to_numpy(),
            "split": np.where(val[VAL_ROLE_COLUMN] == "query", "test", "train"),
        }
    )
    train = pool[in_train].copy()
    counts = train["identity"].astype(str).value_counts()
    data = TrainingData(
        root=Path(root),
        train=train,
        val=val,
        val_split=val_split,
        labels=LabelEncoder.from_identities(counts.index),
        excluded_unknown=int((on_train & unknown).sum()),
        singleton_identities=int((counts == 1).sum()),
    )
    logger.info(
        "training on %d images of %d identities (%d single-image, %d unknown left out); "
        "validation (%s): %d queries, %d gallery images",
        *(len(train), data.labels.num_classes, data.singleton_identities, data.excluded_unknown),
        *(val_kind if val_fraction else "none", (role == "query").sum(), (role == "gallery").sum()),
    )
    return data


def _carve(
    pool: pd.DataFrame,
    val_fraction: float,
    val_kind: str,
    val_query_fraction: float,
    group_column: str | None,
    seed: int,
) -> tuple[pd.Series[bool], pd.Series[str]]:
    """Whether each known training row trains, and its validation role (``""`` if none)."""
    ids = pool["image_id"].astype(str)

    def carve(rows: pd.DataFrame, kind: str, fraction: float, purpose: str) -> pd.Series[bool]:
        """Whether each row of ``pool`` is on the test side of a split of ``rows``."""
        config = SplitConfig(
            kind=kind,
            seed=_derive(seed, purpose),
            test_fraction=fraction,
            group_column=group_column,
        )
        try:
            split = make_split(rows, config=config)
        except DataError as exc:
            raise DataError(
                f"cannot carve a {val_kind} validation set from {rows['identity'].nunique()} "
                f"identities ({len(rows)} training images): {exc}. Change val_fraction, use "
                "the other val_kind, or set val_fraction=0 to train without validation"
            ) from exc
        return ids.isin(split.loc[split["split"] == "test", "image_id"])

    if val_fraction == 0:
        return pd.Series(True, index=pool.index), pd.Series("", index=pool.index)
    if val_kind == "closed":
        query = carve(pool, "closed", val_fraction, "val closed")
        return ~query, query.map({True: "query", False: "gallery"})
    held = carve(pool, "disjoint", val_fraction, "val identities")
    query = carve(pool[held], "closed", val_query_fraction, "val roles")
    role = pd.Series("", index=pool.index).mask(held, "gallery").mask(query, "query")
    return ~held, role


def _derive(seed: int, purpose: str) -> int:
    """A 63-bit seed for one carve, independent of the evaluation split's hash order."""
    digest = hashlib.sha256(f"wildreid.training\x1f{purpose}\x1f{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _check_options(fraction: float, kind: str, query_fraction: float, seed: int) -> None:
    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    if not number(fraction) or not 0 <= fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {fraction!r}")
    if kind not in VAL_KINDS:
        raise ConfigError(f"val_kind must be one of {VAL_KINDS}, got {kind!r}")
    if not number(query_fraction) or not 0 < query_fraction < 1:
        raise ConfigError(f"val_query_fraction must be in (0, 1), got {query_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")


def group_keys(column: pd.Series) -> list[str]:
    """One group key per row (for :class:`~wildreid.training.sampling.PKSampler`'s
    ``groups``): the cell's text, stripped; an empty cell is a group of its own."""
    text = column.astype("string").str.strip().fillna("")
    return [value or f"\0row {i}" for i, value in enumerate(text)]


class TrainDataset(Dataset[TrainSample | BadImage]):
    """Training images and labels: load (bbox crop, reduced decoding), then the train transform.

    Item ``i`` is ``(transform(image), label)``, or a :class:`~wildreid.data.dataset.BadImage`
    (whose ``index`` is the row's metadata position, the index of ``rows``) when the file cannot
    be read: an exception raised in a worker process would reach the trainer wrapped, so the
    record travels back and :func:`check_bad_images` raises or skips it there.

    Args:
        root: the folder the ``path`` cells are relative to.
        rows: the rows (e.g. :attr:`TrainingData.train`), indexed by metadata position.
        labels: the encoder; every row's identity must be one of its identities.
        transform: picklable ``PIL image -> (3, h, w) tensor`` (e.g. from
            :func:`~wildreid.training.augment.build_train_transform`); with ``landmarks``,
            ``(PIL image, (k, 3) points) -> (3 + k, h, w)``
            (:class:`~wildreid.data.landmarks.LandmarkInput`).
        target_size: ``(width, height)`` for reduced JPEG decoding; ``None`` takes the
            transform's ``target_size`` attribute if it has one, else decodes at full size.
        max_pixels: passed to ``load_image``.
        landmarks: Landmark-Id: the landmark names, in channel order; images then decode at
            full size and the ``landmarks`` column is read (:func:`landmark_table`).

    Raises:
        MetadataError: a column is missing, a ``bbox`` or ``landmarks`` cell is invalid, a
            landmark is unknown to the model or lies outside its image (names the row and
            landmark).
        ConfigError: a row's identity has no label.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        rows: pd.DataFrame,
        *,
        labels: LabelEncoder,
        transform: Callable[..., torch.Tensor],
        target_size: tuple[int, int] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        landmarks: Sequence[str] = (),
    ) -> None:
        missing = [c for c in ("image_id", "identity", "path") if c not in rows.columns]
        if missing:
            raise MetadataError(f"training rows lack column(s) {', '.join(missing)}")
        integer_index = pd.api.types.is_integer_dtype(rows.index)
        self.positions = [int(i) for i in rows.index] if integer_index else list(range(len(rows)))
        self.labels = labels.encode(rows["identity"].astype(str))
        """(N,) int64 label of each item (for :class:`~wildreid.training.sampling.PKSampler`)."""
        self.root = Path(root)
        self.transform = transform
        self.target_size = target_size or getattr(transform, "target_size", None)
        self.max_pixels = max_pixels
        self._ids = rows["image_id"].astype(str).tolist()
        self._paths = rows["path"].astype(str).tolist()
        cells = rows["bbox"].fillna("").astype(str) if "bbox" in rows.columns else [""] * len(rows)
        self._bboxes = [bbox_tuple(c, p) for c, p in zip(cells, self.positions, strict=True)]
        self.landmark_names = tuple(landmarks)
        self._points = landmark_table(rows, self.landmark_names) if landmarks else None
        if self._points is not None:
            self.target_size = None  # landmarks are in full-resolution pixels

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> TrainSample | BadImage:
        path = self.root / self._paths[i]
        try:
            image = load_image(
                path, bbox=self._bboxes[i], target_size=self.target_size, max_pixels=self.max_pixels
            )
        except ImageReadError as exc:
            return BadImage(self.positions[i], self._ids[i], str(path), str(exc))
        if self._points is None:
            return self.transform(image), int(self.labels[i])
        points = landmark_points(
            self._points[i],
            bbox=self._bboxes[i],
            size=(image.height, image.width),
            where=f"metadata row {self.positions[i]} (image_id {self._ids[i]!r})",
            names=self.landmark_names,
        )
        return self.transform(image, points), int(self.labels[i])


@dataclass(frozen=True)
class TrainBatch:
    """A collated training batch and the records of the images that did not load.

    Shapes:
        images: (B, 3, h, w) float32; ``None`` when every image of the batch failed.
        labels: (B,) int64.
    """

    images: torch.Tensor | None
    labels: torch.Tensor
    bad: tuple[BadImage, ...] = ()

    def pin_memory(self) -> TrainBatch:
        """A copy in page-locked memory (DataLoader's ``pin_memory=True`` calls this)."""
        images = None if self.images is None else self.images.pin_memory()
        return dataclasses.replace(self, images=images, labels=self.labels.pin_memory())


def collate_train(items: Sequence[TrainSample | BadImage]) -> TrainBatch:
    """Stack the loaded samples; keep the :class:`BadImage` records apart."""
    samples = [item for item in items if not isinstance(item, BadImage)]
    images = torch.stack([image for image, _ in samples]) if samples else None
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return TrainBatch(images, labels, tuple(item for item in items if isinstance(item, BadImage)))


def check_bad_images(batch: TrainBatch, *, skip_bad_images: bool) -> int:
    """Raise for the batch's first unreadable image, or log them and return how many there are.

    Raises:
        ImageReadError: ``batch.bad`` is not empty and ``skip_bad_images`` is false; the message
            names the metadata row, line, image id and path.
    """
    if batch.bad and not skip_bad_images:
        raise batch.bad[0].error()
    for record in batch.bad:
        logger.warning("skipping unreadable training image: %s", record.error())
    return len(batch.bad)
