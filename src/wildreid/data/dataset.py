"""A torch Dataset over metadata rows: load (bbox crop, reduced decoding), then transform.

An unreadable image never raises inside the dataset: its item is a :class:`BadImage` record that
names the image id, path and metadata row. Exceptions raised in DataLoader worker processes reach
the main process re-wrapped with a worker traceback in the message; a record travels back intact,
and the consumer decides to skip it or to raise :meth:`BadImage.error` (an
:class:`~wildreid.errors.ImageReadError` with a clean message) in its own process.

Rows are numbered like :class:`~wildreid.data.schema.Problem`: the 1-based data row of the
metadata table, the CSV line being ``row + 1``.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from wildreid.data.images import DEFAULT_MAX_PIXELS, BBoxTuple, load_image
from wildreid.data.schema import Problem, parse_bbox
from wildreid.errors import ImageReadError, MetadataError

__all__ = [
    "BadImage",
    "ImageBatch",
    "ImageDataset",
    "Sample",
    "bbox_tuple",
    "collate_images",
    "iterate_batches",
    "worker_context",
]

Sample = tuple[torch.Tensor, int]
"""A loaded item: the transformed image and its 0-based position in the metadata table."""


@dataclass(frozen=True)
class BadImage:
    """An image that could not be read, in place of its sample.

    Attributes:
        index: 0-based position of the row in the metadata table.
        image_id: the row's ``image_id``.
        path: the image file as resolved under the dataset root.
        reason: the :class:`~wildreid.errors.ImageReadError` message.
    """

    index: int
    image_id: str
    path: str
    reason: str

    @property
    def row(self) -> int:
        """The 1-based data row (the CSV line is ``row + 1``)."""
        return self.index + 1

    def error(self) -> ImageReadError:
        """The error to raise: names the row, the line, the image id and the path."""
        where = f"metadata row {self.row} (line {self.row + 1}), image_id {self.image_id!r}"
        if self.path not in self.reason:  # load_image's messages name the file already
            where += f", path {self.path}"
        return ImageReadError(
            f"{where}: {self.reason} To skip unreadable images instead, set skip_bad_images."
        )


@dataclass(frozen=True)
class ImageBatch:
    """A collated batch: the images that loaded, their rows, and the records of those that did not.

    Shapes:
        images: (B, 3, h, w), the dtype of the transform's output; ``None`` when every image of
            the batch failed.
        indices: (B,) int64, 0-based metadata positions of ``images``, in order.
    """

    images: torch.Tensor | None
    indices: torch.Tensor
    bad: tuple[BadImage, ...] = ()

    def pin_memory(self) -> ImageBatch:
        """A copy in page-locked memory (DataLoader's ``pin_memory=True`` calls this)."""
        images = None if self.images is None else self.images.pin_memory()
        return ImageBatch(images, self.indices.pin_memory(), self.bad)


def collate_images(items: Sequence[Sample | BadImage]) -> ImageBatch:
    """Stack the loaded samples of a DataLoader batch; keep the :class:`BadImage` records apart.

    Shapes:
        items: samples of (3, h, w) tensors, all of one shape and dtype.
    """
    samples = [item for item in items if not isinstance(item, BadImage)]
    bad = tuple(item for item in items if isinstance(item, BadImage))
    images = torch.stack([image for image, _ in samples]) if samples else None
    indices = torch.tensor([index for _, index in samples], dtype=torch.int64)
    return ImageBatch(images, indices, bad)


class ImageDataset(Dataset[Sample | BadImage]):
    """Images of metadata rows, loaded with :func:`~wildreid.data.images.load_image`.

    Item ``i`` is ``(transform(image), index)`` where ``index`` is the 0-based position of the row
    in ``metadata`` (``indices[i]`` when ``indices`` is given), or a :class:`BadImage` when the
    file cannot be read. The table is copied into plain lists on construction, so the dataset is
    cheap to pickle into DataLoader workers and later changes to ``metadata`` do not affect it.

    Args:
        root: the folder the ``path`` cells are relative to.
        metadata: the metadata table with string cells (``image_id``, ``path``, optional
            ``bbox``); only read.
        transform: turns a loaded RGB image into a tensor; must be picklable to be used with
            worker processes (e.g. :class:`~wildreid.data.transforms.Resize`).
        target_size: ``(width, height)`` the transform will resize to, so JPEGs can be decoded
            at reduced scale (see ``load_image``); ``None`` decodes at full size.
        indices: the 0-based positions of the rows to load, in order; ``None`` loads all rows.
        max_pixels: passed to ``load_image``.

    Raises:
        MetadataError: a required column is missing, or a ``bbox`` cell of a selected row is not a
            valid box (the message names the row and line).
        IndexError: an entry of ``indices`` is outside the table.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        metadata: pd.DataFrame,
        *,
        transform: Callable[[Image.Image], torch.Tensor],
        target_size: tuple[int, int] | None = None,
        indices: Sequence[int] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        missing = [c for c in ("image_id", "path") if c not in metadata.columns]
        if missing:
            raise MetadataError(
                f"metadata lacks column(s) {', '.join(missing)}; images need image_id and path"
            )
        n_rows = len(metadata)
        positions = list(range(n_rows)) if indices is None else [int(i) for i in indices]
        for position in positions:
            if not 0 <= position < n_rows:
                raise IndexError(f"row position {position} outside a table of {n_rows} rows")
        ids = metadata["image_id"].astype(str).tolist()
        paths = metadata["path"].astype(str).tolist()
        bbox_cells = (  # a missing cell (NaN in a table not read by read_metadata) is empty
            metadata["bbox"].fillna("").astype(str).tolist()
            if "bbox" in metadata.columns
            else [""] * n_rows
        )
        self.root = Path(root)
        self.transform = transform
        self.target_size = target_size
        self.max_pixels = max_pixels
        self._indices = positions
        self._ids = [ids[p] for p in positions]
        self._paths = [paths[p] for p in positions]
        self._bboxes = [bbox_tuple(bbox_cells[p], p) for p in positions]

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> Sample | BadImage:
        index = self._indices[i]
        path = self.root / self._paths[i]
        try:
            image = load_image(
                path, bbox=self._bboxes[i], target_size=self.target_size, max_pixels=self.max_pixels
            )
        except ImageReadError as exc:
            return BadImage(index, self._ids[i], str(path), str(exc))
        return self.transform(image), index

    def image_id(self, i: int) -> str:
        """The ``image_id`` of item ``i``."""
        return self._ids[i]


def iterate_batches(
    dataset: ImageDataset, *, batch_size: int, workers: int = 0, pin_memory: bool = False
) -> Generator[ImageBatch, None, None]:
    """The dataset's items in order, collated into batches of ``batch_size``.

    With ``workers=0`` items are loaded in one background thread of this process, up to two
    batches ahead: Pillow's decoding and torch's resizing release the GIL, so loading overlaps
    the consumer's work (a forward pass) without the start-up of worker processes. With
    ``workers > 0`` a DataLoader loads them in that many ``forkserver`` (else ``spawn``)
    processes, which inherit no threads or locks of this one; each imports torch when it starts.

    Close the generator (or let it be collected) to stop early: the thread or the worker
    processes stop at once.

    Args:
        dataset: the images to load.
        batch_size: items per batch.
        workers: worker processes; 0 loads in a background thread.
        pin_memory: put batches in page-locked memory (for asynchronous copies to a GPU).
    """
    loader: DataLoader[Sample | BadImage] = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        multiprocessing_context=worker_context() if workers else None,
        persistent_workers=False,
    )
    return _in_thread(loader) if workers == 0 else _in_workers(loader)


def worker_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` (else ``spawn``): workers inherit no threads or locks of this process."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _in_workers(loader: Iterable[ImageBatch]) -> Generator[ImageBatch, None, None]:
    """Iterate a multi-process loader; closing the generator drops its iterator at once, which
    shuts the worker processes down (rather than when an exception's traceback is freed)."""
    yield from loader


def _in_thread(batches: Iterable[ImageBatch], depth: int = 2) -> Generator[ImageBatch, None, None]:
    """Produce ``batches`` in a background thread, up to ``depth`` ahead of the consumer.

    An exception in the thread is raised in the consumer; closing the generator stops the thread.
    (``load_image`` turns Pillow's bomb warning into an error with ``warnings.catch_warnings``,
    which is not thread-safe; its own pixel limit is checked first, so a race cannot let a bomb
    through.)
    """
    items: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: object) -> bool:
        while not stop.is_set():
            try:
                items.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put("batch", batch):
                    return
            put("end", None)
        except BaseException as exc:  # handed to the consumer, raised there
            put("error", exc)

    thread = threading.Thread(target=produce, name="wildreid-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                assert isinstance(value, BaseException)
                raise value
            assert isinstance(value, ImageBatch)
            yield value
    finally:
        stop.set()
        thread.join()


def bbox_tuple(cell: str, position: int) -> BBoxTuple | None:
    """The ``bbox`` cell of metadata row ``position`` as ``(x, y, w, h)``, or ``None`` if empty.

    Raises:
        MetadataError: the cell is not a valid box (names the row and column).
    """
    try:
        box = parse_bbox(cell)
    except ValueError as exc:
        raise MetadataError(str(Problem(str(exc), position + 1, "bbox"))) from exc
    return None if box is None else box.as_tuple()
