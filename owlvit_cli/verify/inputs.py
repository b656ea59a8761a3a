"""The images and queries verify feeds both models: scenic-side pixels and ids, and their
transformers form."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from owlvit_cli.errors import BadInputError
from owlvit_cli.model.spec import ModelSpec
from owlvit_cli.runtime.pixels import normalize_pixels
from owlvit_cli.scenic import preprocess
from owlvit_cli.verify.options import DEFAULT_PREPROCESSING, DEFAULT_TOP_K  # re-exported

DEFAULT_QUERIES = ("a house", "a red car", "a tree", "a cat")


@dataclass
class VerifyInputs:
    """Scenic-side pixels ([0,1] NHWC) and ids, their transformers form, and their origin."""

    images: list[str]
    raw_images: list[np.ndarray | None]
    scenic_pixels: np.ndarray
    queries: list[str]
    input_ids: np.ndarray
    preprocessing: preprocess.Pipeline = DEFAULT_PREPROCESSING

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
    return VerifyInputs(images, raw, np.stack(pixels), queries, ids, options.preprocessing)


def load_pixel_array(path: Path, size: int) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):  # np.load opens an .npz archive whatever its name
        array.close()
        raise BadInputError(f"{path} is an .npz archive, not a .npy array; save one array")
    if array.shape != (size, size, 3) or not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(
            f"{path}: expected a float array of shape [{size}, {size}, 3] in [0, 1] "
            f"(this model's input size), got {array.dtype} {list(array.shape)}"
        )
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise BadInputError(f"{path}: pixel values must be finite and in [0, 1]")
    return array.astype(np.float32)
