"""scenic's inference-time image preprocessing, without scikit-image at runtime (spec §5).

scenic's notebooks pad the image to a square with gray (0.5) on the bottom and right, then
call `skimage.transform.resize(..., anti_aliasing=True)`. That resize is a Gaussian prefilter
followed by a bilinear `scipy.ndimage.zoom`, both in scipy; calling the same scipy functions
with the same arguments reproduces it exactly, so we do that rather than reimplementing the
interpolation. The mapping of skimage's arguments, for the record:

* skimage mode 'reflect' is numpy's reflect, which scipy.ndimage calls 'mirror';
* sigma per axis = max(0, (in/out - 1) / 2), so upsampling is not smoothed;
* zoom with `grid_mode=True`: pixel centres at (i + 0.5) * in/out - 0.5;
* the result is clipped to the input's value range (skimage's `clip=True`).

Boxes predicted on the result are relative to the padded square: multiply by max(h, w) to get
pixels of the original image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from owlvit_cli.errors import BadInputError

PAD_VALUE = 0.5
# CLIP's per-channel normalisation: scenic applies it inside its model, transformers before it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 RGB [H, W, 3], or raise `BadInputError` in one line.

    No EXIF rotation is applied: scenic's notebooks read pixels as stored, and boxes must
    refer to the same pixels. Animated/multi-page files give their first frame. Alpha is
    dropped (not composited), as Pillow's RGB conversion does.
    """
    file_path = Path(path)
    if not file_path.exists():
        raise BadInputError(f"{file_path}: no such file")
    if file_path.is_dir():
        raise BadInputError(f"{file_path} is a directory, not an image")
    try:
        with Image.open(file_path) as image:
            image.load()
            return _to_rgb(image)
    except UnidentifiedImageError as exc:
        raise BadInputError(f"{file_path}: not an image file Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"{file_path}: image too large ({exc})") from exc
    except PermissionError as exc:
        raise BadInputError(f"{file_path}: permission denied") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated or corrupt data surfaces as OSError (or SyntaxError for some plugins).
        raise BadInputError(f"{file_path}: cannot decode image ({exc})") from exc


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in SIXTEEN_BIT_MODES:
        # Pillow's own conversion clips 16-bit values at 255 instead of rescaling.
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def pad_to_square(image: np.ndarray, value: float = PAD_VALUE) -> np.ndarray:
    """Pad bottom and right only, so the top-left origin (and box coordinates) stay put."""
    height, width = image.shape[:2]
    side = max(height, width)
    padding = ((0, side - height), (0, side - width)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, padding, constant_values=value)


def resize_antialiased(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`skimage.transform.resize(image, (height, width), anti_aliasing=True)` for float images.

    Channels (any trailing axes) are left alone. float32 in, float32 out, like skimage.
    """
    from scipy import ndimage  # ~0.2 s to import: only where an image is resized

    in_shape = np.asarray(image.shape, dtype=np.float64)
    out_shape = (height, width, *image.shape[2:])
    factors = in_shape / np.asarray(out_shape, dtype=np.float64)
    sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
    filtered = ndimage.gaussian_filter(image, sigma, mode="mirror", cval=0.0)
    resized = ndimage.zoom(
        filtered, 1.0 / factors, order=1, mode="mirror", cval=0.0, grid_mode=True
    )
    return np.clip(resized, image.min(), image.max())


def scenic_preprocess(image_uint8: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB [H, W, 3] → the model's float32 [size, size, 3] input in [0, 1]."""
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image; got {image.dtype}")
    if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
        raise ValueError(f"expected an RGB image [H, W, 3]; got shape {list(image.shape)}")
    padded = pad_to_square(image.astype(np.float32) / np.float32(255.0))
    return resize_antialiased(padded, size, size)
