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

from owlvit_cli.detect.image_query import (
    ImageQueries,
    QueryExample,
    check_embedding_width,
    embed_examples,
    load_query_embedding,
    pair_examples,
    save_query_embedding,
    score_image,
)
from owlvit_cli.detect.loading import Detector, DetectorLoading  # Detector: re-exported
from owlvit_cli.detect.options import (  # re-exported
    DEFAULT_NMS_THRESHOLD,
    DEFAULT_PREPROCESSING,
    DEFAULT_THRESHOLD,
    PREPROCESSINGS,
)
from owlvit_cli.errors import BadInputError
from owlvit_cli.progress import LAYERS, NO_PROGRESS, Progress, forward_detail, step_name
from owlvit_cli.runtime.detection import Detection
from owlvit_cli.scenic.image_query import NMS_IOU_THRESHOLD, Box, parse_box
from owlvit_cli.scenic.preprocess import load_image

# Query modes, as `--json` names them.
TEXT, IMAGE, IMAGE_BOX, EMBEDDING = "text", "image", "image_box", "embedding"
# The NMS each mode applies unless told otherwise: none for text (as transformers), its own
# for transformers' box-free rule, scenic's for the modes that follow scenic's notebook.
DEFAULT_NMS = {TEXT: None, IMAGE: DEFAULT_NMS_THRESHOLD, IMAGE_BOX: NMS_IOU_THRESHOLD}
DEFAULT_NMS[EMBEDDING] = NMS_IOU_THRESHOLD


@dataclass
class DetectionResult:
    """What `detect` found, in the form `--json` prints."""

    model_dir: Path
    image_path: Path
    image_size: tuple[int, int]  # (width, height)
    mode: str  # TEXT, IMAGE (transformers' rule), IMAGE_BOX (scenic's) or EMBEDDING
    queries: list[str]
    threshold: float
    detections: list[Detection]
    query_images: list[Path] = field(default_factory=list)
    total: int = 0  # boxes above the threshold, before `max_detections` kept the best
    max_detections: int | None = None
    nms_threshold: float | None = None
    preprocessing: str = DEFAULT_PREPROCESSING
    clip_to_image: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    image_queries: ImageQueries | None = None  # the boxes' chosen embeddings
    query_embedding: Path | None = None  # a saved embedding that was the query
    saved_query_embedding: Path | None = None

    @property
    def query_image(self) -> Path | None:
        return self.query_images[0] if self.query_images else None

    def to_json(self) -> dict[str, Any]:
        width, height = self.image_size
        return {
            "model": str(self.model_dir),
            "image": str(self.image_path),
            "image_size": {"width": width, "height": height},
            "mode": self.mode,
            "queries": list(self.queries),
            "query_image": None if self.query_image is None else str(self.query_image),
            "query_images": [str(p) for p in self.query_images],
            "query_boxes": [] if self.image_queries is None else self.image_queries.to_json(),
            "query_embedding": _optional(self.query_embedding),
            "saved_query_embedding": _optional(self.saved_query_embedding),
            "threshold": self.threshold,
            "max_detections": self.max_detections,
            "nms_threshold": self.nms_threshold,
            "preprocessing": self.preprocessing,
            "clip_to_image": self.clip_to_image,
            "total": self.total,
            "detections": [d.to_json() for d in self.detections],
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }


def validate_queries(
    queries: str | Sequence[str] | None,
    image_query: Sequence[Path] | Path | None,
    query_embedding: Path | None = None,
) -> list[str]:
    """Exactly one kind of query: text, example images, or a saved embedding; text queries
    must say something. A single string is one query, not one per character."""
    queries = [queries] if isinstance(queries, str) else list(queries or [])
    for index, query in enumerate(queries):
        if not isinstance(query, str):
            raise BadInputError(f"query {index + 1} is not text: {query!r}")
    kinds = [bool(queries), bool(image_queries(image_query)), query_embedding is not None]
    if sum(kinds) > 1:
        raise BadInputError(
            "give one kind of query: text queries, an image query or a saved query embedding"
        )
    if not any(kinds):
        raise BadInputError(
            "give at least one text query (or an image query)",
            hint="--query TEXT, --image-query PATH or --query-embedding FILE.npy",
        )
    for index, query in enumerate(queries):
        if not query.strip():
            raise BadInputError(f"query {index + 1} is empty")
    return queries


def image_queries(image_query: Sequence[Path] | Path | None) -> list[Path]:
    """One query image or several, as paths."""
    if image_query is None:
        return []
    if isinstance(image_query, (str, os.PathLike)):
        return [Path(image_query)]
    return [Path(p) for p in image_query]


def validate_query_boxes(
    query_boxes: Sequence[Box | str], query_images: Sequence[Path], save_to: Path | None
) -> list[Box]:
    """Boxes as numbers; they need the query image they are drawn on, and several query
    images need a box each (transformers' box-free rule takes one image)."""
    boxes = [parse_box(b) if isinstance(b, str) else tuple(map(float, b)) for b in query_boxes]
    if boxes and not query_images:
        raise BadInputError(
            "a query box needs the query image it is drawn on", hint="--image-query IMAGE"
        )
    if len(query_images) > 1 and not boxes:
        raise BadInputError(
            "several query images need a query box each",
            hint="--query-box X0,Y0,X1,Y1 once per --image-query",
        )
    if save_to is not None and not boxes:
        raise BadInputError(
            "saving a query embedding needs a query box to choose it from",
            hint="--query-box X0,Y0,X1,Y1 (the whole query image: 0,0,WIDTH,HEIGHT)",
        )
    return boxes  # type: ignore[return-value]


def validate_threshold(threshold: float, name: str = "threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise BadInputError(f"{name} must be a number between 0 and 1; got {threshold!r}")
    if not (0.0 <= threshold <= 1.0) or math.isnan(threshold):
        raise BadInputError(f"{name} must be between 0 and 1; got {threshold:g}")
    return float(threshold)


def validate_max_detections(max_detections: int | None) -> int | None:
    if max_detections is not None and (
        isinstance(max_detections, bool) or not isinstance(max_detections, int)
    ):
        raise BadInputError(
            f"the number of detections must be a whole number; got {max_detections!r}"
        )
    if max_detections is not None and max_detections < 1:
        raise BadInputError(f"the number of detections must be at least 1; got {max_detections}")
    return max_detections


def load_detector(hf_dir: Path, *, checked: bool = False) -> Detector:
    """The stock model and its saved processor, offline. `checked`: the caller has run
    `check_model_dir` on `hf_dir`."""
    from owlvit_cli.model.model_dir import check_model_dir

    weights = [] if checked else check_model_dir(hf_dir)[2]
    return DetectorLoading(hf_dir, weights).detector()


def _input_size(config: dict[str, Any]) -> int | None:
    """The model's input size (pixels a side) as config.json gives it, if it gives one."""
    vision = config.get("vision_config")
    size = vision.get("image_size") if isinstance(vision, dict) else None
    return size if isinstance(size, int) and size > 0 else None


def validate_preprocessing(preprocessing: str) -> str:
    if preprocessing not in PREPROCESSINGS:
        raise BadInputError(
            f"unknown preprocessing {preprocessing!r}; choose one of {', '.join(PREPROCESSINGS)}"
        )
    return preprocessing


def check_processor_can_take(
    image: np.ndarray, preprocessing: str, config: dict[str, Any], version: int
) -> None:
    """The saved processor builds the padded square (and v2's blurs it): refuse a sliver, or a
    photo far larger than the model's input, rather than hang on it."""
    from owlvit_cli.runtime.hf_model import processor_square_refusal

    why = processor_square_refusal(*image.shape[:2], _input_size(config), blurs=version == 2)
    if preprocessing == "processor" and why:
        raise BadInputError(why, hint="use --preprocessing notebook or evaluator")


def model_pixels(detector: Detector, image: np.ndarray, preprocessing: str) -> Any:
    """The normalised NCHW pixel tensor the model sees for `image` under `preprocessing`."""
    import torch

    if preprocessing == "processor":
        return processor_pixels(detector.processor, image)
    size = int(detector.model.config.vision_config.image_size)
    return torch.from_numpy(scenic_pixels(image, size, preprocessing))


def processor_pixels(processor: Any, image: np.ndarray) -> Any:
    """What the saved processor makes of `image`: the pixels Hub users' models see."""
    from owlvit_cli.runtime.pixels import processor_pixels as image_processor_pixels

    return image_processor_pixels(processor.image_processor, image)


def scenic_pixels(image: np.ndarray, size: int, preprocessing: str) -> np.ndarray:
    """scenic's pipeline `preprocessing`, normalised as transformers takes it (NCHW)."""
    from owlvit_cli.runtime.pixels import normalize_pixels
    from owlvit_cli.scenic.preprocess import preprocess

    return normalize_pixels(preprocess(image, size, preprocessing)[None])  # type: ignore[arg-type]


def load_with_pixels(
    hf_dir: Path, weights: list[str], image: np.ndarray, preprocessing: str, size: int | None
) -> tuple[Detector, Any]:
    """The detector, and `image`'s pixels computed while its weights load (`detect.loading`).
    `size`: the model's input size where config.json gives it (else transformers' default,
    known once the model is)."""
    loading = DetectorLoading(hf_dir, weights)
    processor = loading.processor()  # torch and transformers are imported by then
    if preprocessing == "processor":
        pixels = processor_pixels(processor, image)
    elif size is None:
        detector = loading.detector()
        return detector, model_pixels(detector, image, preprocessing)
    else:
        import torch

        pixels = torch.from_numpy(scenic_pixels(image, size, preprocessing))
    return loading.detector(), pixels  # the pixels first: they are what overlaps the load


def detect_text(
    detector: Detector,
    image: np.ndarray,
    queries: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    preprocessing: str = DEFAULT_PREPROCESSING,
    clip_to_image: bool = False,
    pixel_values: Any = None,
) -> list[Detection]:
    """Text-conditioned detection on a uint8 RGB image; best query per box, best box first.
    `pixel_values`: `model_pixels` of the image, where the caller has them already."""
    import torch

    processor = detector.processor
    inputs = processor(text=list(queries), return_tensors="pt", truncation=True)
    inputs["pixel_values"] = _pixels(detector, image, preprocessing, pixel_values)
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
    pixel_values: Any = None,
) -> list[Detection]:
    """One-shot detection: find things like `query_image` (an example crop) in `image`
    (`pixel_values`: as for `detect_text`).

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
    pixels = _pixels(detector, image, preprocessing, pixel_values)
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


def _pixels(detector: Detector, image: np.ndarray, preprocessing: str, given: Any) -> Any:
    return model_pixels(detector, image, preprocessing) if given is None else given


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
    queries: str | Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    image_query: Sequence[Path] | Path | None = None,
    query_boxes: Sequence[Box | str] = (),
    query_embedding: Path | None = None,
    save_query_embedding_to: Path | None = None,
    max_detections: int | None = None,
    nms_threshold: float | None = None,
    preprocessing: str = DEFAULT_PREPROCESSING,
    clip_to_image: bool = False,
    detector: Detector | None = None,
    progress: Progress = NO_PROGRESS,
) -> DetectionResult:
    """Detect `queries`, or things like examples: `image_query` images with `query_boxes` in
    their pixels (scenic's choice of embedding), one `image_query` without a box
    (transformers' rule), or a `query_embedding` saved earlier (.npy).

    All inputs are checked (cheaply) before the model is loaded, so a typo fails in
    milliseconds. `progress` hears the slow parts (a spinner in the CLI); `detector` lets a caller
    reuse a loaded model. `nms_threshold` (None: the mode's default) applies to example and
    embedding queries only.
    """
    from owlvit_cli.model.model_dir import check_model_dir

    start = time.perf_counter()
    hf_dir, image_path = Path(hf_dir), Path(image)
    query_paths = image_queries(image_query)
    embedding_path = None if query_embedding is None else Path(query_embedding)
    save_to = None if save_query_embedding_to is None else Path(save_query_embedding_to)
    boxes = validate_query_boxes(query_boxes, query_paths, save_to)
    queries = validate_queries(queries, query_paths, embedding_path)
    mode = _mode(queries, boxes, query_paths)
    threshold = validate_threshold(threshold)
    max_detections = validate_max_detections(max_detections)
    nms = DEFAULT_NMS[mode] if nms_threshold is None else nms_threshold
    if nms is not None:
        nms = validate_threshold(nms, "NMS threshold")
    preprocessing = validate_preprocessing(preprocessing)
    config, version, weights = check_model_dir(hf_dir)
    pixels = load_image(image_path)
    query_pictures = {path: load_image(path) for path in dict.fromkeys(query_paths)}
    examples = _examples(query_paths, boxes, query_pictures)
    saved = None if embedding_path is None else load_query_embedding(embedding_path)
    if saved is not None:
        check_embedding_width(saved, int(config["projection_dim"]), str(embedding_path))
    for picture in (pixels, *query_pictures.values()):
        check_processor_can_take(picture, preprocessing, config, version)
    if detector is None:
        with progress.step("loading model"):
            size = _input_size(config)
            detector, image_pixels = load_with_pixels(hf_dir, weights, pixels, preprocessing, size)
    else:
        image_pixels = model_pixels(detector, pixels, preprocessing)
    how = {
        "preprocessing": preprocessing,
        "clip_to_image": clip_to_image,
        "pixel_values": image_pixels,
    }
    warnings: list[str] = []
    chosen = None
    with progress.step(step_name("detecting", _forward_detail(detector, queries))) as step:
        from owlvit_cli.runtime.hf_model import encoder_layers, layer_progress

        vision, text = (len(layers) for layers in encoder_layers(detector.model))
        step.set_total(_forward_layers(mode, vision, text, len(query_pictures)), LAYERS)
        with layer_progress([detector.model], step.advance):
            if examples:
                chosen = embed_examples(
                    detector.model, examples, lambda im: model_pixels(detector, im, preprocessing)
                )
                queries = chosen.labels
                found = detect_embeddings(
                    detector, pixels, chosen.embeddings, queries, threshold, nms, **how
                )
            elif saved is not None:
                queries = _embedding_labels(embedding_path, len(saved))  # type: ignore[arg-type]
                found = detect_embeddings(detector, pixels, saved, queries, threshold, nms, **how)
            elif query_paths:
                label = str(query_paths[0])
                found = detect_image_query(
                    detector, pixels, query_pictures[query_paths[0]], label, threshold, nms, **how
                )
                queries = [label]
            else:
                warnings += _truncation_warnings(detector, queries)
                found = detect_text(detector, pixels, queries, threshold, **how)
    if save_to is not None and chosen is not None:
        save_query_embedding(save_to, chosen.embeddings)
    total = len(found)
    if max_detections is not None:
        found = found[:max_detections]
    height, width = pixels.shape[:2]
    return DetectionResult(
        model_dir=hf_dir,
        image_path=image_path,
        image_size=(width, height),
        mode=mode,
        queries=queries,
        threshold=threshold,
        detections=found,
        query_images=query_paths,
        total=total,
        max_detections=max_detections,
        nms_threshold=nms,
        preprocessing=preprocessing,
        clip_to_image=clip_to_image,
        seconds=time.perf_counter() - start,
        warnings=warnings,
        image_queries=chosen,
        query_embedding=embedding_path,
        saved_query_embedding=save_to,
    )


def detect_embeddings(
    detector: Detector,
    image: np.ndarray,
    embeddings: np.ndarray,
    labels: list[str],
    threshold: float = DEFAULT_THRESHOLD,
    nms_threshold: float | None = NMS_IOU_THRESHOLD,
    *,
    preprocessing: str = DEFAULT_PREPROCESSING,
    clip_to_image: bool = False,
    pixel_values: Any = None,
) -> list[Detection]:
    """Detection against [Q, E] query embeddings (from example boxes or a saved file), as
    scenic's notebook scores them: the class head, best query per box, NMS (`pixel_values`:
    as for `detect_text`)."""
    pixels = _pixels(detector, image, preprocessing, pixel_values)
    found = score_image(
        detector.model,
        detector.processor.image_processor,
        pixels,
        embeddings,
        image.shape,
        threshold,
        1.0 if nms_threshold is None else nms_threshold,
    )
    return _detections(found, image, labels, clip_to_image)


def embed_query_box(
    hf_dir: Path,
    image_path: Path,
    box: Box | str,
    *,
    preprocessing: str = DEFAULT_PREPROCESSING,
    detector: Detector | None = None,
) -> np.ndarray:
    """The [E] query embedding scenic's notebook takes for `box` ([x0, y0, x1, y1] in the
    image's pixels): reusable across images and runs with `detect(query_embedding=...)` once
    saved, or with `detect_embeddings`."""
    from owlvit_cli.model.model_dir import check_model_dir

    hf_dir, image_path = Path(hf_dir), Path(image_path)
    preprocessing = validate_preprocessing(preprocessing)
    (parsed,) = validate_query_boxes([box], [image_path], None)
    config, version, _ = check_model_dir(hf_dir)
    picture = load_image(image_path)
    examples = _examples([image_path], [parsed], {image_path: picture})
    check_processor_can_take(picture, preprocessing, config, version)
    detector = detector or load_detector(hf_dir, checked=True)
    chosen = embed_examples(
        detector.model, examples, lambda im: model_pixels(detector, im, preprocessing)
    )
    return chosen.embeddings[0]


def _mode(queries: list[str], boxes: list[Box], query_paths: list[Path]) -> str:
    if queries:
        return TEXT
    if boxes:
        return IMAGE_BOX
    return IMAGE if query_paths else EMBEDDING


def _examples(
    query_paths: list[Path], boxes: list[Box], pictures: dict[Path, np.ndarray]
) -> list[QueryExample]:
    """Each box with its query image; a box that cannot stand for anything on its image is
    refused here, before the model loads."""
    from owlvit_cli.scenic.image_query import relative_box_yxyx

    if not boxes:
        return []
    examples = [QueryExample(p, pictures[p], b) for p, b in pair_examples(query_paths, boxes)]
    for example in examples:
        relative_box_yxyx(example.box, *example.image.shape[:2])
    return examples


def _embedding_labels(path: Path, count: int) -> list[str]:
    return [path.name] if count == 1 else [f"{path.name}[{i}]" for i in range(count)]


def _optional(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _forward_layers(mode: str, vision: int, text: int, query_images: int) -> int:
    """The encoder layers a detection runs: the text tower for text queries; the vision tower
    once for the image, and once more per query image."""
    if mode == TEXT:
        return vision + text
    if mode == IMAGE:
        return 2 * vision  # the example crop, then the image
    return (1 + query_images) * vision


def _forward_detail(detector: Detector, queries: Sequence[str]) -> str:
    """What detection runs on: the device, the model's input size and its patches."""
    from owlvit_cli.runtime.hf_model import model_device

    vision = detector.model.config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    device = model_device(detector.model)
    return forward_detail(device, 1, vision.image_size, patches, len(queries) or None)


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
