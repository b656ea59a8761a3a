"""scenic's two image preprocessings, exactly, without TensorFlow or scikit-image at runtime.

scenic's `owl_vit` project prepares images in two ways (both pad bottom/right, so the top-left
origin and box coordinates stay put; boxes are relative to the S×S square):

* `notebook` (`notebooks/inference.py`): pad to a square with gray 0.5, then
  `skimage.transform.resize(..., anti_aliasing=True)` to S×S: a Gaussian prefilter (sigma
  `(in/out - 1) / 2` per axis, truncated at 4 sigma, numpy-'reflect' = scipy-'mirror'
  boundaries) followed by bilinear interpolation at pixel centres `(i + 0.5) * in/out - 0.5`,
  clipped to the padded image's value range.
* `evaluator` (`evaluator.py` → `ResizeWithPad(size, pad_value=0.0)`, behind the published
  COCO/LVIS numbers): `tf.image.resize` bilinear without anti-aliasing so the longer side is
  S, then pad with 0.0. TensorFlow samples at half-pixel centres and clamps at the edges.

Both cost time and memory in proportion to the image plus the S×S output, whatever the aspect
ratio: the notebook's pad-then-resize is linear and separable, so it is computed as one sparse
matrix per axis applied to the image alone, with the padding's share (a constant 0.5 seen
through the same filter, border included) added in closed form. A 10000×10 image is never
padded to 10000×10000.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from owlvit_cli.errors import BadInputError
from owlvit_cli.input_files import open_regular

Pipeline = Literal["notebook", "evaluator"]
PIPELINES: tuple[Pipeline, ...] = ("notebook", "evaluator")
PAD_VALUES: dict[str, float] = {"notebook": 0.5, "evaluator": 0.0}
PAD_VALUE = PAD_VALUES["notebook"]
# scipy.ndimage.gaussian_filter's default truncation, which skimage's resize inherits.
GAUSSIAN_TRUNCATE = 4.0
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
PASS_BAND_ELEMENTS = 1 << 22  # of a photo converted to float32 at a time (16 MB)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 RGB [H, W, 3], or raise `BadInputError` in one line.

    No EXIF rotation is applied: scenic's notebooks read pixels as stored, and boxes must
    refer to the same pixels. Animated/multi-page files give their first frame. Alpha is
    dropped (not composited), as Pillow's RGB conversion does.
    """
    file_path = Path(path)
    fd = open_regular(file_path)  # a FIFO or a device is refused, not waited on
    try:
        with open(fd, "rb") as handle, Image.open(handle) as image:
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
        # Pillow's own conversion clips 16-bit values at 255 instead of rescaling. The scale is
        # the file's declared depth, never the values: a dark 16-bit image stays dark.
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values * 255.0 / _sixteen_bit_max(image)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def _sixteen_bit_max(image: Image.Image) -> float:
    """Full scale of a 16-bit (or 32-bit integer "I") image from its declared bit depth: PNG's
    16-bit grayscale and TIFF's BitsPerSample 16 both load as mode "I;16" or "I"."""
    bits = image.info.get("bits")
    tags: Any = getattr(image, "tag_v2", None)
    if bits is None and tags is not None and 258 in tags:  # TIFF BitsPerSample
        sample = tags[258]
        bits = sample[0] if isinstance(sample, tuple) else sample
    return float(2 ** int(bits or 16) - 1)


def preprocess(image_uint8: np.ndarray, size: int, pipeline: Pipeline = "notebook") -> np.ndarray:
    """uint8 RGB [H, W, 3] → the model's float32 [size, size, 3] input in [0, 1], as scenic's
    `pipeline` makes it."""
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image; got {image.dtype}")
    if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
        raise ValueError(f"expected an RGB image [H, W, 3]; got shape {list(image.shape)}")
    if pipeline == "notebook":
        return notebook_preprocess(image, size)
    if pipeline == "evaluator":
        return evaluator_preprocess(image, size)
    raise ValueError(f"unknown preprocessing {pipeline!r}; known: {', '.join(PIPELINES)}")


def scenic_preprocess(image_uint8: np.ndarray, size: int) -> np.ndarray:
    """The notebook pipeline (the one scenic's interactive code and demos use)."""
    return preprocess(image_uint8, size, "notebook")


# --- notebook: pad with 0.5, then skimage's anti-aliased resize -------------------------------


def notebook_preprocess(image_uint8: np.ndarray, size: int) -> np.ndarray:
    return resize_padded_antialiased(image_uint8, size, PAD_VALUES["notebook"])


def resize_padded_antialiased(image: np.ndarray, size: int, pad_value: float) -> np.ndarray:
    """`skimage.transform.resize(pad_to_square(image, pad_value), (size, size),
    anti_aliasing=True)` for a float32 [H, W, C] image (or a uint8 one, read as float32
    `value / 255`, scenic's `image.astype(np.float32) / 255`), without building the square.

    Pad, filter and interpolate are linear, so with A the [size, L] operator of one axis
    (L = max(H, W)), the result per channel is A_y P A_xᵀ for the padded P. Split P into the
    image block and the constant: A_y[:, :H] I A_x[:, :W]ᵀ + pad (r_y r_xᵀ − r_y,H r_x,Wᵀ),
    with r the row sums of A over all L columns and over the image's columns. The padding's
    effect near the border (what the Gaussian and the interpolation pull in) is thereby exact.
    The first pass runs in float32, the second in float64 (≤ ~1e-7 from skimage, which also
    stores float32 between its passes).
    """
    height, width = image.shape[:2]
    side = max(height, width)
    ops = [_axis_operator(side, size, n) for n in (height, width)]
    # The longer axis first: its pass reads the whole image and leaves the smaller
    # intermediate [short, size, C]; the shorter axis second, on that intermediate alone.
    long_axis = 0 if height >= width else 1
    first = _long_axis_pass(image, long_axis, ops[long_axis].astype(np.float32))
    result = _apply_axis(first, 0, ops[1 - long_axis])  # [short axis, long axis, C]
    if long_axis == 0:
        result = result.transpose(1, 0, 2)
    if side != height or side != width:
        full_y, part_y = _row_sums(side, size, height)
        full_x, part_x = _row_sums(side, size, width)
        result += pad_value * (np.outer(full_y, full_x) - np.outer(part_y, part_x))[..., None]
    extent = _as_float32(np.array([image.min(), image.max()], image.dtype))
    low, high = float(extent[0]), float(extent[1])
    if side != height or side != width:
        low, high = min(low, pad_value), max(high, pad_value)
    return np.clip(result, low, high).astype(np.float32)


def _long_axis_pass(image: np.ndarray, axis: int, operator: Any) -> np.ndarray:
    """`operator @ image` along `axis`, in float32, as [other axis, size, C]: the one pass
    over the whole photo. It goes a band of the other axis at a time, each band moved into
    place and converted to float32 on its own, so no float (or transposed) copy of a
    12 Mpx photo is made: allocating and filling those took seconds on a busy machine.
    Each output is the same sum of the same products as in one product over the whole.
    The result is stored with the other axis first, the layout the second pass reads, so
    that pass converts it without transposing it."""
    long, other, channels = image.shape[axis], image.shape[1 - axis], image.shape[2]
    out = np.empty((other, operator.shape[0], channels), np.float32)
    step = max(1, PASS_BAND_ELEMENTS // max(1, long * channels))
    for start in range(0, other, step):
        band = _as_float32(_band(image, axis, start, start + step))  # [long, n, C]
        product = operator @ band.reshape(long, -1)
        _whole_pixels(out)[start : start + step] = _whole_pixels(
            product.reshape(operator.shape[0], -1, channels)
        ).T
    return out


def _band(image: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    """Lines `start:stop` of the axis other than `axis`, as [long, n, C] with `axis` first.
    A band of columns is transposed as whole pixels, one item each: numpy copies a transposed
    [.., .., C] view C values at a time, which took a third longer on a 12 Mpx photo."""
    if axis == 0:
        return image[:, start:stop]
    rows = _whole_pixels(np.ascontiguousarray(image[start:stop]))
    return (
        np.ascontiguousarray(rows.T).view(image.dtype).reshape(image.shape[1], -1, image.shape[2])
    )


def _whole_pixels(array: np.ndarray) -> np.ndarray:
    """[A, B, C] (last axis contiguous) as an [A, B] view whose items are whole pixels."""
    pixel = np.dtype((np.void, array.shape[2] * array.itemsize))
    return array.view(pixel)[..., 0]


def _as_float32(values: np.ndarray) -> np.ndarray:
    """Pixels as scenic reads them: uint8 → `astype(float32) / 255`; float32 as they are.

    Converted and divided in one pass, into a C-ordered array whatever the input's strides:
    `astype` keeps a transposed input's order, and the sparse product then copies the
    float32 array once more (at four times the bytes of the uint8 one) to make it row-major."""
    if values.dtype != np.uint8:
        return np.ascontiguousarray(values, np.float32)
    converted = np.empty(values.shape, np.float32)
    np.divide(values, np.float32(255.0), out=converted, dtype=np.float32)  # float32(v) / 255
    return converted


def _apply_axis(array: np.ndarray, axis: int, operator: Any) -> np.ndarray:
    """`operator @ array` along `axis` (a sparse [out, n] matrix on an axis of length n)."""
    moved = np.moveaxis(array, axis, 0)
    # One copy, into the operator's dtype: scipy multiplies mixed dtypes several times
    # slower than it converts them.
    flat = operator @ np.ascontiguousarray(moved, operator.dtype).reshape(moved.shape[0], -1)
    return np.moveaxis(np.asarray(flat).reshape(operator.shape[0], *moved.shape[1:]), 0, axis)


def _axis_operator(side: int, size: int, keep: int) -> Any:
    """The [size, keep] sparse matrix of one axis of skimage's resize of a `side`-long axis
    (Gaussian then linear interpolation, mirror boundaries), restricted to its first `keep`
    columns (the image; the rest is padding)."""
    from scipy import sparse  # a runtime dependency; imported only where an image is resized

    rows, cols, weights = _axis_taps(side, size)
    inside = cols < keep
    matrix = sparse.coo_matrix(
        (weights[inside], (rows[inside], cols[inside])), shape=(size, keep), dtype=np.float64
    )
    return matrix.tocsr()  # duplicates (mirrored taps) are summed


def _row_sums(side: int, size: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols, weights = _axis_taps(side, size)
    full = np.bincount(rows, weights, minlength=size)
    part = np.bincount(rows[cols < keep], weights[cols < keep], minlength=size)
    return full, part


def _axis_taps(side: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output index, input index, weight) of every tap of one axis's operator."""
    factor = side / size
    coords = (np.arange(size, dtype=np.float64) + 0.5) * factor - 0.5
    lower = np.floor(coords)
    frac = coords - lower
    zoom_idx = np.stack([lower, lower + 1], axis=1).astype(np.int64)  # [size, 2]
    zoom_w = np.stack([1.0 - frac, frac], axis=1)
    offsets, kernel = _gaussian_kernel(max(0.0, (factor - 1.0) / 2.0))
    idx = _mirror(_mirror(zoom_idx, side)[..., None] + offsets, side)  # [size, 2, taps]
    weights = zoom_w[..., None] * kernel
    rows = np.broadcast_to(np.arange(size)[:, None, None], idx.shape)
    return rows.ravel(), idx.ravel(), weights.ravel()


def _gaussian_kernel(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """scipy.ndimage.gaussian_filter1d's kernel; scipy skips an axis whose sigma is ~0."""
    if sigma <= 1e-15:
        return np.zeros(1, np.int64), np.ones(1)
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / sigma**2 * offsets.astype(np.float64) ** 2)
    return offsets, kernel / kernel.sum()


def _mirror(index: np.ndarray, length: int) -> np.ndarray:
    """scipy's 'mirror' (numpy's 'reflect'): d c b | a b c d | c b a, periodic beyond."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)


def pad_to_square(image: np.ndarray, value: float = PAD_VALUE) -> np.ndarray:
    """Pad bottom and right only, so the top-left origin (and box coordinates) stay put."""
    height, width = image.shape[:2]
    side = max(height, width)
    padding = ((0, side - height), (0, side - width)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, padding, constant_values=value)


# --- evaluator: TensorFlow's bilinear resize of the long side to S, then pad with 0.0 ---------


def evaluator_preprocess(image_uint8: np.ndarray, size: int) -> np.ndarray:
    height, width = image_uint8.shape[:2]
    fit_h, fit_w = fitted_size(height, width, size)
    resized = resize_bilinear_tf(image_uint8, fit_h, fit_w)
    out = np.full((size, size, image_uint8.shape[2]), PAD_VALUES["evaluator"], np.float32)
    out[:fit_h, :fit_w] = resized
    return out


def fitted_size(height: int, width: int, size: int) -> tuple[int, int]:
    """`ResizeWithPad`'s target: the longer side becomes `size`, the other keeps the aspect
    ratio, rounded down (at least one pixel, where TensorFlow would refuse an empty resize).
    The arithmetic is float32 as in the graph: a 512×512 image at S = 240 becomes 239×239
    (512 / (512 / 240) is 239.99998 in float32), its last row and column padding."""
    side = np.float32(size)
    ratio = max(np.float32(height) / side, np.float32(width) / side)  # float32, as in TensorFlow
    fit_h, fit_w = (max(1, int(min(np.float32(n) / ratio, side))) for n in (height, width))
    return fit_h, fit_w


def resize_bilinear_tf(image_uint8: np.ndarray, height: int, width: int) -> np.ndarray:
    """`tf.image.resize(image / 255, (height, width), BILINEAR, antialias=False)`: TensorFlow's
    `ResizeBilinear` with half-pixel centres, in float32 op for op. Only the four source
    pixels of each output pixel are read, so the cost is the output's size. Each of the four
    is gathered once, rows first (whole rows are contiguous copies, then one column take)."""
    (y0, y1, fy), (x0, x1, fx) = (
        _tf_taps(n_in, n_out)
        for n_in, n_out in ((image_uint8.shape[0], height), (image_uint8.shape[1], width))
    )
    (top_left, top_right), (bottom_left, bottom_right) = (
        [_as_float32(np.take(image_uint8[rows], cols, axis=1)) for cols in (x0, x1)]
        for rows in (y0, y1)
    )
    fx = fx[None, :, None]
    top = top_left + (top_right - top_left) * fx
    bottom = bottom_left + (bottom_right - bottom_left) * fx
    return (top + (bottom - top) * fy[:, None, None]).astype(np.float32)


def _tf_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TensorFlow's `compute_interpolation_weights` with `HalfPixelScaler`, in float32."""
    scale = np.float32(n_in) / np.float32(n_out)
    coords = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(coords)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(coords).astype(np.int64), n_in - 1)
    return lower, upper, (coords - floor).astype(np.float32)
