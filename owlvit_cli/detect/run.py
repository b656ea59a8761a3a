"""Open-vocabulary detection with a converted transformers model, and pictures of the result.

The model runs exactly as a user of the converted directory would run it: the saved processor
(`AutoProcessor.from_pretrained`, offline) and the stock model, no scenic patches. That makes
`owlvit detect` a smoke test of what we ship, not of our own reimplementation.

Box coordinates: the saved image processor pads the image bottom/right to a square before
resizing, so the predicted boxes are relative to that padded square. Scaling them by the
*longer* side (target size `(max(h, w), max(h, w))`) puts them in pixels of the original image;
scaling x by the width and y by the height would stretch them on any non-square image. Boxes
are then clipped to the image, and boxes lying wholly in the padding (empty after clipping)
are dropped: they point at gray padding, not at anything in the picture.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from owlvit_cli.errors import BadInputError
from owlvit_cli.progress import NO_PROGRESS, Progress
from owlvit_cli.scenic.preprocess import load_image

DEFAULT_THRESHOLD = 0.1
# transformers' default for image-guided detection: one-shot queries light up many
# overlapping boxes around each match, text queries do not (and HF applies no NMS there).
DEFAULT_NMS_THRESHOLD = 0.3
OUTPUT_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
# Sasha Trubetskoy's "distinct colours": tell apart on photos and for most colour-blind eyes.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
)


@dataclass(frozen=True)
class Detection:
    """One box: the query it matched, sigmoid score, and [x0, y0, x1, y1] in image pixels."""

    query: str
    query_index: int
    score: float
    box: tuple[float, float, float, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "query_index": self.query_index,
            "score": self.score,
            "box": list(self.box),
        }


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


# --- validation: everything cheap, before the model is loaded ---------------------------------


def validate_queries(queries: Sequence[str] | None, image_query: Path | None) -> list[str]:
    """Exactly one of text queries / an image query; text queries must say something."""
    queries = list(queries or [])
    if queries and image_query is not None:
        raise BadInputError("give either --query or --image-query, not both")
    if not queries and image_query is None:
        raise BadInputError("give at least one --query TEXT (or one --image-query PATH)")
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
        raise BadInputError(f"--max-detections must be at least 1; got {max_detections}")
    return max_detections


def output_format(path: Path) -> str:
    """Pillow format name for `path`'s suffix; refuse what we cannot write before any work."""
    suffix = path.suffix.lower()
    fmt = OUTPUT_FORMATS.get(suffix)
    Image.init()
    if fmt is None or fmt not in Image.SAVE:
        known = ", ".join(s for s, f in OUTPUT_FORMATS.items() if f in Image.SAVE)
        shown = f"suffix {suffix!r}" if suffix else "no suffix"
        raise BadInputError(f"{path}: cannot tell the image format from {shown} (use {known})")
    if path.is_dir():
        raise BadInputError(f"{path} is a directory")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise BadInputError(f"{parent}: parent directory does not exist")
    return fmt


# --- running the model ------------------------------------------------------------------------


def load_detector(hf_dir: Path) -> Detector:
    """The stock model and its saved processor, offline."""
    from owlvit_cli.verify.hf_model import check_model_dir, load_hf_model, load_processor

    check_model_dir(hf_dir)
    return Detector(model_dir=hf_dir, model=load_hf_model(hf_dir), processor=load_processor(hf_dir))


def detect_text(
    detector: Detector,
    image: np.ndarray,
    queries: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> list[Detection]:
    """Text-conditioned detection on a uint8 RGB image; best query per box, best box first."""
    import torch

    processor = detector.processor
    inputs = processor(text=list(queries), images=_pil(image), return_tensors="pt", truncation=True)
    with torch.inference_mode():
        outputs = detector.model(**inputs)
    side = max(image.shape[:2])
    (found,) = processor.post_process_grounded_object_detection(
        outputs, threshold=threshold, target_sizes=[(side, side)]
    )
    return _detections(found, image, list(queries))


def detect_image_query(
    detector: Detector,
    image: np.ndarray,
    query_image: np.ndarray,
    query_label: str,
    threshold: float = DEFAULT_THRESHOLD,
    nms_threshold: float = DEFAULT_NMS_THRESHOLD,
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
    inputs = processor(images=_pil(image), query_images=_pil(query_image), return_tensors="pt")
    with torch.inference_mode():
        outputs = detector.model.image_guided_detection(**inputs)
    side = max(image.shape[:2])
    plain = SimpleNamespace(logits=outputs.logits, pred_boxes=outputs.target_pred_boxes)
    (found,) = processor.image_processor.post_process_object_detection(
        plain, threshold=threshold, target_sizes=[(side, side)]
    )
    if nms_threshold < 1.0 and len(found["scores"]):
        keep = nms(found["boxes"].float(), found["scores"].float(), nms_threshold)
        found = {key: found[key][keep] for key in ("scores", "labels", "boxes")}
    return _detections(found, image, [query_label])


def _pil(image: np.ndarray) -> Image.Image:
    """Hand the processor a PIL image: given an array three (or one) pixels tall, it guesses
    channels-first and reads the picture sideways."""
    return Image.fromarray(np.asarray(image, dtype=np.uint8))


def _detections(found: Mapping[str, Any], image: np.ndarray, queries: list[str]) -> list[Detection]:
    """Clip to the image, drop boxes wholly in the padding and padding queries, sort."""
    height, width = image.shape[:2]
    limits = np.array([width, height, width, height], dtype=np.float64)
    boxes = np.clip(found["boxes"].detach().double().numpy(), 0.0, limits)
    scores = found["scores"].detach().double().numpy()
    labels = found["labels"].detach().numpy()
    detections = []
    for box, score, label in zip(boxes, scores, labels, strict=True):
        if not 0 <= label < len(queries):
            continue  # a padding query; none arise from one image's list, but never report one
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 <= x0 or y1 <= y0:
            continue
        detections.append(Detection(queries[label], int(label), float(score), (x0, y0, x1, y1)))
    detections.sort(key=lambda d: -d.score)
    return detections


def detect(
    hf_dir: Path,
    image_path: Path,
    queries: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    image_query: Path | None = None,
    max_detections: int | None = None,
    nms_threshold: float = DEFAULT_NMS_THRESHOLD,
    detector: Detector | None = None,
    progress: Progress = NO_PROGRESS,
) -> DetectionResult:
    """Detect `queries` (or things like the `image_query` crop) in an image file.

    All inputs are checked (cheaply) before the model is loaded, so a typo fails in
    milliseconds. `progress` hears the slow parts (a spinner in the CLI); `detector` lets a caller
    reuse a loaded model.
    """
    from owlvit_cli.verify.hf_model import check_model_dir

    start = time.perf_counter()
    hf_dir, image_path = Path(hf_dir), Path(image_path)
    queries = validate_queries(queries, image_query)
    threshold = validate_threshold(threshold)
    max_detections = validate_max_detections(max_detections)
    nms_threshold = validate_threshold(nms_threshold, "NMS threshold")
    check_model_dir(hf_dir)
    image = load_image(image_path)
    query_image = None if image_query is None else load_image(image_query)
    warnings: list[str] = []
    if detector is None:
        with progress.step("loading model"):
            detector = load_detector(hf_dir)
    with progress.step("detecting"):
        if query_image is not None:
            label = str(image_query)
            found = detect_image_query(
                detector, image, query_image, label, threshold, nms_threshold
            )
            queries = [label]
        else:
            warnings += _truncation_warnings(detector, queries)
            found = detect_text(detector, image, queries, threshold)
    if max_detections is not None:
        found = found[:max_detections]
    height, width = image.shape[:2]
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


# --- pictures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Box:
    box: tuple[float, float, float, float]
    label: str
    score: float
    key: Any  # what picks the colour: the query index, or the label


def draw_detections(
    image: Image.Image | np.ndarray,
    detections: Iterable[Detection | Mapping[str, Any]],
    *,
    show_scores: bool = True,
) -> Image.Image:
    """The image with each detection's box and "label score" drawn on it, one colour per query.

    `detections` are `Detection`s or dicts with `box` [x0, y0, x1, y1] (pixels), `label` (or
    `query`), `score` and optionally `query_index`. The input image is not modified.
    """
    canvas = _as_rgb(image).copy()
    boxes = [_box_of(d) for d in detections]
    _draw_boxes(canvas, boxes, _colours(boxes), show_scores)
    return canvas


def draw_side_by_side(
    image_uint8: np.ndarray,
    left: list[dict[str, Any]],
    right: list[dict[str, Any]],
    left_title: str,
    right_title: str,
) -> Image.Image:
    """Two copies of one image with two sets of detections, titled, for comparing models.

    A label has the same colour in both panels, so matching detections are easy to pair.
    Each detection is a dict with `box` [x0, y0, x1, y1] in pixels, `label` and `score`.
    """
    base = _as_rgb(image_uint8)
    width, height = base.size
    sizes = _sizes(width, height)
    left_boxes = [_box_of(d, use_index=False) for d in left]
    right_boxes = [_box_of(d, use_index=False) for d in right]
    colours = _colours(left_boxes + right_boxes)
    panels = []
    for boxes in (left_boxes, right_boxes):
        panel = base.copy()
        _draw_boxes(panel, boxes, colours, True)
        panels.append(panel)

    title_font = _font(round(sizes.font * 1.25))
    gap = max(8, sizes.font)
    title_height = _text_size(title_font, "Ag")[1] + 2 * sizes.pad + gap // 2
    picture = Image.new("RGB", (2 * width + gap, height + title_height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for index, (panel, title) in enumerate(((panels[0], left_title), (panels[1], right_title))):
        x = index * (width + gap)
        picture.paste(panel, (x, title_height))
        text = _fit_text(title_font, title, width)
        text_width, _ = _text_size(title_font, text)
        draw.text(
            (x + max(0, (width - text_width) // 2), sizes.pad),
            text,
            fill=(20, 20, 20),
            font=title_font,
        )
    return picture


def encode_image(image: Image.Image, path: Path) -> bytes:
    """The picture in the format `path`'s suffix names."""
    fmt = output_format(path)
    buffer = io.BytesIO()
    options = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
    try:
        image.save(buffer, format=fmt, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"{path}: cannot write {fmt} ({exc})") from exc
    return buffer.getvalue()


def save_image(image: Image.Image, path: Path) -> None:
    """Write the picture whole or not at all."""
    from owlvit_cli.atomic import atomic_write_bytes

    data = encode_image(image, path)
    try:
        atomic_write_bytes(path, data)
    except PermissionError as exc:
        raise BadInputError(f"{path}: permission denied") from exc
    except OSError as exc:
        raise BadInputError(f"{path}: cannot write ({exc.strerror or exc})") from exc


@dataclass(frozen=True)
class _Sizes:
    font: int
    line: int
    pad: int


def _sizes(width: int, height: int) -> _Sizes:
    """Font and line width grow with the image, but never below what is readable."""
    scale = math.sqrt(width * height)
    font = max(11, round(scale * 0.026))
    return _Sizes(font=font, line=max(2, round(font / 5)), pad=max(2, round(font / 5)))


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` (Pillow ≥ 10.1); its fixed bitmap font before that."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no size argument
        return ImageFont.load_default()


def _text_size(font: Any, text: str) -> tuple[int, int]:
    left, _, right, bottom = font.getbbox(text)
    return math.ceil(right - min(0, left)), math.ceil(bottom)


def _fit_text(font: Any, text: str, width: int) -> str:
    """Shorten a label with an ellipsis so it never runs off the picture."""
    if _text_size(font, text)[0] <= width or len(text) <= 1:
        return text
    while len(text) > 1 and _text_size(font, text + "…")[0] > width:
        text = text[:-1]
    return text + "…"


def _as_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    return image.convert("RGB")


def _box_of(item: Detection | Mapping[str, Any], use_index: bool = True) -> _Box:
    if isinstance(item, Detection):
        return _Box(item.box, item.query, item.score, item.query_index if use_index else item.query)
    label = str(item.get("label", item.get("query", "")))
    x0, y0, x1, y1 = (float(v) for v in item["box"])
    key = item.get("query_index", label) if use_index else label
    return _Box((x0, y0, x1, y1), label, float(item.get("score", math.nan)), key)


def _colours(boxes: Sequence[_Box]) -> dict[Any, tuple[int, int, int]]:
    """Query indices pick their palette entry directly (stable across images); other keys
    take entries in order of first appearance."""
    colours: dict[Any, tuple[int, int, int]] = {}
    for box in boxes:
        if box.key in colours:
            continue
        if isinstance(box.key, int):
            colours[box.key] = PALETTE[box.key % len(PALETTE)]
        else:
            colours[box.key] = PALETTE[len(colours) % len(PALETTE)]
    return colours


def _draw_boxes(
    canvas: Image.Image,
    boxes: Sequence[_Box],
    colours: Mapping[Any, tuple[int, int, int]],
    show_scores: bool,
) -> None:
    """Boxes with a dark halo (visible on any background), then labels on top of all boxes,
    lowest score first so the best detection is drawn last and stays readable."""
    width, height = canvas.size
    sizes = _sizes(width, height)
    font = _font(sizes.font)
    draw = ImageDraw.Draw(canvas)
    ordered = sorted(boxes, key=lambda b: b.score if not math.isnan(b.score) else -math.inf)
    for item in ordered:
        x0, y0, x1, y1 = _pixel_box(item.box, width, height)
        halo = (x0 - 1, y0 - 1, x1 + 1, y1 + 1)
        draw.rectangle(halo, outline=(0, 0, 0), width=sizes.line + 2)
        draw.rectangle((x0, y0, x1, y1), outline=colours[item.key], width=sizes.line)
    for item in ordered:
        x0, y0, _, _ = _pixel_box(item.box, width, height)
        text = item.label
        if show_scores and not math.isnan(item.score):
            text = f"{text} {item.score:.2f}"
        text = _fit_text(font, text, width - 2 * sizes.pad)
        text_width, text_height = _text_size(font, text)
        label_width, label_height = text_width + 2 * sizes.pad, text_height + 2 * sizes.pad
        lx = min(max(0, x0), max(0, width - label_width))
        ly = y0 - label_height if y0 - label_height >= 0 else y0  # above the box, else inside
        ly = min(ly, max(0, height - label_height))
        colour = colours[item.key]
        draw.rectangle((lx, ly, lx + label_width - 1, ly + label_height - 1), fill=colour)
        draw.text((lx + sizes.pad, ly + sizes.pad), text, fill=_ink(colour), font=font)


def _pixel_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1, 0), width - 1)))
    y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1, 0), height - 1)))
    return round(x0), round(y0), round(x1), round(y1)


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on the label's colour."""
    r, g, b = colour
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)
