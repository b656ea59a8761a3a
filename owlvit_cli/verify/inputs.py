"""The images and queries verify feeds both models: scenic-side pixels and ids, and their
transformers form."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np

from owlvit_cli.errors import BadInputError, first_line
from owlvit_cli.input_files import open_regular
from owlvit_cli.model.spec import ModelSpec
from owlvit_cli.runtime.pixels import normalize_pixels
from owlvit_cli.scenic import preprocess
from owlvit_cli.scenic.image_query import relative_box_yxyx
from owlvit_cli.verify.options import DEFAULT_PREPROCESSING, DEFAULT_TOP_K  # re-exported

DEFAULT_QUERIES = ("a house", "a red car", "a tree", "a cat")
# The image-conditioned check's example on the built-in sample: the red car, in its pixels.
SAMPLE_QUERY_BOX = (300.0, 295.0, 500.0, 414.0)


@dataclass
class VerifyInputs:
    """Scenic-side pixels ([0,1] NHWC) and ids, their transformers form, and their origin."""

    images: list[str]
    raw_images: list[np.ndarray | None]
    scenic_pixels: np.ndarray
    queries: list[str]
    input_ids: np.ndarray
    preprocessing: preprocess.Pipeline = DEFAULT_PREPROCESSING
    query_image_index: int = 0  # the image the image-conditioned check takes examples from
    query_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    query_boxes_yxyx: list[np.ndarray] = field(default_factory=list)  # scenic's, relative

    @functools.cached_property
    def pixel_values(self) -> np.ndarray:
        return normalize_pixels(self.scenic_pixels)

    @property
    def query_mask(self) -> np.ndarray:
        return self.input_ids[..., 0] > 0


@dataclass
class VerifyOptions:
    images: Sequence[Path] = ()
    queries: Sequence[str] = ()
    atol: dict[str, float] = field(default_factory=dict)
    strict_processor: bool = False
    top_k: int = DEFAULT_TOP_K
    record: bool = False
    processor_detections: bool = False  # run the model on the processor's inputs too
    preprocessing: preprocess.Pipeline = DEFAULT_PREPROCESSING  # scenic's, for image files
    ignore_source: bool = False  # compare even when CKPT is not HF_DIR's recorded source
    # The image-conditioned check: example boxes on a query image (verified as one more image;
    # by default the first image, with the sample's car or the whole image as the box).
    image_query: Path | None = None
    query_boxes: Sequence[tuple[float, float, float, float]] = ()

    @property
    def processor_forward(self) -> bool:
        return self.processor_detections or self.strict_processor


def check_preprocessing(name: str) -> None:
    if name not in preprocess.PIPELINES:
        raise BadInputError(
            f"unknown preprocessing {name!r}; choose one of {', '.join(preprocess.PIPELINES)}"
        )


def sample_image_path() -> Path:
    return Path(str(resources.files("owlvit_cli") / "assets" / "sample.png"))


def prepare_inputs(spec: ModelSpec, options: VerifyOptions) -> VerifyInputs:
    """Load images (or .npy pixel arrays) and tokenize queries the way scenic does; one
    all-zero padding query is appended so that the padding path is exercised too."""
    from owlvit_cli.scenic.tokenizer import tokenize_queries

    check_preprocessing(options.preprocessing)
    size = spec.vision.image_size
    paths = list(options.images) or [sample_image_path()]
    if options.query_boxes and options.image_query is None and len(paths) > 1:
        raise BadInputError(
            "with several images, say which one the query boxes are drawn on",
            hint="--image-query IMAGE",
        )
    if options.image_query is not None and Path(options.image_query) not in map(Path, paths):
        paths.append(Path(options.image_query))
    query_index = list(map(Path, paths)).index(Path(options.image_query or paths[0]))
    queries = list(options.queries) or list(DEFAULT_QUERIES)
    if any(not q.strip() for q in queries):
        raise BadInputError("empty --query; every query needs some text")
    raw: list[np.ndarray | None] = []
    pixels = []
    for path in paths:
        if Path(path).suffix.lower() == ".npy":
            pixels.append(load_pixel_array(Path(path), size))
            raw.append(None)
        else:
            image = preprocess.load_image(path)
            raw.append(image)
            pixels.append(preprocess.preprocess(image, size, options.preprocessing))
    rows: list[list[str | None]] = [[*queries, None] for _ in paths]
    ids = tokenize_queries(rows, spec.text.max_position_embeddings)
    images = [str(p) for p in paths]
    inputs = VerifyInputs(images, raw, np.stack(pixels), queries, ids, options.preprocessing)
    shape = raw[query_index].shape if raw[query_index] is not None else (size, size)
    boxes = list(options.query_boxes) or [_default_query_box(paths[query_index], shape)]
    inputs.query_image_index, inputs.query_boxes = query_index, boxes
    inputs.query_boxes_yxyx = [relative_box_yxyx(box, *shape[:2]) for box in boxes]
    return inputs


def _default_query_box(path: Path, shape: tuple[int, ...]) -> tuple[float, float, float, float]:
    """The sample's car on the built-in sample; elsewhere the whole image."""
    if Path(path) == sample_image_path():
        return SAMPLE_QUERY_BOX
    return (0.0, 0.0, float(shape[1]), float(shape[0]))


def load_pixel_array(path: Path, size: int) -> np.ndarray:
    """The [size, size, 3] float array saved in `path`. Its header is checked before any data
    is read: a small file may declare any shape, and is not taken at its word."""
    with open(open_regular(path), "rb") as handle:
        try:
            array = _read_npy(handle, path, size)
        except (OSError, ValueError, EOFError) as exc:
            raise BadInputError(f"{path}: not a readable .npy array ({first_line(exc)})") from exc
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise BadInputError(f"{path}: pixel values must be finite and in [0, 1]")
    return array.astype(np.float32)


def _read_npy(handle: BinaryIO, path: Path, size: int) -> np.ndarray:
    from numpy.lib import format as npy

    if handle.read(4) == b"PK\x03\x04":
        raise BadInputError(f"{path} is an .npz archive, not a .npy array; save one array")
    handle.seek(0)
    version = npy.read_magic(handle)
    if version not in ((1, 0), (2, 0)):  # 3.0 only for structured dtypes: never pixels
        raise ValueError(f"format version {version[0]}.{version[1]}")
    read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, _, dtype = read_header(handle)
    if shape != (size, size, 3) or not np.issubdtype(dtype, np.floating):
        raise BadInputError(
            f"{path}: expected a float array of shape [{size}, {size}, 3] in [0, 1] "
            f"(this model's input size), got {dtype} {list(shape)}"
        )
    data_bytes = os.fstat(handle.fileno()).st_size - handle.tell()
    if data_bytes != size * size * 3 * dtype.itemsize:
        raise BadInputError(
            f"{path}: its header declares {dtype} {list(shape)}, but the file holds "
            f"{data_bytes:,} bytes of data"
        )
    handle.seek(0)
    return npy.read_array(handle, allow_pickle=False)
