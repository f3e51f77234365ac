"""Tests of the synthetic landmark dataset generator."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wildreid.data import synthetic
from wildreid.data.schema import parse_landmarks, read_metadata, validate_metadata
from wildreid.data.synthetic import (
    LANDMARK_NAMES,
    SynthConfig,
    SynthResult,
    generate_synthetic,
    make_pattern,
    read_synth_config,
    render_example,
)
from wildreid.errors import ConfigError

# 9 identities: 18 identity tasks, chunked differently for 1 and 2 workers
SMALL = SynthConfig(
    identities=9, size_px=64, train_examples=2, gallery_examples=2, query_examples=3, seed=7
)
COUNTS = {"train": 18, "gallery": 18, "query": 27}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _examples(config: SynthConfig, n: int) -> list[tuple[synthetic.Pattern, Any]]:
    """``n`` (pattern, example) pairs, each from its own identity."""
    out = []
    for i in range(n):
        pattern = make_pattern(np.random.default_rng([config.seed, i]), config)
        example = render_example(pattern, np.random.default_rng([config.seed, i, 1]), config)
        out.append((pattern, example))
    return out


@pytest.fixture(scope="module")
def generated(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[SynthResult, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []
    out = tmp_path_factory.mktemp("synth") / "out"
    result = generate_synthetic(
        out, config=SMALL, workers=1, progress=lambda done, total: calls.append((done, total))
    )
    return result, calls


@pytest.fixture(scope="module")
def dataset(generated: tuple[SynthResult, list[tuple[int, int]]]) -> SynthResult:
    return generated[0]


def test_layout_and_counts(dataset: SynthResult) -> None:
    root = dataset.root
    assert sorted(p.name for p in root.iterdir()) == [
        "images",
        "metadata.csv",
        "split.csv",
        "synth.json",
    ]
    for subset, count in COUNTS.items():
        files = sorted((root / "images" / subset).iterdir())
        assert len(files) == count, subset
        assert all(p.suffix == ".png" for p in files)
    assert dataset.n_images == sum(COUNTS.values())
    assert dataset.n_identities == 18
    assert dataset.metadata_path == root / "metadata.csv"
    assert dataset.split_path == root / "split.csv"
    assert dataset.seconds > 0


def test_identities_per_subset(dataset: SynthResult) -> None:
    frame = read_metadata(dataset.metadata_path)
    ids = {s: set(frame.loc[frame["subset"] == s, "identity"]) for s in COUNTS}
    assert ids["train"] == {f"id{i:05d}" for i in range(9)}
    assert ids["gallery"] == ids["query"] == {f"id{i:05d}" for i in range(9, 18)}
    assert not ids["train"] & ids["gallery"]
    assert frame.groupby("subset").size().to_dict() == COUNTS
    per_identity = frame.groupby(["subset", "identity"]).size()
    assert set(per_identity["query"]) == {3}
    assert set(per_identity["train"]) == set(per_identity["gallery"]) == {2}
    assert frame.loc[0, "path"] == "images/train/id00000_0.png"


def test_test_identities_count_apart_from_training_ones(tmp_path: Path) -> None:
    config = dataclasses.replace(SMALL, identities=3, test_identities=2)
    result = generate_synthetic(tmp_path / "out", config=config, workers=1)
    frame = read_metadata(result.metadata_path)
    ids = {s: set(frame.loc[frame["subset"] == s, "identity"]) for s in COUNTS}
    assert ids["train"] == {"id00000", "id00001", "id00002"}
    assert ids["gallery"] == ids["query"] == {"id00003", "id00004"}
    assert result.n_identities == 5
    assert result.n_images == 3 * 2 + 2 * (2 + 3)


def test_images_are_8bit_grayscale(dataset: SynthResult) -> None:
    frame = read_metadata(dataset.metadata_path)
    for path in frame["path"]:
        with Image.open(dataset.root / path) as image:
            assert image.mode == "L"
            assert image.size == (64, 64)
    assert set(frame["width"]) == set(frame["height"]) == {"64"}


def test_metadata_split_and_config_files(dataset: SynthResult) -> None:
    frame = read_metadata(dataset.metadata_path)
    assert validate_metadata(frame, root=dataset.root) == []
    assert list(frame.columns[:3]) == ["image_id", "identity", "path"]
    assert set(frame["species"]) == {"synthetic"}
    split = pd.read_csv(dataset.split_path, dtype=str)
    assert list(split.columns) == ["image_id", "split"]
    assert split["image_id"].tolist() == frame["image_id"].tolist()
    assert split["split"].tolist() == frame["subset"].tolist()
    saved = json.loads((dataset.root / "synth.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(dataclasses.asdict(SMALL)))
    assert SynthConfig(**saved) == SMALL
    assert read_synth_config(dataset.root) == SMALL


def test_read_synth_config_reads_old_files_as_drawn_bodies_and_names_bad_ones(
    tmp_path: Path,
) -> None:
    old = dataclasses.asdict(SMALL)
    del old["body_visible"]  # written before the field existed, when the body was drawn
    (tmp_path / "synth.json").write_text(json.dumps(old), encoding="utf-8")
    assert read_synth_config(tmp_path) == dataclasses.replace(SMALL, body_visible=True)
    (tmp_path / "synth.json").write_text(json.dumps({**old, "colour": 1}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown setting.*colour"):
        read_synth_config(tmp_path)
    (tmp_path / "synth.json").write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"synth\.json"):
        read_synth_config(tmp_path)
    with pytest.raises(ConfigError, match=r"synth\.json"):
        read_synth_config(tmp_path / "missing")


def test_progress_reports_every_image(
    generated: tuple[SynthResult, list[tuple[int, int]]],
) -> None:
    result, calls = generated
    assert calls, "progress was never called"
    assert calls[-1] == (result.n_images, result.n_images)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})


def test_same_seed_gives_identical_files(dataset: SynthResult, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path / "again", config=SMALL, workers=1)
    assert _files(again.root) == _files(dataset.root)


def test_worker_processes_give_identical_files(dataset: SynthResult, tmp_path: Path) -> None:
    pooled = generate_synthetic(tmp_path / "pooled", config=SMALL, workers=2)
    assert _files(pooled.root) == _files(dataset.root)


def test_other_seed_gives_other_images(dataset: SynthResult, tmp_path: Path) -> None:
    other = generate_synthetic(
        tmp_path / "other", config=dataclasses.replace(SMALL, seed=8), workers=1
    )
    ours, theirs = _files(dataset.root), _files(other.root)
    pngs = [name for name in ours if name.endswith(".png")]
    assert sorted(pngs) == sorted(n for n in theirs if n.endswith(".png"))
    assert all(ours[name] != theirs[name] for name in pngs)


def test_rows_have_named_landmarks_visible_inside_image(dataset: SynthResult) -> None:
    frame = read_metadata(dataset.metadata_path)
    for cell in frame["landmarks"]:
        landmarks = parse_landmarks(cell)
        assert tuple(landmarks) == LANDMARK_NAMES
        for point in landmarks.values():
            inside = 0 <= point.x < 64 and 0 <= point.y < 64
            assert point.visibility == (2 if inside else 1)


def test_visibility_is_one_exactly_outside_the_image() -> None:
    wild = dataclasses.replace(SMALL, scale_range=(1.0, 1.4), max_shift_frac=0.3)
    seen = set()
    for _, example in _examples(wild, 40):
        for point in example.landmarks.values():
            inside = 0 <= point.x < 64 and 0 <= point.y < 64
            assert point.visibility == (2 if inside else 1), point
            seen.add(point.visibility)
    assert seen == {1, 2}


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of the cross product of 2-D vectors (broadcasting)."""
    return np.asarray(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0])


def _signed_distances(corners: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance of each point inside each edge of the triangle (negative outside).

    Shapes:
        corners: (3, 2); points: (N, 2); returns (N, 3).
    """
    orientation = np.sign(_cross(corners[1] - corners[0], corners[2] - corners[0]))
    out = []
    for a, b in ((0, 1), (1, 2), (2, 0)):
        edge = corners[b] - corners[a]
        cross = _cross(edge, points - corners[a])
        out.append(orientation * cross / np.linalg.norm(edge))
    return np.stack(out, axis=1)


def test_landmarks_are_the_corners_of_the_drawn_pattern() -> None:
    config = dataclasses.replace(SMALL, size_px=96, noise_std=0.0)
    checked = 0
    for _, example in _examples(config, 30):
        corners = np.array([[p.x, p.y] for p in example.landmarks.values()])
        rows, cols = np.nonzero(example.image < 70)  # ink only: the background is >= 95
        assert len(rows) > 20
        centres = np.column_stack([cols, rows]) + 0.5
        assert _signed_distances(corners, centres).min() > -1.0  # every ellipse in the triangle
        if all(p.visibility == 2 for p in example.landmarks.values()):
            area = abs(_cross(corners[1] - corners[0], corners[2] - corners[0])) / 2
            drawn = float(example.coverage[..., 0].sum())
            assert drawn == pytest.approx(area, rel=0.05)  # nor is the triangle too large
            checked += 1
    assert checked >= 20


def _ink_in_canonical_frame(root: Path, path: str, cell: str) -> np.ndarray:
    """Dark pixels of an image mapped by the affine map of its landmarks onto a fixed triangle."""
    corners = np.float32([[p.x, p.y] for p in parse_landmarks(cell).values()])
    target = np.float32([[64, 8], [8, 120], [120, 120]])
    image = cv2.imread(str(root / path), cv2.IMREAD_GRAYSCALE)
    affine = cv2.getAffineTransform(corners, target)
    return np.asarray(cv2.warpAffine(image, affine, (128, 128), borderValue=255) < 70)


def test_query_patterns_match_their_gallery_identity(dataset: SynthResult) -> None:
    """Aligned by their landmarks, a query's ellipses overlap most with its own identity's."""
    frame = read_metadata(dataset.metadata_path)
    ink = {
        row.image_id: _ink_in_canonical_frame(dataset.root, row.path, row.landmarks)
        for row in frame.itertuples()
    }
    gallery = frame[frame["subset"] == "gallery"]
    hits = []
    for query in frame[frame["subset"] == "query"].itertuples():
        overlaps = [
            (ink[query.image_id] & ink[g]).sum() / (ink[query.image_id] | ink[g]).sum()
            for g in gallery["image_id"]
        ]
        hits.append(gallery["identity"].iloc[int(np.argmax(overlaps))] == query.identity)
    assert np.mean(hits) >= 0.9


def test_background_is_lighter_than_the_ellipses() -> None:
    config = dataclasses.replace(SMALL, noise_std=0.0)
    for _, example in _examples(config, 20):
        triangle, ellipses = example.coverage[..., 0], example.coverage[..., 1]
        ink = example.image[ellipses > 0.99]
        background = example.image[triangle < 0.01]
        assert ink.size > 0 and background.size > 0
        assert ink.mean() < np.percentile(background, 5)
        assert ink.max() < background.min()


def _edge_contrast(example: Any) -> float:
    """Mean gradient on the triangle's outline away from the ellipses, over the background's."""
    triangle, ellipses = example.coverage[..., 0], example.coverage[..., 1]
    image = example.image.astype(np.float32)
    gradient = np.hypot(cv2.Sobel(image, cv2.CV_32F, 1, 0), cv2.Sobel(image, cv2.CV_32F, 0, 1))
    near_ink = cv2.dilate((ellipses > 0.01).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    outline = (triangle > 0.2) & (triangle < 0.8) & ~near_ink
    background = (triangle < 0.01) & ~near_ink
    return float(gradient[outline].mean() / gradient[background].mean())


def test_the_body_is_hidden_unless_asked_for() -> None:
    """The paper's images carry no mark of the landmarks: the triangle's outline is no sharper
    than the background texture, while ``body_visible`` draws it as a strong edge."""
    hidden = dataclasses.replace(SMALL, noise_std=0.0, size_px=128)
    visible = dataclasses.replace(hidden, body_visible=True)
    assert SynthConfig().body_visible is False
    hidden_contrast = [_edge_contrast(e) for _, e in _examples(hidden, 10)]
    visible_contrast = [_edge_contrast(e) for _, e in _examples(visible, 10)]
    assert np.median(hidden_contrast) < 1.5
    assert np.median(visible_contrast) > 3.0
    for (_, h), (_, v) in zip(_examples(hidden, 3), _examples(visible, 3), strict=True):
        outside = h.coverage[..., 0] < 0.001
        np.testing.assert_array_equal(h.image[outside], v.image[outside])  # same draws
        np.testing.assert_array_equal(h.coverage, v.coverage)


def test_noise_std_adds_noise() -> None:
    pattern = make_pattern(np.random.default_rng(0), SMALL)
    clean = render_example(
        pattern, np.random.default_rng(1), dataclasses.replace(SMALL, noise_std=0)
    )
    noisy = render_example(pattern, np.random.default_rng(1), SMALL)
    residual = noisy.image.astype(float) - clean.image.astype(float)
    assert 3.0 < residual.std() < 9.0  # SMALL.noise_std is 6 grey levels, clipped at 0 and 255


def test_existing_folder_is_refused_and_left_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="not empty"):
        generate_synthetic(out, config=SMALL, workers=1)
    assert _files(out) == {"keep.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a folder"):
        generate_synthetic(out, config=SMALL, workers=1, overwrite=True)
    assert out.read_text(encoding="utf-8") == "x"


def test_overwrite_replaces_a_folder_and_an_empty_folder_is_used(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    generate_synthetic(out, config=SMALL, workers=1)
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    generate_synthetic(out, config=SMALL, workers=1, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert (out / "metadata.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("existing", [False, True])
def test_failure_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("mine", encoding="utf-8")
    real = synthetic.render_example
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> synthetic.SynthExample:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_example", failing)
    with pytest.raises(RuntimeError, match="boom"):
        generate_synthetic(out, config=SMALL, workers=1, overwrite=True)
    assert calls == 6
    if existing:
        assert _files(out) == {"keep.txt": b"mine"}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    else:
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("identities", 0),
        ("identities", 2.5),
        ("identities", True),
        ("size_px", 31),
        ("train_examples", 0),
        ("gallery_examples", 0),
        ("query_examples", 0),
        ("seed", -1),
        ("test_identities", 0),
        ("test_identities", 2.5),
        ("noise_std", -1.0),
        ("noise_std", math.nan),
        ("ellipses", (0, 3)),
        ("ellipses", (8, 4)),
        ("ellipses", (2.5, 4)),
        ("ellipses", 5),
        ("max_rotation_deg", 181.0),
        ("max_tilt_deg", 90.0),
        ("scale_range", (0.0, 1.0)),
        ("max_shift_frac", 0.9),
        ("supersample", 0),
    ],
)
def test_invalid_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        SynthConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [0, -1, 1.5])
def test_invalid_workers(tmp_path: Path, workers: Any) -> None:
    with pytest.raises(ConfigError, match="workers"):
        generate_synthetic(tmp_path / "out", config=SMALL, workers=workers)
    assert list(tmp_path.iterdir()) == []
