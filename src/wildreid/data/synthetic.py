"""The synthetic landmark dataset of the Landmark-Id paper (section 4.1.1).

An identity is a canonical pattern: random black filled ellipses inside a triangle. The three
corners of the triangle are the landmarks ``tip``, ``left`` and ``right`` (left and right as seen
in the canonical view). An example is the pattern seen by a camera moving around the plane: the
pattern warped by a random homography (rotation, scale, perspective tilt, shift) over a procedural
underwater-like background that is always lighter than the ellipses, converted to grayscale, with
Gaussian noise. The landmarks are warped with the same homography.

As in the paper ("the image itself does not have any information about landmark locations"),
the triangle is not drawn by default: the ellipses lie on the background texture, and only their
spread hints at where the corners are, so heatmaps of the landmarks tell a network something the
pixels do not. ``body_visible=True`` paints the triangle white under the ellipses (an animal's
visible outline), from which the corners, and so the landmarks, can be read off the image.

Coordinates are continuous pixels: the image spans ``[0, W] x [0, H]`` and the pixel in row
``i``, column ``j`` covers ``[j, j + 1) x [i, i + 1)``. A landmark has COCO visibility 2 when it
lies inside the image and 1 when it left the image (its coordinates are still stored).

Every random draw comes from a generator keyed by ``(seed, identity, subset, example)``, so the
output is byte-identical for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd

from wildreid.data.schema import Landmark, format_landmarks, write_metadata
from wildreid.errors import ConfigError
from wildreid.files import atomic_path

__all__ = [
    "LANDMARK_NAMES",
    "SUBSETS",
    "Pattern",
    "SynthConfig",
    "SynthExample",
    "SynthResult",
    "generate_synthetic",
    "make_pattern",
    "read_synth_config",
    "render_canonical",
    "render_example",
    "sample_homography",
]

logger = logging.getLogger(__name__)

LANDMARK_NAMES = ("tip", "left", "right")
SUBSETS = ("train", "gallery", "query")
_TRIANGLE_FRAC = ((0.5, 0.16), (0.22, 0.8), (0.78, 0.8))  # canonical corners / size_px
_CAMERA_DISTANCE = 2.0  # camera to pattern plane, in canonical image widths
_INK_MAX = 45.0  # ellipses are at most this grey (before noise) ...
_BACKGROUND_MIN = 95.0  # ... and the background at least this grey
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, RGB order
_OCTAVES = (2, 4, 8, 16)  # cells across the image, per octave of the value noise

FloatArray = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]
_Task = tuple[int, str, tuple[tuple[str, int], ...]]  # identity index, name, (subset, count)...


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; the defaults are the paper's dataset.

    Attributes:
        identities: training identities; also the gallery / query identities unless
            ``test_identities`` is given.
        test_identities: identities shared by gallery and query (disjoint from the training
            ones); ``None``: as many as ``identities``.
        size_px: width and height of every image.
        train_examples: images per identity in the train subset.
        gallery_examples: images per identity in the gallery subset.
        query_examples: images per identity in the query subset.
        seed: the seed every random draw derives from.
        noise_std: standard deviation of the Gaussian noise, in grey levels (0..255).
        ellipses: inclusive range of the number of ellipses in a pattern.
        max_rotation_deg: in-plane rotations are uniform in ``[-max, max]``.
        max_tilt_deg: the pattern plane tilts away from the camera by up to this angle.
        scale_range: the pattern's size relative to the canonical view (before tilt).
        max_shift_frac: the pattern's centre shifts by up to this fraction of the image size.
        supersample: patterns are drawn and warped at this multiple of ``size_px``, then
            area-averaged down (anti-aliasing).
        body_visible: paint the triangle white under the ellipses (module docstring); the
            paper's dataset (the default) does not.
    """

    identities: int = 750
    size_px: int = 128
    train_examples: int = 3
    gallery_examples: int = 3
    query_examples: int = 5
    test_identities: int | None = None
    seed: int = 0
    noise_std: float = 6.0
    ellipses: tuple[int, int] = (6, 18)
    max_rotation_deg: float = 180.0
    max_tilt_deg: float = 35.0
    scale_range: tuple[float, float] = (0.6, 0.95)
    max_shift_frac: float = 0.1
    supersample: int = 3
    body_visible: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.body_visible, bool):
            raise ConfigError(f"body_visible must be true or false, got {self.body_visible!r}")
        for name, (low, high, integer) in _BOUNDS.items():
            value = getattr(self, name)
            if name == "test_identities" and value is None:
                continue
            if name not in _PAIRS:
                _check_field(name, value, low, high, integer)
                continue
            if not (isinstance(value, tuple | list) and len(value) == 2):
                raise ConfigError(f"{name} must be a pair (low, high), got {value!r}")
            object.__setattr__(self, name, tuple(value))  # synth.json gives back lists
            for item in value:
                _check_field(name, item, low, high, integer)
            if value[0] > value[1]:
                raise ConfigError(f"{name} must be (low, high) with low <= high, got {value!r}")


_PAIRS = ("ellipses", "scale_range")
_BOUNDS: dict[str, tuple[float, float, bool]] = {  # field: low, high, integer
    "identities": (1, math.inf, True),
    "test_identities": (1, math.inf, True),
    "size_px": (32, 2048, True),
    "train_examples": (1, math.inf, True),
    "gallery_examples": (1, math.inf, True),
    "query_examples": (1, math.inf, True),
    "seed": (0, math.inf, True),
    "noise_std": (0, 255, False),
    "ellipses": (1, 1000, True),
    "max_rotation_deg": (0, 180, False),
    "max_tilt_deg": (0, 60, False),
    "scale_range": (0.05, 4, False),
    "max_shift_frac": (0, 0.5, False),
    "supersample": (1, 8, True),
}


def _check_field(name: str, value: object, low: float, high: float, integer: bool) -> None:
    kinds = int if integer else int | float
    if isinstance(value, kinds) and not isinstance(value, bool) and low <= value <= high:
        return
    kind = "an integer" if integer else "a number"
    bounds = f"at least {low}" if high == math.inf else f"between {low} and {high}"
    raise ConfigError(f"{name} must be {kind} {bounds}, got {value!r}")


@dataclass(frozen=True)
class SynthResult:
    """What :func:`generate_synthetic` wrote; ``n_identities`` counts train plus gallery/query."""

    root: Path
    metadata_path: Path
    split_path: Path
    n_images: int
    n_identities: int
    seconds: float


@dataclass(frozen=True, eq=False)
class Pattern:
    """An identity's canonical pattern.

    Shapes:
        triangle: ``(3, 2)`` float64, corners ``tip, left, right`` as ``(x, y)`` canonical pixels.
        masks: ``(size_px * supersample, size_px * supersample, 2)`` uint8; channel 0 is the
            triangle, channel 1 the ellipses (clipped to the triangle); 255 inside, 0 outside.
    """

    triangle: npt.NDArray[np.float64]
    masks: U8Array
    size_px: int
    supersample: int


@dataclass(frozen=True, eq=False)
class SynthExample:
    """One rendered example.

    Shapes:
        image: ``(size_px, size_px)`` uint8 grayscale.
        homography: ``(3, 3)`` float64, canonical pixels to image pixels.
        coverage: ``(size_px, size_px, 2)`` float32 in ``[0, 1]``: the fraction of each pixel
            covered by the warped triangle (channel 0) and by the warped ellipses (channel 1).
    """

    image: U8Array
    landmarks: dict[str, Landmark]
    homography: npt.NDArray[np.float64]
    coverage: FloatArray


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def make_pattern(rng: np.random.Generator, config: SynthConfig) -> Pattern:
    """Draw a canonical pattern: ellipses with centres inside the triangle, clipped to it."""
    size, ss = config.size_px, config.supersample
    triangle = np.array(_TRIANGLE_FRAC, dtype=np.float64) * size
    shift = 4  # cv2 fixed-point bits: sub-pixel drawing
    to_fixed = (1 << shift) * ss

    def fixed(points: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:  # centre convention
        return np.rint((points - 0.5 / ss) * to_fixed).astype(np.int32)

    masks = np.zeros((size * ss, size * ss, 2), dtype=np.uint8)
    tri_mask = np.ascontiguousarray(masks[..., 0])
    cv2.fillPoly(tri_mask, [fixed(triangle)], 255, cv2.LINE_8, shift)
    ell_mask = np.zeros_like(tri_mask)
    for _ in range(int(rng.integers(config.ellipses[0], config.ellipses[1] + 1))):
        a, b = rng.random(2)
        if a + b > 1:  # uniform in the triangle
            a, b = 1 - a, 1 - b
        centre = triangle[0] + a * (triangle[1] - triangle[0]) + b * (triangle[2] - triangle[0])
        major = rng.uniform(0.025, 0.08) * size
        axes = np.array([major, major * rng.uniform(0.35, 1.0)]) * to_fixed
        cx, cy = (int(v) for v in fixed(centre))
        ax, ay = (int(v) for v in np.rint(axes))
        angle = float(rng.uniform(0.0, 180.0))
        cv2.ellipse(ell_mask, (cx, cy), (ax, ay), angle, 0, 360, 255, -1, cv2.LINE_8, shift)
    masks[..., 0] = tri_mask
    masks[..., 1] = np.minimum(ell_mask, tri_mask)
    return Pattern(triangle, masks, size, ss)


def render_canonical(pattern: Pattern) -> U8Array:
    """The canonical view for illustration: black ellipses, white triangle on light grey.

    Shapes:
        returns ``(size_px, size_px)`` uint8.
    """
    size = pattern.size_px
    coverage = np.asarray(cv2.resize(pattern.masks, (size, size), interpolation=cv2.INTER_AREA))
    image = 200.0 + (55.0 * coverage[..., 0] - 255.0 * coverage[..., 1]) / 255.0
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def sample_homography(rng: np.random.Generator, config: SynthConfig) -> npt.NDArray[np.float64]:
    """A camera around the pattern plane: canonical pixels to image pixels.

    Shapes:
        returns ``(3, 3)`` float64 with ``H[2, 2] == 1``.
    """
    size = float(config.size_px)
    centre = np.array(_TRIANGLE_FRAC).mean(axis=0) * size
    to_plane = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, size]]) / size
    roll = math.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    tilt = math.radians(config.max_tilt_deg) * math.sqrt(rng.random())
    direction = rng.uniform(0.0, 2 * math.pi)
    tilted, _ = cv2.Rodrigues(np.array([tilt * math.cos(direction), tilt * math.sin(direction), 0]))
    rolled = np.array(
        [[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]]
    )
    rotation = rolled @ tilted
    scale = rng.uniform(*config.scale_range)
    shift = rng.uniform(-config.max_shift_frac, config.max_shift_frac, size=2) / scale
    translation = _CAMERA_DISTANCE * np.array([shift[0], shift[1], 1.0])
    extrinsic = np.column_stack([rotation[:, 0], rotation[:, 1], translation])
    focal = scale * size * _CAMERA_DISTANCE
    camera = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    homography = camera @ extrinsic @ to_plane
    return np.asarray(homography / homography[2, 2], dtype=np.float64)


def _warp_points(homography: npt.NDArray[np.float64], points: npt.NDArray[np.float64]) -> Any:
    warped = np.column_stack([points, np.ones(len(points))]) @ homography.T
    return warped[:, :2] / warped[:, 2:]


def _smooth_noise(rng: np.random.Generator, size: int, fields: int) -> FloatArray:
    """Independent fields of multi-octave value noise, about ``[0, 1]`` with mean 0.5.

    Shapes:
        returns ``(size, size, fields)`` float32.
    """
    total = np.zeros((size, size, fields), dtype=np.float32)
    for octave, cells in enumerate(_OCTAVES):  # weights 1, 1/2, 1/4, 1/8; sum 1.875
        grid = rng.random((cells + 1, cells + 1, fields), dtype=np.float32)
        resized = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        total += resized.reshape(size, size, fields) * np.float32(0.5**octave / 1.875)
    return total


def _background(rng: np.random.Generator, noise: FloatArray) -> FloatArray:
    """Underwater-like grey texture: tinted noise plus soft caustic bands, lighter than the ink.

    The bluish-green water and the whiter light are converted to grey with the BT.601 weights;
    the conversion is linear, so the grey of each colour is taken before mixing.

    Shapes:
        noise: ``(H, W, 3)`` from :func:`_smooth_noise`; returns ``(H, W)`` float32.
    """
    water = float(rng.uniform((0.05, 0.35, 0.4), (0.2, 0.6, 0.7)) @ _GRAY_WEIGHTS)
    light = float(np.array((0.8, 1.0, 0.95)) @ _GRAY_WEIGHTS) * rng.uniform(0.15, 0.5)
    phase = np.float32(np.pi * rng.uniform(4.0, 8.0))
    bands = (1.0 - np.abs(np.sin(phase * noise[..., 1]))) ** 3 * noise[..., 2]
    gray = (0.45 + 0.55 * noise[..., 0]) * np.float32(water) + bands * np.float32(light)
    low = rng.uniform(_BACKGROUND_MIN, 140.0)
    high = rng.uniform(low + 50.0, 245.0)
    span = max(float(gray.max() - gray.min()), 1e-6)
    return np.asarray(low + (gray - gray.min()) * ((high - low) / span), dtype=np.float32)


def _warp_coverage(pattern: Pattern, homography: npt.NDArray[np.float64]) -> FloatArray:
    """Warp the pattern's masks at high resolution and area-average them to the output grid.

    Only the block of whole output pixels around the warped triangle is warped (speed).

    Shapes:
        returns ``(size_px, size_px, 2)`` float32 in ``[0, 1]``.
    """
    size, ss = pattern.size_px, pattern.supersample
    coverage = np.zeros((size, size, 2), dtype=np.float32)
    corners = _warp_points(homography, pattern.triangle)
    x0, y0 = np.clip(np.floor(corners.min(axis=0)) - 1, 0, size).astype(int)
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)) + 1, 0, size).astype(int)
    if x1 <= x0 or y1 <= y0:
        return coverage
    to_block = np.array([[ss, 0, -0.5 - ss * x0], [0, ss, -0.5 - ss * y0], [0, 0, 1]])
    to_source = np.array([[ss, 0, -0.5], [0, ss, -0.5], [0, 0, 1]])  # continuous -> hi-res px
    warp = to_block @ homography @ np.linalg.inv(to_source)
    block = cv2.warpPerspective(
        pattern.masks, warp, ((x1 - x0) * ss, (y1 - y0) * ss), flags=cv2.INTER_LINEAR
    )
    small = cv2.resize(block, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    coverage[y0:y1, x0:x1] = small.reshape(y1 - y0, x1 - x0, 2) * np.float32(1 / 255)
    return coverage


def render_example(pattern: Pattern, rng: np.random.Generator, config: SynthConfig) -> SynthExample:
    """Warp a pattern over a random background; the landmarks follow the same homography."""
    size = pattern.size_px
    homography = sample_homography(rng, config)
    coverage = _warp_coverage(pattern, homography)
    triangle, ellipses = coverage[..., 0], coverage[..., 1]
    noise = _smooth_noise(rng, size, 5)
    white = np.float32(rng.uniform(205.0, 240.0)) + (noise[..., 3] - 0.5) * np.float32(40.0)
    ink = np.float32(rng.uniform(5.0, _INK_MAX - 20.0)) + noise[..., 4] * np.float32(20.0)
    ink = np.minimum(ink, np.float32(_INK_MAX))
    background = _background(rng, noise[..., :3])
    if config.body_visible:
        image = background * (1 - triangle) + white * (triangle - ellipses) + ink * ellipses
    else:
        image = background * (1 - ellipses) + ink * ellipses
    if config.noise_std > 0:
        image += rng.standard_normal((size, size), dtype=np.float32) * np.float32(config.noise_std)
    image_u8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    corners = _warp_points(homography, pattern.triangle)
    landmarks = {
        name: Landmark(float(x), float(y), 2 if 0 <= x < size and 0 <= y < size else 1)
        for name, (x, y) in zip(LANDMARK_NAMES, corners, strict=True)
    }
    return SynthExample(image_u8, landmarks, homography, coverage)


def _render_chunk(root: str, config: SynthConfig, tasks: list[_Task]) -> list[dict[str, Any]]:
    """Render and write every example of some identities; returns their metadata rows."""
    rows = []
    for identity_index, identity, subsets in tasks:
        pattern = make_pattern(_rng(config.seed, 0, identity_index), config)
        for subset, count in subsets:
            for k in range(count):
                rng = _rng(config.seed, 1, identity_index, SUBSETS.index(subset), k)
                example = render_example(pattern, rng, config)
                path = f"images/{subset}/{identity}_{k}.png"
                if not cv2.imwrite(str(Path(root) / path), example.image):
                    raise OSError(f"{Path(root) / path}: could not write the image")
                rows.append(
                    {
                        "image_id": f"{subset}-{identity}-{k}",
                        "identity": identity,
                        "path": path,
                        "species": "synthetic",
                        "landmarks": format_landmarks(example.landmarks),
                        "subset": subset,
                        "width": config.size_px,
                        "height": config.size_px,
                    }
                )
    return rows


def _plan(config: SynthConfig) -> list[_Task]:
    n, total = config.identities, _total_identities(config)
    digits = max(5, len(str(total - 1)))
    train = (("train", config.train_examples),)
    evaluation = (("gallery", config.gallery_examples), ("query", config.query_examples))
    return [(i, f"id{i:0{digits}d}", train if i < n else evaluation) for i in range(total)]


def _total_identities(config: SynthConfig) -> int:
    """Training plus gallery / query identities."""
    test = config.identities if config.test_identities is None else config.test_identities
    return config.identities + test


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _run(
    root: Path,
    config: SynthConfig,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    tasks = _plan(config)
    total = sum(count for _, _, subsets in tasks for _, count in subsets)
    size = min(64, max(1, math.ceil(len(tasks) / (workers * 8))))
    chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    results: list[list[dict[str, Any]]] = [[] for _ in chunks]
    done = 0

    def finished(index: int, rows: list[dict[str, Any]]) -> None:
        nonlocal done
        results[index], done = rows, done + len(rows)
        if progress is not None:
            progress(done, total)

    if workers == 1:
        for index, chunk in enumerate(chunks):
            finished(index, _render_chunk(str(root), config, chunk))
    else:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        pool = ProcessPoolExecutor(min(workers, len(chunks)), context, _init_worker)
        try:
            futures: dict[Future[list[dict[str, Any]]], int] = {
                pool.submit(_render_chunk, str(root), config, chunk): i
                for i, chunk in enumerate(chunks)
            }
            for future in as_completed(futures):
                finished(futures[future], future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return [row for rows in results for row in rows]


def _write_tables(root: Path, config: SynthConfig, rows: list[dict[str, Any]]) -> None:
    order = {subset: i for i, subset in enumerate(SUBSETS)}
    rows = sorted(rows, key=lambda r: (order[r["subset"]], r["identity"]))  # stable: k order
    frame = pd.DataFrame(rows)
    write_metadata(frame, root / "metadata.csv")
    with atomic_path(root / "split.csv") as tmp:
        frame[["image_id", "subset"]].rename(columns={"subset": "split"}).to_csv(tmp, index=False)
    with atomic_path(root / "synth.json") as tmp:
        tmp.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")


def read_synth_config(root: str | os.PathLike[str]) -> SynthConfig:
    """The settings a generated dataset was made with (its ``synth.json``).

    A ``synth.json`` written before ``body_visible`` existed describes a dataset whose body was
    drawn, and is read so.

    Raises:
        ConfigError: the file is missing or not a valid configuration.
    """
    path = Path(root) / "synth.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the synthetic dataset's settings ({exc})") from exc
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: expected a JSON object of settings")
    saved.setdefault("body_visible", True)
    unknown = set(saved) - {f.name for f in dataclasses.fields(SynthConfig)}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return SynthConfig(**saved)


def _check_target(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a folder; choose another output folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise ConfigError(
            f"{root} exists and is not empty; allow overwriting to replace it "
            "(overwrite=True; CLI: --overwrite)"
        )


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename ``tmp`` to ``root``; an existing ``root`` is removed only once ``tmp`` is in place."""
    if not root.exists():
        tmp.replace(root)
        return
    old = root.parent / f".{root.name}.old-{secrets.token_hex(4)}"
    root.replace(old)
    try:
        tmp.replace(root)
    except BaseException:
        old.replace(root)
        raise
    shutil.rmtree(old, ignore_errors=True)


def generate_synthetic(
    out: str | os.PathLike[str],
    *,
    config: SynthConfig = SynthConfig(),
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Generate the dataset into the folder ``out``, atomically.

    Writes ``images/{train,gallery,query}/<identity>_<k>.png`` (8-bit grayscale),
    ``metadata.csv`` (with extra columns ``subset``, ``width``, ``height``), ``split.csv``
    (``image_id,split``) and ``synth.json`` (the config). Everything is written to a temporary
    sibling folder that replaces ``out`` only when complete; on failure it is removed.

    With ``workers > 1`` the work runs in a process pool (``forkserver``, else ``spawn``), so a
    script that calls this needs the usual ``if __name__ == "__main__":`` guard.

    Args:
        out: the output folder; it must not exist or be empty unless ``overwrite``.
        config: what to generate.
        workers: processes to use; ``None`` means one per CPU, ``1`` runs in this process.
        overwrite: replace a non-empty ``out`` (only once the new dataset is complete).
        progress: called as ``progress(images_done, images_total)`` as work completes.

    Raises:
        ConfigError: ``workers`` is not a positive integer, or ``out`` is a file or a non-empty
            folder without ``overwrite``.
    """
    start = time.perf_counter()
    root = Path(out)
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 1:
        raise ConfigError(f"workers must be a positive integer or None, got {workers!r}")
    _check_target(root, overwrite)
    tmp = root.parent / f".{root.name}.tmp-{secrets.token_hex(4)}"
    logger.info(
        "generating %d training and %d test synthetic identities into %s",
        config.identities,
        _total_identities(config) - config.identities,
        root,
    )
    try:
        for subset in SUBSETS:
            (tmp / "images" / subset).mkdir(parents=True)
        rows = _run(tmp, config, n_workers, progress)
        _write_tables(tmp, config, rows)
        _move_into_place(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    logger.info("wrote %d images in %.1f s", len(rows), seconds)
    return SynthResult(
        root=root,
        metadata_path=root / "metadata.csv",
        split_path=root / "split.csv",
        n_images=len(rows),
        n_identities=_total_identities(config),
        seconds=seconds,
    )
