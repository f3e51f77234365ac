import math
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile, ImageOps

from wildreid.data.images import DEFAULT_MAX_PIXELS, image_size, load_image
from wildreid.errors import ImageReadError

# --------------------------------------------------------------------------- helpers


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif


def _halves(width: int, height: int) -> Image.Image:
    """Left half black, right half white."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, width // 2 :] = 255
    return Image.fromarray(array)


def _coordinates(width: int, height: int) -> Image.Image:
    """Red = x, green = y, blue = 7: every pixel tells where it is."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[..., 0] = np.arange(width, dtype=np.uint8)[None, :]
    array[..., 1] = np.arange(height, dtype=np.uint8)[:, None]
    array[..., 2] = 7
    return Image.fromarray(array)


def _smooth(width: int, height: int) -> Image.Image:
    """Smooth content that survives JPEG and reduced-scale decoding well."""
    x = np.linspace(0.0, 1.0, width)[None, :]
    y = np.linspace(0.0, 1.0, height)[:, None]
    red = 255 * x * np.ones_like(y)
    green = 255 * y * np.ones_like(x)
    blue = 127.5 + 100 * np.sin(6 * x) * np.cos(4 * y)
    return Image.fromarray(np.rint(np.dstack([red, green, blue])).astype(np.uint8))


def _coarse(image: Image.Image, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    return np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.float64)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int64)


def _noise_jpeg(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def large_smooth() -> Image.Image:
    """A smooth 4000x3000 image (computed small and enlarged, which is much faster)."""
    return _smooth(1000, 750).resize((4000, 3000), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory: pytest.TempPathFactory, large_smooth: Image.Image) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.jpg"
    large_smooth.save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def large_rotated_jpeg(tmp_path_factory: pytest.TempPathFactory, large_smooth: Image.Image) -> Path:
    """Stored 4000x3000, displayed 3000x4000 (EXIF orientation 6)."""
    path = tmp_path_factory.mktemp("large") / "rotated.jpg"
    large_smooth.save(path, quality=90, exif=_exif(6))
    return path


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decoding fail the test."""

    def fail(self: Image.Image) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)


# --------------------------------------------------------------------------- modes


def test_rgb_round_trip_is_exact_and_detached_from_the_file(tmp_path: Path) -> None:
    original = _coordinates(64, 48)
    path = tmp_path / "rgb.png"
    original.save(path)
    loaded = load_image(path)
    path.unlink()  # the result must not need the file any more
    assert loaded.mode == "RGB"
    assert loaded.size == (64, 48)
    assert np.array_equal(_pixels(loaded), _pixels(original))
    assert getattr(loaded, "fp", None) is None


def test_grayscale_becomes_equal_rgb_channels(tmp_path: Path) -> None:
    gray = np.arange(200, dtype=np.uint8).reshape(10, 20)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    loaded = _pixels(load_image(tmp_path / "gray.png"))
    assert loaded.shape == (10, 20, 3)
    for channel in range(3):
        assert np.array_equal(loaded[..., channel], gray)


def test_palette_image_uses_palette_colours(tmp_path: Path) -> None:
    image = Image.new("P", (4, 2), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * (254 * 3))
    image.putpixel((3, 1), 1)
    image.save(tmp_path / "palette.png")
    loaded = _pixels(load_image(tmp_path / "palette.png"))
    assert loaded[0, 0].tolist() == [10, 20, 30]
    assert loaded[1, 3].tolist() == [200, 100, 50]


def test_palette_transparency_is_composited_onto_white(tmp_path: Path) -> None:
    image = Image.new("P", (4, 2), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * (254 * 3))
    image.putpixel((3, 1), 1)
    image.save(tmp_path / "palette.png", transparency=0)
    loaded = _pixels(load_image(tmp_path / "palette.png"))
    assert loaded[0, 0].tolist() == [255, 255, 255]
    assert loaded[1, 3].tolist() == [200, 100, 50]


def test_rgba_is_composited_onto_white(tmp_path: Path) -> None:
    array = np.array(
        [[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], dtype=np.uint8
    )  # transparent red, opaque blue, half-transparent black
    Image.fromarray(array).save(tmp_path / "rgba.png")
    loaded = _pixels(load_image(tmp_path / "rgba.png"))
    assert loaded[0, 0].tolist() == [255, 255, 255]
    assert loaded[0, 1].tolist() == [0, 0, 255]
    assert np.all(np.abs(loaded[0, 2] - 127) <= 1)


def test_16_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")  # really a high-bit-depth image
    loaded = _pixels(load_image(tmp_path / "deep.png"))
    assert loaded[0, :, 0].tolist() == [0, 4, 100, 255]  # clipping would give 255 for 1000
    assert np.array_equal(loaded[..., 0], loaded[..., 2])


@pytest.mark.parametrize("mode", ["I", "F"])
def test_values_outside_16_bit_range_are_stretched(tmp_path: Path, mode: str) -> None:
    values = np.array([[-1000, 0, 1000]], dtype=np.int32 if mode == "I" else np.float32)
    Image.fromarray(values).save(tmp_path / "wide.tif")
    loaded = _pixels(load_image(tmp_path / "wide.tif"))
    assert loaded[0, :, 1].tolist() == [0, 128, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    loaded = load_image(tmp_path / "cmyk.jpg")
    assert loaded.mode == "RGB"
    red, green, blue = _pixels(loaded)[8, 8]
    assert red > 200 and green < 60 and blue < 60


# --------------------------------------------------------------------------- orientation


@pytest.mark.parametrize(
    ("orientation", "top", "bottom"),
    [(6, 0, 255), (8, 255, 0)],  # 6: turned clockwise, left half on top; 8: counter-clockwise
)
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, top: int, bottom: int
) -> None:
    path = tmp_path / "turned.jpg"
    _halves(300, 200).save(path, quality=95, exif=_exif(orientation))
    loaded = _pixels(load_image(path))
    assert loaded.shape == (300, 200, 3)
    assert abs(loaded[:140].mean() - top) < 3
    assert abs(loaded[160:].mean() - bottom) < 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow_exif_transpose(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / "oriented.jpg"
    _coordinates(60, 40).save(path, quality=95, exif=_exif(orientation))
    with Image.open(path) as reference:
        expected = ImageOps.exif_transpose(reference)
    assert np.array_equal(_pixels(load_image(path)), _pixels(expected))
    assert image_size(path) == expected.size


def test_image_size_reads_only_the_header(tmp_path: Path, no_decoding: None) -> None:
    _halves(300, 200).save(tmp_path / "turned.jpg", exif=_exif(6))
    _halves(300, 200).save(tmp_path / "plain.jpg")
    _halves(300, 200).save(tmp_path / "plain.png")
    assert image_size(tmp_path / "turned.jpg") == (200, 300)
    assert image_size(str(tmp_path / "plain.jpg")) == (300, 200)
    assert image_size(tmp_path / "plain.png") == (300, 200)
    with pytest.raises(AssertionError, match="decoded"):  # the guard itself works
        load_image(tmp_path / "plain.png")


# --------------------------------------------------------------------------- bbox


def test_bbox_crops_the_right_region(tmp_path: Path) -> None:
    _coordinates(200, 150).save(tmp_path / "grid.png")
    crop = _pixels(load_image(tmp_path / "grid.png", bbox=(10, 20, 30, 40)))
    assert crop.shape == (40, 30, 3)
    assert crop[0, 0].tolist() == [10, 20, 7]
    assert crop[-1, -1].tolist() == [39, 59, 7]


@pytest.mark.parametrize(
    ("bbox", "shape", "corner"),
    [
        ((-10, -5, 50, 30), (25, 40), [0, 0]),
        ((180, 140, 50, 50), (10, 20), [180, 140]),
        ((-5, -5, 500, 500), (150, 200), [0, 0]),
    ],
)
def test_bbox_is_clipped_to_the_image(
    tmp_path: Path,
    bbox: tuple[float, float, float, float],
    shape: tuple[int, int],
    corner: list[int],
) -> None:
    _coordinates(200, 150).save(tmp_path / "grid.png")
    crop = _pixels(load_image(tmp_path / "grid.png", bbox=bbox))
    assert crop.shape[:2] == shape
    assert crop[0, 0, :2].tolist() == corner


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ((200, 0, 10, 10), r"entirely outside image .*grid\.png of 200x150"),
        ((-20, -20, 20, 20), r"entirely outside image .*200x150"),
        ((10, 10, 0, 5), r"\(10, 10, 0, 5\).*200x150.*non-positive"),
        ((10, 10, 5, -1), "non-positive width or height"),
        ((math.nan, 10, 5, 5), "non-finite"),
    ],
)
def test_bad_bbox_is_refused(
    tmp_path: Path, bbox: tuple[float, float, float, float], message: str
) -> None:
    _coordinates(200, 150).save(tmp_path / "grid.png")
    with pytest.raises(ImageReadError, match=message):
        load_image(tmp_path / "grid.png", bbox=bbox)


def test_bbox_is_in_oriented_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "turned.jpg"
    _halves(300, 200).save(path, quality=95, exif=_exif(6))  # displayed: black above white
    top = _pixels(load_image(path, bbox=(0, 0, 200, 140)))
    bottom = _pixels(load_image(path, bbox=(0, 160, 200, 140)))
    assert top.shape == bottom.shape == (140, 200, 3)
    assert top.mean() < 3
    assert bottom.mean() > 252
    with pytest.raises(ImageReadError, match=r"outside.*200x300"):
        load_image(path, bbox=(250, 0, 10, 10))  # inside the stored 300x200, not the displayed


# --------------------------------------------------------------------------- draft decoding


def test_draft_decodes_large_jpeg_at_reduced_size(large_jpeg: Path) -> None:
    reduced = load_image(large_jpeg, target_size=224)
    assert reduced.size == (500, 375)  # 1/8 scale: the shorter side is still >= 224
    full = load_image(large_jpeg)
    assert full.size == (4000, 3000)
    assert np.abs(_coarse(reduced) - _coarse(full)).mean() < 2


def test_draft_keeps_a_bbox_crop_at_least_target_size(large_jpeg: Path) -> None:
    bbox = (2000.0, 1500.0, 2000.0, 1500.0)  # bottom-right quarter
    reduced = load_image(large_jpeg, bbox=bbox, target_size=224)
    assert reduced.size == (500, 375)  # 1/4 scale: 1/8 would leave 187 rows
    full = load_image(large_jpeg, bbox=bbox)
    assert full.size == (2000, 1500)
    assert np.abs(_coarse(reduced) - _coarse(full)).mean() < 2


def test_draft_with_orientation_and_bbox(large_rotated_jpeg: Path) -> None:
    bbox = (100.0, 0.0, 1500.0, 4000.0)  # displayed image is 3000x4000
    reduced = load_image(large_rotated_jpeg, bbox=bbox, target_size=(300, 150))
    assert reduced.size == (375, 1000)  # 1/4 (1/8 if width, height were swapped)
    with Image.open(large_rotated_jpeg) as stored:
        expected = ImageOps.exif_transpose(stored).crop((100, 0, 1600, 4000))
    assert np.abs(_coarse(reduced, (30, 80)) - _coarse(expected, (30, 80))).mean() < 2


@pytest.mark.parametrize(
    ("bbox", "target"),
    [
        (None, 100),
        (None, (125, 40)),
        ((0.5, 0.5, 250.3, 97.2), 31),
        ((3, 7, 801, 401), (100, 50)),
        ((1000, 700, 400, 400), 20),  # clipped to 1x77
        ((123.4, 321.9, 57.7, 33.3), 8),
        ((10, 10, 300, 300), 1000),  # larger than the crop: full resolution
    ],
)
def test_draft_result_is_never_smaller_than_needed(
    tmp_path: Path,
    bbox: tuple[float, float, float, float] | None,
    target: int | tuple[int, int],
) -> None:
    path = tmp_path / "odd.jpg"
    _smooth(1001, 777).save(path, quality=90)
    full = load_image(path, bbox=bbox)
    reduced = load_image(path, bbox=bbox, target_size=target)
    wanted = (target, target) if isinstance(target, int) else target
    for axis in range(2):
        assert min(wanted[axis], full.size[axis]) <= reduced.size[axis] <= full.size[axis]
    if min(full.size[axis] // wanted[axis] for axis in range(2)) >= 2:
        assert reduced.size[0] < full.size[0]  # a reduction was possible and used


def test_target_size_larger_than_image_and_non_jpeg_decode_fully(
    tmp_path: Path, large_jpeg: Path
) -> None:
    assert load_image(large_jpeg, target_size=5000).size == (4000, 3000)
    _smooth(1000, 800).save(tmp_path / "smooth.png")
    assert load_image(tmp_path / "smooth.png", target_size=100).size == (1000, 800)


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"nope\.jpg does not exist"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="does not exist"):
        image_size(tmp_path / "nope.jpg")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_device_is_not_a_regular_file() -> None:
    with pytest.raises(ImageReadError, match="/dev/null is not a regular file"):
        load_image("/dev/null")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg is empty \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "page.jpg").write_text("<html>404 not found</html>\n" * 20)
    with pytest.raises(ImageReadError, match=r"page\.jpg is not in an image format"):
        load_image(tmp_path / "page.jpg")


@pytest.mark.parametrize("target", [None, 50])
def test_truncated_jpeg(tmp_path: Path, target: int | None) -> None:
    path = _noise_jpeg(tmp_path / "cut.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg is truncated"):
        load_image(path, target_size=target)


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (100, 100), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png is truncated"):
        load_image(path)


def test_corrupt_png_data(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (100, 100), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(200)  # zlib detects this; JPEG decoders often would not
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"bad\.png is corrupt"):
        load_image(path)


def test_corrupt_jpeg_header(tmp_path: Path) -> None:
    path = _noise_jpeg(tmp_path / "bad.jpg")
    data = bytearray(path.read_bytes())
    data[20:70] = bytes(50)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"bad\.jpg is corrupt"):
        load_image(path)


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)

    def deny(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", deny)  # chmod does not stop root, so simulate it
    with pytest.raises(ImageReadError, match=r"secret\.png cannot be read: permission denied"):
        load_image(path)


def test_image_over_max_pixels_is_refused_before_decoding(
    tmp_path: Path, no_decoding: None
) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 2000)).save(path)
    message = r"big\.png is 2000x2000 = 4,000,000 pixels.*max_pixels=1,000,000.*larger max_pixels"
    with pytest.raises(ImageReadError, match=message):
        load_image(path, max_pixels=1_000_000)
    with pytest.raises(ImageReadError, match=message):
        image_size(path, max_pixels=1_000_000)
    assert image_size(path, max_pixels=4_000_000) == (2000, 2000)
    with pytest.raises(AssertionError, match="decoded"):  # the guard itself works
        load_image(path, max_pixels=4_000_000)


@pytest.mark.parametrize("size", [(120, 100), (300, 300)])  # over the warning, over the error
def test_pillow_bomb_limit_is_an_error_not_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", size).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ImageReadError, match=r"bomb\.png .*decompression bomb.*MAX_IMAGE_PIXELS"):
        load_image(path)
    assert Image.MAX_IMAGE_PIXELS == 10_000  # not changed by the loader


def test_default_limit_is_pillows_default() -> None:
    assert DEFAULT_MAX_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # PIL.Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_size": 0}, "target_size must be a positive"),
        ({"target_size": (10, -1)}, "target_size must be a positive"),
        ({"max_pixels": 0}, "max_pixels must be positive"),
        ({"bbox": (1, 2, 3)}, "bbox must be four numbers"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=message):
        load_image(tmp_path / "small.png", **kwargs)  # type: ignore[arg-type]


def test_loader_leaves_pillow_globals_alone(tmp_path: Path) -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    path = _noise_jpeg(tmp_path / "x.jpg")
    load_image(path, target_size=10)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
