"""Open-vocabulary detection with a converted transformers model.

The model runs exactly as a user of the converted directory would run it: the saved processor
(`AutoProcessor.from_pretrained`, offline) and the stock model, no scenic patches. That makes
`owlvit detect` a smoke test of what we ship, not of our own reimplementation.

Pixels: `preprocessing="processor"` (the default) uses the saved processor, what Hub users
get; "notebook" and "evaluator" use scenic's own pipelines (owlvit_cli.scenic.preprocess), so a
user can see the detections scenic's preprocessing would give. Token ids always come from the
saved processor.

Boxes: every preprocessing pads the image bottom/right to a square, so the predicted boxes are
relative to that square, and transformers' post-processing scales them by the *longer* side
(target size `(h, w)`, of which Owlv2's post-processing uses `max(h, w)`). What `detect`
returns is exactly that post-processing's output, so the model card's snippet reproduces it:
boxes may reach past the image, and some lie wholly in the padding below or right of it.
`clip_to_image=True` clips boxes to the image and drops those left empty (wholly in the
padding): they point at padding, not at anything in the picture.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from owlvit_cli.detect.options import (  # re-exported
    DEFAULT_NMS_THRESHOLD,
    DEFAULT_PREPROCESSING,
    DEFAULT_THRESHOLD,
    PREPROCESSINGS,
)
from owlvit_cli.errors import BadInputError
from owlvit_cli.progress import NO_PROGRESS, Progress
from owlvit_cli.runtime.detection import Detection
from owlvit_cli.scenic.preprocess import load_image


@dataclass
class DetectionResult:
    """What `detect` found, in the form `--json` prints."""

    model_dir: Path
    image_path: Path
    image_size: tuple[int, int]  # (width, height)
    mode: str  # "text" or "image" (one-shot, image-conditioned)
    queries: list[str]
    threshold: float
    detections: list[Detection]
    query_image: Path | None = None
    max_detections: int | None = None
    nms_threshold: float | None = None
    preprocessing: str = DEFAULT_PREPROCESSING
    clip_to_image: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        width, height = self.image_size
        return {
            "model": str(self.model_dir),
            "image": str(self.image_path),
            "image_size": {"width": width, "height": height},
            "mode": self.mode,
            "queries": list(self.queries),
            "query_image": None if self.query_image is None else str(self.query_image),
            "threshold": self.threshold,
            "max_detections": self.max_detections,
            "nms_threshold": self.nms_threshold,
            "preprocessing": self.preprocessing,
            "clip_to_image": self.clip_to_image,
            "detections": [d.to_json() for d in self.detections],
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }


@dataclass
class Detector:
    """A loaded model and its saved processor, so several images can share one load."""

    model_dir: Path
    model: Any
    processor: Any


def validate_queries(queries: Sequence[str] | None, image_query: Path | None) -> list[str]:
    """Exactly one of text queries / an image query; text queries must say something."""
    queries = list(queries or [])
    if queries and image_query is not None:
        raise BadInputError("give either text queries or an image query, not both")
    if not queries and image_query is None:
        raise BadInputError(
            "give at least one text query (or an image query)",
            hint="--query TEXT or --image-query PATH",
        )
    for index, query in enumerate(queries):
        if not query.strip():
            raise BadInputError(f"query {index + 1} is empty")
    return queries


def validate_threshold(threshold: float, name: str = "threshold") -> float:
    if not (0.0 <= threshold <= 1.0) or math.isnan(threshold):
        raise BadInputError(f"{name} must be between 0 and 1; got {threshold:g}")
    return float(threshold)


def validate_max_detections(max_detections: int | None) -> int | None:
    if max_detections is not None and max_detections < 1:
        raise BadInputError(f"the number of detections must be at least 1; got {max_detections}")
    return max_detections


def load_detector(hf_dir: Path, *, checked: bool = False) -> Detector:
    """The stock model and its saved processor, offline. `checked`: the caller has run
    `check_model_dir` on `hf_dir`."""
    from owlvit_cli.model.model_dir import check_model_dir
    from owlvit_cli.runtime.hf_model import load_hf_model, load_processor

    if not checked:
        check_model_dir(hf_dir)
    model = load_hf_model(hf_dir, checked=True)
    return Detector(model_dir=hf_dir, model=model, processor=load_processor(hf_dir))


def validate_preprocessing(preprocessing: str) -> str:
    if preprocessing not in PREPROCESSINGS:
        raise BadInputError(
            f"unknown preprocessing {preprocessing!r}; choose one of {', '.join(PREPROCESSINGS)}"
        )
    return preprocessing


def check_processor_can_take(image: np.ndarray, preprocessing: str) -> None:
    """The saved processor builds the padded square; refuse a sliver rather than hang on it."""
    from owlvit_cli.runtime.hf_model import processor_square_refusal

    why = processor_square_refusal(*image.shape[:2])
    if preprocessing == "processor" and why:
        raise BadInputError(why, hint="use --preprocessing notebook or evaluator")


def model_pixels(detector: Detector, image: np.ndarray, preprocessing: str) -> Any:
    """The normalised NCHW pixel tensor the model sees for `image` under `preprocessing`."""
    import torch

    if preprocessing == "processor":
        batch = detector.processor.image_processor(images=_pil(image), return_tensors="pt")
        return batch["pixel_values"]
    from owlvit_cli.runtime.pixels import normalize_pixels
    from owlvit_cli.scenic.preprocess import preprocess

    size = int(detector.model.config.vision_config.image_size)
    pixels = preprocess(image, size, preprocessing)  # type: ignore[arg-type]
    return torch.from_numpy(normalize_pixels(pixels[None]))


def detect_text(
    detector: Detector,
    image: np.ndarray,
    queries: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    preprocessing: str = DEFAULT_PREPROCESSING,
    clip_to_image: bool = False,
) -> list[Detection]:
    """Text-conditioned detection on a uint8 RGB image; best query per box, best box first."""
    import torch

    processor = detector.processor
    inputs = processor(text=list(queries), return_tensors="pt", truncation=True)
    inputs["pixel_values"] = model_pixels(detector, image, preprocessing)
    with torch.inference_mode():
        outputs = detector.model(**inputs)
    (found,) = processor.post_process_grounded_object_detection(
        outputs, threshold=threshold, target_sizes=[image.shape[:2]]
    )
    return _detections(found, image, list(queries), clip_to_image)


def detect_image_query(
    detector: Detector,
    image: np.ndarray,
    query_image: np.ndarray,
    query_label: str,
    threshold: float = DEFAULT_THRESHOLD,
    nms_threshold: float = DEFAULT_NMS_THRESHOLD,
    *,
    preprocessing: str = DEFAULT_PREPROCESSING,
    clip_to_image: bool = False,
) -> list[Detection]:
    """One-shot detection: find things like `query_image` (an example crop) in `image`.

    The model's `image_guided_detection` picks the query embedding from the crop. We do not
    use the processor's `post_process_image_guided_detection` for scoring: it returns display
    alphas (rescaled so the best box is 1.0, boxes under 10% of the best dropped), not scores,
    so `--threshold` would mean something different than for text queries. Instead the same
    `post_process_object_detection` as for text gives sigmoid scores and boxes, followed by the
    same greedy NMS (IoU > nms_threshold suppressed) that the image-guided post-processing runs.
    Thresholding before NMS keeps the same boxes: a box is only ever suppressed by a
    higher-scoring one.
    """
    import torch
    from torchvision.ops import nms

    processor = detector.processor
    pixels = model_pixels(detector, image, preprocessing)
    query_pixels = model_pixels(detector, query_image, preprocessing)
    with torch.inference_mode():
        outputs = detector.model.image_guided_detection(
            pixel_values=pixels, query_pixel_values=query_pixels
        )
    plain = SimpleNamespace(logits=outputs.logits, pred_boxes=outputs.target_pred_boxes)
    (found,) = processor.image_processor.post_process_object_detection(
        plain, threshold=threshold, target_sizes=[image.shape[:2]]
    )
    if nms_threshold < 1.0 and len(found["scores"]):
        keep = nms(found["boxes"].float(), found["scores"].float(), nms_threshold)
        found = {key: found[key][keep] for key in ("scores", "labels", "boxes")}
    return _detections(found, image, [query_label], clip_to_image)


def _pil(image: np.ndarray) -> Image.Image:
    """Hand the processor a PIL image: given an array three (or one) pixels tall, it guesses
    channels-first and reads the picture sideways."""
    return Image.fromarray(np.asarray(image, dtype=np.uint8))


def _detections(
    found: Mapping[str, Any], image: np.ndarray, queries: list[str], clip_to_image: bool
) -> list[Detection]:
    """Post-processing's boxes as they are (or clipped to the image, those left empty in the
    padding dropped), padding queries never reported, best score first."""
    height, width = image.shape[:2]
    boxes = found["boxes"].detach().double().numpy()
    if clip_to_image:
        boxes = np.clip(boxes, 0.0, np.array([width, height, width, height], dtype=np.float64))
    scores = found["scores"].detach().double().numpy()
    labels = found["labels"].detach().numpy()
    detections = []
    for box, score, label in zip(boxes, scores, labels, strict=True):
        if not 0 <= label < len(queries):
            continue  # a padding query; none arise from one image's list, but never report one
        x0, y0, x1, y1 = (float(v) for v in box)
        if clip_to_image and (x1 <= x0 or y1 <= y0):
            continue
        detections.append(Detection(queries[label], int(label), float(score), (x0, y0, x1, y1)))
    detections.sort(key=lambda d: -d.score)
    return detections


def detect(
    hf_dir: str | os.PathLike[str],
    image: str | os.PathLike[str],
    queries: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    image_query: Path | None = None,
    max_detections: int | None = None,
    nms_threshold: float = DEFAULT_NMS_THRESHOLD,
    preprocessing: str = DEFAULT_PREPROCESSING,
    clip_to_image: bool = False,
    detector: Detector | None = None,
    progress: Progress = NO_PROGRESS,
) -> DetectionResult:
    """Detect `queries` (or things like the `image_query` crop) in an image file.

    All inputs are checked (cheaply) before the model is loaded, so a typo fails in
    milliseconds. `progress` hears the slow parts (a spinner in the CLI); `detector` lets a caller
    reuse a loaded model.
    """
    from owlvit_cli.model.model_dir import check_model_dir

    start = time.perf_counter()
    hf_dir, image_path = Path(hf_dir), Path(image)
    queries = validate_queries(queries, image_query)
    threshold = validate_threshold(threshold)
    max_detections = validate_max_detections(max_detections)
    nms_threshold = validate_threshold(nms_threshold, "NMS threshold")
    preprocessing = validate_preprocessing(preprocessing)
    check_model_dir(hf_dir)
    pixels = load_image(image_path)
    query_image = None if image_query is None else load_image(image_query)
    for picture in (pixels, query_image):
        if picture is not None:
            check_processor_can_take(picture, preprocessing)
    how = {"preprocessing": preprocessing, "clip_to_image": clip_to_image}
    warnings: list[str] = []
    if detector is None:
        with progress.step("loading model"):
            detector = load_detector(hf_dir, checked=True)
    with progress.step("detecting"):
        if query_image is not None:
            label = str(image_query)
            found = detect_image_query(
                detector, pixels, query_image, label, threshold, nms_threshold, **how
            )
            queries = [label]
        else:
            warnings += _truncation_warnings(detector, queries)
            found = detect_text(detector, pixels, queries, threshold, **how)
    if max_detections is not None:
        found = found[:max_detections]
    height, width = pixels.shape[:2]
    return DetectionResult(
        model_dir=hf_dir,
        image_path=image_path,
        image_size=(width, height),
        mode="text" if image_query is None else "image",
        queries=queries,
        threshold=threshold,
        detections=found,
        query_image=image_query,
        max_detections=max_detections,
        nms_threshold=nms_threshold if image_query is not None else None,
        preprocessing=preprocessing,
        clip_to_image=clip_to_image,
        seconds=time.perf_counter() - start,
        warnings=warnings,
    )


def _truncation_warnings(detector: Detector, queries: Sequence[str]) -> list[str]:
    """The text tower sees at most 16 tokens; say so rather than silently cutting a query."""
    tokenizer = detector.processor.tokenizer
    limit = int(getattr(tokenizer, "model_max_length", 16) or 16)
    warnings = []
    for query in queries:
        count = len(tokenizer(query, truncation=False)["input_ids"])
        if count > limit:
            warnings.append(
                f"query {query!r} is {count} tokens; the model reads only the first {limit}"
            )
    return warnings
