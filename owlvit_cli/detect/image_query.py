"""Image-conditioned detection on a converted model, with the query embedding chosen the way
scenic's notebook chooses it from an example box (`owlvit_cli.scenic.image_query`).

The model runs stock, as users load it: its image embedder, box head and class head, called
one by one as transformers' own `image_guided_detection` calls them; only the choice of the
query embedding and the NMS after scoring follow scenic instead of transformers.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from owlvit_cli.errors import BadInputError, first_line
from owlvit_cli.scenic.image_query import (
    Box,
    QuerySelection,
    relative_box_yxyx,
    select_query_embedding,
    suppressed_logits,
)

# A saved embedding is a few kilobytes; anything much larger is not one.
MAX_EMBEDDING_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class QueryExample:
    """One example: a query image (uint8 RGB), where it came from, and a box in its pixels."""

    source: Path
    image: np.ndarray
    box: Box

    @property
    def label(self) -> str:
        return f"{self.source.name}@{','.join(f'{v:g}' for v in self.box)}"


@dataclass(frozen=True)
class ImageQueries:
    """The embeddings that stand for the examples, [Q, E] not normalised, with their labels
    and, where they came from boxes, which predicted box each one is."""

    embeddings: np.ndarray
    labels: list[str]
    selections: list[QuerySelection]

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"label": label, "box_index": s.index, "candidates": len(s.candidates)}
            for label, s in zip(self.labels, self.selections, strict=True)
        ]


def pair_examples(query_images: Sequence[Path], boxes: Sequence[Box]) -> list[tuple[Path, Box]]:
    """Every box on the one query image, or as many query images as boxes, paired in order."""
    if len(query_images) == 1:
        return [(query_images[0], box) for box in boxes]
    if len(query_images) != len(boxes):
        raise BadInputError(
            f"{len(query_images)} query images and {len(boxes)} query boxes: give one query "
            "image with any number of boxes, or one box per query image (paired in order)"
        )
    return list(zip(query_images, boxes, strict=True))


def embed_examples(model: Any, examples: Sequence[QueryExample], pixels_of: Any) -> ImageQueries:
    """scenic's query embedding for each example; each query image runs through the model once
    however many boxes it has. `pixels_of(image)` gives the model's input for an image."""
    from owlvit_cli.runtime.hf_model import run_hf_image_only

    outputs: dict[int, dict[str, np.ndarray]] = {}
    chosen = []
    for example in examples:
        key = id(example.image)
        if key not in outputs:
            outputs[key] = run_hf_image_only(model, pixels_of(example.image))
        out = outputs[key]
        height, width = example.image.shape[:2]
        box = relative_box_yxyx(example.box, height, width)
        embeddings = out["class_embeddings_unnormalized"][0]
        chosen.append(select_query_embedding(embeddings, out["pred_boxes"][0], box))
    embeddings = np.stack([s.embedding for s in chosen]).astype(np.float32)
    return ImageQueries(embeddings, [e.label for e in examples], chosen)


def score_image(
    model: Any,
    image_processor: Any,
    pixels: Any,
    embeddings: np.ndarray,
    image_shape: tuple[int, ...],
    threshold: float,
    nms_threshold: float,
) -> dict[str, Any]:
    """The target image's boxes scored against the embeddings by the class head, best query
    per box, NMS as scenic applies it, then the same post-processing as text queries."""
    import torch

    from owlvit_cli.runtime.hf_model import run_hf_class_head, run_hf_image_only

    out = run_hf_image_only(model, pixels)
    logits = run_hf_class_head(model, out["feature_map"], embeddings[None])[0]
    if nms_threshold < 1.0:
        logits = suppressed_logits(logits, out["pred_boxes"][0], nms_threshold)
    plain = SimpleNamespace(
        logits=torch.from_numpy(logits[None]), pred_boxes=torch.from_numpy(out["pred_boxes"])
    )
    (found,) = image_processor.post_process_object_detection(
        plain, threshold=threshold, target_sizes=[image_shape[:2]]
    )
    return found


def check_embedding_width(embeddings: np.ndarray, width: int, source: str) -> None:
    if embeddings.shape[-1] != width:
        raise BadInputError(
            f"{source}: query embeddings are {embeddings.shape[-1]} wide, this model's are "
            f"{width} (an embedding only fits the model it came from)"
        )


def load_query_embedding(path: Path) -> np.ndarray:
    """A saved [Q, E] (or [E]) float array: a regular file of a sane size, read once."""
    from owlvit_cli.input_files import read_limited

    data = read_limited(path, MAX_EMBEDDING_FILE_BYTES)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BadInputError(f"{path}: not a readable .npy array ({first_line(exc)})") from exc
    if not isinstance(array, np.ndarray):  # an .npz archive, whatever its name
        array.close()
        raise BadInputError(f"{path} is an .npz archive, not a .npy array")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or not array.shape[0] or not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(
            f"{path}: expected a float array of query embeddings [Q, E], "
            f"got {array.dtype} {list(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise BadInputError(f"{path}: query embeddings must be finite")
    return array.astype(np.float32)


def save_query_embedding(path: Path, embeddings: np.ndarray) -> None:
    """Write the [Q, E] array whole or not at all."""
    from owlvit_cli.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(embeddings, np.float32), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())  # a refused write: an OutputError
