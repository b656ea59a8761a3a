"""Image loading and scenic's two preprocessings (notebook and evaluator) against outputs of
scikit-image and TensorFlow themselves (tests/data/scenic_preprocessing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owlvit_cli.errors import BadInputError
from owlvit_cli.scenic.preprocess import (
    PAD_VALUE,
    PIPELINES,
    fitted_size,
    load_image,
    pad_to_square,
    preprocess,
    resize_padded_antialiased,
    scenic_preprocess,
)
from tests.helpers import DATA, REFERENCE, REFERENCE_NAMES

REFERENCES = tuple(sorted(REFERENCE_NAMES))
PREPROCESSING = DATA / "scenic_preprocessing" / "scenic_preprocessing.npz"
PHOTOS = ("astronaut", "chelsea", "coffee", "coffee_tall", "rocket")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    with np.load(PREPROCESSING, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("size", [96, 240])
@pytest.mark.parametrize("photo", PHOTOS)
def test_pipelines_match_tensorflow_and_skimage(photos, photo, size, pipeline):
    """Every photograph and size in the reference, each pipeline within 1e-5 of what
    TensorFlow (evaluator) and scikit-image (notebook) computed."""
    ours = preprocess(photos[f"{photo}__image"], size, pipeline)
    expected = photos[f"{photo}__{pipeline}_{size}"]
    assert ours.dtype == np.float32 and ours.shape == expected.shape == (size, size, 3)
    assert np.abs(ours - expected).max() <= 1e-5


def test_pipelines_differ_where_scenic_says(photos):
    """The two are genuinely different: gray vs black padding, smoothed vs aliased pixels."""
    image = photos["coffee__image"]  # 400×600: rows 64.. of 96 are padding
    notebook, evaluator = (preprocess(image, 96, p) for p in PIPELINES)
    assert np.all(evaluator[64:] == 0.0) and np.allclose(notebook[66:], 0.5)
    assert np.abs(notebook[:60] - evaluator[:60]).max() > 0.3


def test_evaluator_size_rounds_in_float32():
    """512 / (512 / 240) is 239.99998 in TensorFlow's float32: 239 rows, then padding."""
    assert fitted_size(512, 512, 240) == (239, 239)
    assert fitted_size(300, 451, 96) == (63, 96) and fitted_size(451, 300, 96) == (96, 63)
    assert fitted_size(10, 10000, 768) == (1, 768)  # never an empty resize


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("shape", [(10000, 10), (10, 10000)], ids=["tall", "wide"])
def test_extreme_aspect_ratio_is_never_padded_to_the_square(pipeline, shape):
    """A 10000×10 image costs memory in the model's input size: the 10000×10000 padded square
    alone would be 1.2 GB of float32."""
    import tracemalloc

    size = 768
    image = np.random.default_rng(7).integers(0, 256, (*shape, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        ours = preprocess(image, size, pipeline)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ours.shape == (size, size, 3)
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    pad = 0.0 if pipeline == "evaluator" else PAD_VALUE
    far = ours[size // 2 :, size // 2 :]  # deep in the padding, out of the filter's reach
    assert np.all(far == np.float32(pad))


@pytest.mark.parametrize("shape", [(1200, 3), (3, 1200), (900, 700), (5, 7)])
def test_notebook_equals_literal_pad_then_resize(shape):
    """The padding's share near the border (what the Gaussian pulls in) is exact: the result
    equals building the square and resizing it."""
    size = 64
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert np.abs(preprocess(image, size, "notebook") - _pad_then_resize(image, size)).max() <= 1e-6


def _pad_then_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The notebook pipeline literally: build the square, then the scipy calls skimage makes."""
    from scipy import ndimage

    float_image = image.astype(np.float32) / np.float32(255.0)
    padded = pad_to_square(float_image, PAD_VALUE)
    factor = padded.shape[0] / size
    sigma = max(0.0, (factor - 1.0) / 2.0)
    filtered = ndimage.gaussian_filter(padded, (sigma, sigma, 0), mode="mirror")
    resized = ndimage.zoom(filtered, (1 / factor, 1 / factor, 1), order=1, mode="mirror",
                           grid_mode=True)  # fmt: skip
    return np.clip(resized, float_image.min(), max(float_image.max(), PAD_VALUE))


@pytest.mark.parametrize("name", REFERENCES)
def test_matches_scenic_reference(name: str) -> None:
    with np.load(REFERENCE / f"ref_{name}_io.npz", allow_pickle=False) as data:
        expected = data["images_nhwc"]
        raws = [data["raw_image_0"], data["raw_image_1"]]
    size = expected.shape[1]
    for raw, target in zip(raws, expected, strict=True):
        ours = scenic_preprocess(raw, size)
        assert ours.dtype == np.float32 and ours.shape == (size, size, 3)
        # Same scipy calls as skimage: exact in practice; 1e-6 leaves room for scipy versions.
        assert np.max(np.abs(ours - target)) <= 1e-6


@pytest.mark.parametrize(
    ("shape", "size"),
    [((70, 50), 128), ((120, 160), 64), ((33, 97), 80), ((100, 100), 100), ((7, 5), 40)],
)
def test_resize_equals_skimage(shape: tuple[int, int], size: int) -> None:
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(sum(shape))
    image = rng.uniform(0, 1, (*shape, 3)).astype(np.float32)
    padded = pad_to_square(image)
    expected = transform.resize(padded, (size, size), anti_aliasing=True)
    ours = resize_padded_antialiased(image, size, PAD_VALUE)
    assert ours.dtype == expected.dtype == np.float32
    # skimage rounds to float32 between its passes; we do not.
    assert np.abs(ours - expected).max() <= 1e-6


def test_pad_bottom_right_with_gray() -> None:
    image = np.zeros((2, 4, 3), np.float32)
    padded = pad_to_square(image)
    assert padded.shape == (4, 4, 3)
    assert np.all(padded[:2] == 0) and np.all(padded[2:] == PAD_VALUE)
    tall = pad_to_square(np.ones((5, 2, 3), np.float32))
    assert np.all(tall[:, :2] == 1) and np.all(tall[:, 2:] == PAD_VALUE)


def test_padding_survives_resize() -> None:
    image = np.full((10, 40, 3), 255, np.uint8)
    out = scenic_preprocess(image, 40)
    assert np.allclose(out[:8], 1.0) and np.allclose(out[12:], PAD_VALUE)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_rejects_non_uint8_and_non_rgb() -> None:
    with pytest.raises(ValueError, match="uint8"):
        scenic_preprocess(np.zeros((4, 4, 3), np.float32), 8)
    with pytest.raises(ValueError, match="RGB"):
        scenic_preprocess(np.zeros((4, 4), np.uint8), 8)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK", "1", "LA"])
def test_load_image_any_mode_gives_rgb(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8))
    path = tmp_path / f"img_{mode}.{'tiff' if mode == 'CMYK' else 'png'}"
    rgb.convert(mode).save(path)
    loaded = load_image(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (6, 9, 3)
    if mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(loaded, np.asarray(rgb))


def test_load_image_sixteen_bit_is_rescaled(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded[0, :, 0], [0, 100, 255])
    assert np.all(loaded[..., 0] == loaded[..., 2])


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_dark_sixteen_bit_image_is_scaled_by_its_bit_depth(tmp_path: Path, suffix: str) -> None:
    """A 16-bit image whose values happen to stay under 256 is nearly black, not 8-bit."""
    values = np.array([[0, 100, 255, 200]], np.uint16)
    path = tmp_path / f"dark{suffix}"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded[0, :, 1], [0, 0, 1, 1])


def test_load_image_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (12, 8), (200, 30, 60)).save(path, quality=95)
    loaded = load_image(path)
    assert loaded.shape == (8, 12, 3)
    assert np.abs(loaded.astype(int) - [200, 30, 60]).max() <= 3


def _one_line_error(path: Path, match: str) -> None:
    with pytest.raises(BadInputError, match=match) as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_load_image_errors(tmp_path: Path) -> None:
    _one_line_error(tmp_path / "missing.png", "no such file")
    _one_line_error(tmp_path, "directory")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    _one_line_error(text, "not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _one_line_error(empty, "not an image")
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    _one_line_error(truncated, "cannot decode|not an image")


# --- a photo as users take it: the fast paths against the straightforward computation --------


@pytest.fixture(scope="module")
def large_photo() -> np.ndarray:
    """4000×3000 (landscape): the notebook's pass over it goes band by band, transposed."""
    return np.random.default_rng(4000).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [768, 1008])
@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
def test_large_photo_notebook_equals_one_product_per_axis(large_photo, orientation, size):
    """Bands, their transposition and the intermediate's layout change no bit: the same sums
    of the same products as one float32 product over the whole photo, then one float64."""
    image = large_photo if orientation == "landscape" else large_photo.transpose(1, 0, 2)
    expected = _notebook_whole_photo(image, size)
    assert np.array_equal(preprocess(image, size, "notebook"), expected)


@pytest.mark.parametrize("size", [768, 1008])
@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
def test_large_photo_evaluator_equals_four_gathers_per_output(large_photo, orientation, size):
    image = large_photo if orientation == "landscape" else large_photo.transpose(1, 0, 2)
    height, width = fitted_size(*image.shape[:2], size)
    ours = preprocess(image, size, "evaluator")
    assert np.array_equal(ours[:height, :width], _bilinear_tf_gathers(image, height, width))
    assert np.all(ours[height:] == 0.0) and np.all(ours[:, width:] == 0.0)


def _notebook_whole_photo(image: np.ndarray, size: int) -> np.ndarray:
    """The notebook pipeline computed plainly: the whole photo as float32, one sparse product
    along the longer axis, one float64 product along the other, the padding's share added."""
    from owlvit_cli.scenic.preprocess import _axis_operator, _row_sums

    height, width = image.shape[:2]
    side = max(height, width)
    long_axis = 0 if height >= width else 1
    ops = [_axis_operator(side, size, n) for n in (height, width)]
    moved = np.moveaxis(image.astype(np.float32) / np.float32(255.0), long_axis, 0)
    first = ops[long_axis].astype(np.float32) @ moved.reshape(moved.shape[0], -1)
    first = np.moveaxis(first.reshape(size, *moved.shape[1:]), 1, 0).astype(np.float64)
    second = (ops[1 - long_axis] @ first.reshape(first.shape[0], -1)).reshape(size, size, 3)
    result = second.transpose(1, 0, 2) if long_axis == 0 else second
    full_y, part_y = _row_sums(side, size, height)
    full_x, part_x = _row_sums(side, size, width)
    result += PAD_VALUE * (np.outer(full_y, full_x) - np.outer(part_y, part_x))[..., None]
    low, high = image.min() / np.float32(255.0), image.max() / np.float32(255.0)
    return np.clip(result, min(low, PAD_VALUE), max(high, PAD_VALUE)).astype(np.float32)


def _bilinear_tf_gathers(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """TensorFlow's half-pixel bilinear resize, each corner gathered per output pixel."""
    (y0, y1, fy), (x0, x1, fx) = (
        _half_pixel_taps(n_in, n_out)
        for n_in, n_out in zip(image.shape[:2], (height, width), strict=True)
    )

    def corner(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return image[rows[:, None], cols[None, :]].astype(np.float32) / np.float32(255.0)

    fx = fx[None, :, None]
    top = corner(y0, x0) + (corner(y0, x1) - corner(y0, x0)) * fx
    bottom = corner(y1, x0) + (corner(y1, x1) - corner(y1, x0)) * fx
    return (top + (bottom - top) * fy[:, None, None]).astype(np.float32)


def _half_pixel_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = np.float32(n_in) / np.float32(n_out)
    coords = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(coords)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(coords).astype(np.int64), n_in - 1)
    return lower, upper, (coords - floor).astype(np.float32)
