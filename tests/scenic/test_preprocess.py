"""Image loading and scenic's pad-gray-resize preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owlvit_cli.errors import BadInputError
from owlvit_cli.scenic.preprocess import (
    PAD_VALUE,
    load_image,
    pad_to_square,
    resize_antialiased,
    scenic_preprocess,
)
from tests.helpers import REFERENCE, REFERENCE_NAMES

REFERENCES = tuple(sorted(REFERENCE_NAMES))


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
    ours = resize_antialiased(padded, size, size)
    assert ours.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)


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
