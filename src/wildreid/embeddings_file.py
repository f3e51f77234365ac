"""Embeddings on disk: one ``.npz`` file per set of vectors.

Format (numpy ``.npz``, no pickled objects):

=========== ================ ==================================================================
array       dtype, shape     meaning
=========== ================ ==================================================================
image_id    unicode, (N,)    unique image ids
vectors     float32, (N, D)  L2-normalised vectors, row i for ``image_id[i]``
space       unicode, ()      :meth:`wildreid.types.EmbeddingSpace.to_json` of their space
=========== ================ ==================================================================

:func:`load_embeddings` also reads files written by other tools: without a ``space`` array the
vectors get the placeholder space ``EmbeddingSpace(model="external:<file name>",
weights_sha256="unknown", input_size=(1, 1), mean=(0, 0, 0), std=(1, 1, 1), dim=D)``, which
equals only the space of files of the same name, so such vectors are never mixed with vectors
wildreid computed. float64 vectors are cast to float32 and vectors that are not of unit length
are L2-normalised (logged); integer or byte-string ids are converted to text.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from wildreid.errors import ConfigError, DataError
from wildreid.files import atomic_path
from wildreid.ids import first_repeat
from wildreid.types import Embeddings, EmbeddingSpace

__all__ = ["load_embeddings", "save_embeddings"]

logger = logging.getLogger(__name__)

_NORM_TOLERANCE = 1e-3


def save_embeddings(embeddings: Embeddings, path: str | os.PathLike[str]) -> None:
    """Write ``embeddings`` to an ``.npz`` file atomically (see the module docstring).

    The file is written under the exact name given (no ``.npz`` is appended).
    """
    ids = np.array(embeddings.image_ids, dtype=np.str_)
    with atomic_path(path) as tmp, tmp.open("wb") as stream:
        np.savez(
            stream,
            image_id=ids,
            vectors=np.ascontiguousarray(embeddings.vectors, dtype=np.float32),
            space=np.array(embeddings.space.to_json(), dtype=np.str_),
        )


def load_embeddings(path: str | os.PathLike[str]) -> Embeddings:
    """Read embeddings written by :func:`save_embeddings` or by another tool.

    Raises:
        DataError: the file is missing or not an ``.npz`` archive, holds pickled objects, lacks
            ``image_id`` or ``vectors``, has vectors that are not 2-D numbers, a length mismatch,
            duplicate or empty ids, a NaN, infinite or zero vector (the first such id is named),
            or an unreadable ``space``. The message names the file.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    for name in ("image_id", "vectors"):
        if name not in arrays:
            raise DataError(
                f"{path}: embeddings file lacks the array {name!r} (it has "
                f"{', '.join(sorted(arrays)) or 'none'}); it needs image_id and vectors"
            )
    ids = _image_ids(path, arrays["image_id"])
    vectors = _vectors(path, arrays["vectors"], ids)
    space = _space(path, arrays.get("space"), vectors.shape[1])
    return Embeddings(vectors, ids, space)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: embeddings file does not exist")
    try:
        if not zipfile.is_zipfile(path):
            with path.open("rb") as stream:
                npy = stream.read(6) == b"\x93NUMPY"
            what = "a single .npy array" if npy else "not an .npz archive"
            raise DataError(f"{path}: {what}; expected an .npz file with image_id and vectors")
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path}: holds pickled Python objects, which are not loaded (they can run code); "
                "save ids as a unicode array and vectors as float32"
            ) from exc
        raise DataError(f"{path}: not a readable .npz embeddings file ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz embeddings file ({exc})") from exc


def _image_ids(path: Path, raw: np.ndarray) -> tuple[str, ...]:
    if raw.ndim != 1:
        raise DataError(f"{path}: image_id must be 1-D, got shape {raw.shape}")
    if raw.dtype.kind == "U":
        ids = tuple(str(v) for v in raw)
    elif raw.dtype.kind == "S":
        try:
            ids = tuple(v.decode("utf-8") for v in raw)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: image_id bytes are not UTF-8 ({exc})") from exc
    elif raw.dtype.kind in "iu":
        ids = tuple(str(int(v)) for v in raw)
    else:
        raise DataError(f"{path}: image_id must hold strings, got dtype {raw.dtype}")
    empty = [i for i, v in enumerate(ids) if not v.strip()]
    if empty:
        raise DataError(f"{path}: image_id at position {empty[0]} is empty")
    repeat = first_repeat(ids)
    if repeat is not None:
        earlier, later = repeat
        raise DataError(
            f"{path}: image_id {ids[later]!r} appears twice (positions {earlier} and {later})"
        )
    return ids


def _vectors(path: Path, raw: np.ndarray, ids: tuple[str, ...]) -> np.ndarray:
    if raw.ndim != 2:
        raise DataError(f"{path}: vectors must be 2-D (N, D), got shape {raw.shape}")
    if raw.dtype.kind not in "fiu":
        raise DataError(f"{path}: vectors must be numbers, got dtype {raw.dtype}")
    if raw.shape[0] != len(ids):
        raise DataError(f"{path}: {raw.shape[0]} vectors but {len(ids)} image ids")
    if raw.shape[1] == 0:
        raise DataError(f"{path}: vectors have dimension 0")
    if raw.dtype != np.float32:
        logger.info("%s: casting %s vectors to float32", path, raw.dtype)
    vectors = np.ascontiguousarray(raw, dtype=np.float32)  # float64 beyond float32 becomes inf
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise DataError(
            f"{path}: {int((~finite).sum())} vector(s) have NaN or infinite values, first "
            f"image_id {ids[first]!r}"
        )
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if (norms == 0).any():
        first = int(np.flatnonzero(norms == 0)[0])
        raise DataError(f"{path}: the vector of image_id {ids[first]!r} is all zeros")
    if vectors.shape[0] and np.abs(norms - 1.0).max() > _NORM_TOLERANCE:
        logger.info("%s: vectors are not L2-normalised; normalising them", path)
        vectors = np.ascontiguousarray(vectors / norms[:, None], dtype=np.float32)
    return vectors


def _space(path: Path, raw: np.ndarray | None, dim: int) -> EmbeddingSpace:
    if raw is None:
        logger.info("%s has no embedding space; using the placeholder external:%s", path, path.name)
        return EmbeddingSpace(
            model=f"external:{path.name}",
            weights_sha256="unknown",
            input_size=(1, 1),
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            dim=dim,
        )
    if raw.ndim != 0 or raw.dtype.kind not in "US":
        raise DataError(f"{path}: space must be a 0-d text array, got {raw.dtype} {raw.shape}")
    text = raw.item()
    try:
        space = EmbeddingSpace.from_json(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (ConfigError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: space is not a valid embedding space ({exc})") from exc
    if space.dim and space.dim != dim:
        raise DataError(f"{path}: vectors have dimension {dim} but the space says {space.dim}")
    return space if space.dim else replace(space, dim=dim)
