"""Prove a converted model equals the scenic-exact Flax model, in three separate questions.

1. mapping: same pixels and token ids into both models, the two known modelling differences
   patched on the transformers side. Only a mapping bug can fail this (~1e-5, scaled by the
   magnitude of the output).
2. stock: the transformers model exactly as users load it, same inputs, with the tolerances
   that the modelling differences allow.
3. processor: the saved transformers processor vs scenic's preprocessing and tokenizer
   (pixels and token ids); with `processor_detections`, also what that does to the top
   detections, at the price of a third forward pass. Informational unless `strict_processor`,
   which implies the detections.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from owlvit_cli import __version__
from owlvit_cli.checkpoint.hashing import start_hashing
from owlvit_cli.errors import BadInputError, ModelDirError
from owlvit_cli.model.spec import ModelSpec
from owlvit_cli.progress import NO_PROGRESS, Progress
from owlvit_cli.scenic import preprocess

DEFAULT_QUERIES = ("a house", "a red car", "a tree", "a cat")
CLIP_MEAN = np.array(preprocess.CLIP_MEAN, np.float32)
CLIP_STD = np.array(preprocess.CLIP_STD, np.float32)
MAPPING_ATOL = 1e-5
STOCK_TOLERANCES = {
    "pred_logits": 2e-4,
    "pred_boxes": 1e-3,
    "objectness_logits": 1e-3,
    "class_embeddings": 1e-3,
    "query_embeddings": 1e-3,
    "feature_map": 1e-3,
    "image_class_embeddings": 1e-3,
    "top_k": 1e-3,
}
STRICT_PROCESSOR_TOLERANCES = {"pixels": 1e-3, "input_ids": 0.0, "top_k": 1e-3}


@dataclass
class Comparison:
    name: str
    level: str
    max_abs: float
    tolerance: float | None
    passed: bool
    note: str = ""


@dataclass
class VerifyInputs:
    """Scenic-side pixels ([0,1] NHWC) and ids, their transformers form, and their origin."""

    images: list[str]
    raw_images: list[np.ndarray | None]
    scenic_pixels: np.ndarray
    queries: list[str]
    input_ids: np.ndarray

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
    top_k: int = 5
    record: bool = False
    processor_detections: bool = False  # run the model on the processor's inputs too

    @property
    def processor_forward(self) -> bool:
        return self.processor_detections or self.strict_processor


def normalize_pixels(pixels_nhwc: np.ndarray) -> np.ndarray:
    """scenic normalises inside its model; transformers takes normalised NCHW pixels."""
    return ((pixels_nhwc - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2).astype(np.float32)


def sample_image_path() -> Path:
    return Path(str(resources.files("owlvit_cli") / "assets" / "sample.png"))


def prepare_inputs(spec: ModelSpec, options: VerifyOptions) -> VerifyInputs:
    """Load images (or .npy pixel arrays) and tokenize queries the way scenic does; one
    all-zero padding query is appended so that the padding path is exercised too."""
    from owlvit_cli.scenic.preprocess import load_image, scenic_preprocess
    from owlvit_cli.scenic.tokenizer import tokenize_queries

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
            image = load_image(path)
            raw.append(image)
            pixels.append(scenic_preprocess(image, size))
    rows: list[list[str | None]] = [[*queries, None] for _ in paths]
    ids = tokenize_queries(rows, spec.text.max_position_embeddings)
    return VerifyInputs([str(p) for p in paths], raw, np.stack(pixels), queries, ids)


def load_pixel_array(path: Path, size: int) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: not a readable .npy array ({exc})") from exc
    if array.shape != (size, size, 3) or not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(
            f"{path}: expected a float array of shape [{size}, {size}, 3] in [0, 1] "
            f"(this model's input size), got {array.dtype} {list(array.shape)}"
        )
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise BadInputError(f"{path}: pixel values must be finite and in [0, 1]")
    return array.astype(np.float32)


def check_same_architecture(spec: ModelSpec, hf_dir: Path) -> None:
    """Different architectures are bad input (exit 2), not a numerical mismatch."""
    from owlvit_cli.convert.hf_files import config_dict
    from owlvit_cli.verify.hf_model import check_model_dir

    found = check_model_dir(hf_dir)
    expected = config_dict(spec)
    keys = {
        "vision_config": (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "patch_size",
            "image_size",
        ),
        "text_config": (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "vocab_size",
        ),
    }
    diffs = [
        f"{part}.{key} {found.get(part, {}).get(key)} ≠ {expected[part][key]}"
        for part, names in keys.items()
        for key in names
        if found.get(part, {}).get(key) != expected[part][key]
    ]
    if found.get("model_type") != expected["model_type"]:
        diffs.insert(0, f"model_type {found.get('model_type')} ≠ {expected['model_type']}")
    if found.get("projection_dim") != expected["projection_dim"]:
        diffs.append(f"projection_dim {found.get('projection_dim')} ≠ {spec.projection_dim}")
    if diffs:
        raise ModelDirError(
            f"{hf_dir} is not the same architecture as the checkpoint (model vs checkpoint): "
            + ", ".join(diffs[:5])
        )


def _normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def output_diffs(
    flax: dict[str, np.ndarray], hf: dict[str, np.ndarray], query_mask: np.ndarray
) -> dict[str, tuple[float, float]]:
    """{name: (max |diff|, magnitude of the reference)} over every compared output."""
    mask = query_mask.astype(bool)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "pred_logits": (
            flax["pred_logits"].transpose(0, 2, 1)[mask],
            hf["pred_logits"].transpose(0, 2, 1)[mask],
        ),
        "pred_boxes": (flax["pred_boxes"], hf["pred_boxes"]),
        "class_embeddings": (flax["class_embeddings"], hf["class_embeddings"]),
        "query_embeddings": (
            _normalized(flax["query_embeddings"][mask]),
            _normalized(hf["query_embeddings"][mask]),
        ),
        "feature_map": (flax["feature_map"], hf["feature_map"]),
    }
    if "objectness_logits" in flax:
        pairs["objectness_logits"] = (flax["objectness_logits"], hf["objectness_logits"])
    if "class_embeddings_unnormalized" in flax:
        pairs["image_class_embeddings"] = (
            flax["class_embeddings_unnormalized"],
            hf["class_embeddings_unnormalized"],
        )
    return {
        name: (float(np.abs(a - b).max()), float(np.abs(a).max())) for name, (a, b) in pairs.items()
    }


def top_detections(outputs: dict[str, np.ndarray], query_mask: np.ndarray, k: int) -> list[dict]:
    """Per image, the k patches with the highest logit over real queries."""
    detections = []
    for b in range(outputs["pred_logits"].shape[0]):
        logits = outputs["pred_logits"][b][:, query_mask[b].astype(bool)]
        best_query = logits.argmax(axis=1)
        scores = logits.max(axis=1)
        order = np.argsort(-scores, kind="stable")[:k]
        detections.append(
            {
                "patches": order.tolist(),
                "queries": best_query[order].tolist(),
                "scores": scores[order].tolist(),
                "boxes": outputs["pred_boxes"][b][order].tolist(),
            }
        )
    return detections


def top_k_agreement(ref: list[dict], other: list[dict], score_tol: float) -> tuple[float, bool]:
    """Same boxes in the same order; a swap is forgiven only between near-tied scores."""
    worst, same = 0.0, True
    for a, b in zip(ref, other, strict=True):
        for i, (pa, pb) in enumerate(zip(a["patches"], b["patches"], strict=True)):
            if pa != pb and abs(a["scores"][i] - b["scores"][i]) > score_tol:
                same = False
        worst = max(worst, float(np.abs(np.array(a["boxes"]) - np.array(b["boxes"])).max()))
    return worst, same


def _compare_level(
    level: str,
    diffs: dict[str, tuple[float, float]],
    tolerance: Callable[[str, float], float],
) -> list[Comparison]:
    rows = []
    for name, (max_abs, scale) in diffs.items():
        tol = tolerance(name, scale)
        rows.append(Comparison(name, level, max_abs, tol, max_abs <= tol))
    return rows


def mapping_tolerance(name: str, scale: float) -> float:
    return MAPPING_ATOL * max(1.0, scale)


@contextmanager
def _timed(timings: dict[str, float], key: str, progress: Progress, label: str) -> Iterator[None]:
    started = time.perf_counter()
    with progress.step(label):
        yield
    timings[key] = round(time.perf_counter() - started, 3)


def run_verification(
    checkpoint: str | os.PathLike[str],
    hf_dir: str | os.PathLike[str],
    options: VerifyOptions | None = None,
    progress: Progress = NO_PROGRESS,
) -> Verification:
    """Run both models; the report is a plain dict (what --json prints)."""
    checkpoint, hf_dir = Path(checkpoint), Path(hf_dir)
    options = options or VerifyOptions()
    unknown = set(options.atol) - set(STOCK_TOLERANCES)
    if unknown:
        raise BadInputError(
            f"--atol names unknown outputs {sorted(unknown)}; known: {', '.join(STOCK_TOLERANCES)}"
        )
    timings: dict[str, float] = {}
    # A recorded report names the checkpoint it verified; hashing costs a core, so only then.
    hasher = start_hashing(Path(checkpoint)) if options.record else None
    spec, runner, inputs = load_reference(checkpoint, options, timings, progress)
    with _timed(timings, "load_hf", progress, "loading the transformers model"):
        from owlvit_cli.verify.hf_model import load_hf_model, load_processor

        check_same_architecture(spec, hf_dir)
        model = load_hf_model(hf_dir)
        has_images = any(raw is not None for raw in inputs.raw_images)
        processor = load_processor(hf_dir) if has_images else None
    with _timed(timings, "flax_compile", progress, "compiling the Flax model"):
        runner.compile(inputs.scenic_pixels, inputs.input_ids)
    with _timed(timings, "flax_forward", progress, "running the Flax model"):
        flax_out = runner.detect(inputs.scenic_pixels, inputs.input_ids, image_only=True)
    with _timed(timings, "hf_forward", progress, "running the transformers model"):
        stock, patched = run_hf_both(model, inputs)
    with _timed(timings, "compare", progress, "comparing"):
        rows, tops = compare_outputs(flax_out, stock, patched, inputs, options)
    flax_top = tops["flax"]
    processor_rows, processor_info = [], {}
    if processor is not None:
        with _timed(timings, "processor", progress, "checking the transformers processor"):
            processor_rows, processor_info = processor_drift(
                model, processor, inputs, flax_top, options
            )
    rows += processor_rows
    report = build_report(
        checkpoint, hf_dir, spec, inputs, rows, timings, flax_top, processor_info, options
    )
    if hasher is not None:
        report["checkpoint_sha256"] = hasher.digest()
    models = {"flax": runner, "hf": model}
    return Verification(report, saved_arrays(inputs, flax_out, stock), inputs, tops, models)


def load_reference(
    checkpoint: Path, options: VerifyOptions, timings: dict[str, float], progress: Progress
) -> tuple[ModelSpec, Any, VerifyInputs]:
    """The Flax model and the inputs. Images and queries are prepared in a second thread while
    jax imports and the weights load: PIL's decoding and scipy's resize release the GIL, so
    that work costs no wall time. `inputs` times only what is left to wait for afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from owlvit_cli.checkpoint.inspection import checkpoint_spec
    from owlvit_cli.checkpoint.reader import open_checkpoint

    with ThreadPoolExecutor(max_workers=1) as background:
        loading = _timed(timings, "load_flax", progress, "loading checkpoint")
        with loading, open_checkpoint(checkpoint) as ckpt:
            spec = checkpoint_spec(ckpt)
            prepared = background.submit(prepare_inputs, spec, options)
            from owlvit_cli.scenic.flax_model import FlaxRunner  # jax: seconds, so timed as loading

            runner = FlaxRunner(spec, ckpt.params_tree(np.float32))
        with _timed(timings, "inputs", progress, "preparing images and queries"):
            inputs = prepared.result()
    return spec, runner, inputs


def compare_outputs(
    flax_out: dict[str, np.ndarray],
    stock: dict[str, np.ndarray],
    patched: dict[str, np.ndarray],
    inputs: VerifyInputs,
    options: VerifyOptions,
) -> tuple[list[Comparison], dict[str, list[dict]]]:
    """Levels 1 and 2: every output and the top-k detections, against their tolerances."""
    mask = inputs.query_mask
    rows = _compare_level("mapping", output_diffs(flax_out, patched, mask), mapping_tolerance)
    tolerances = {**STOCK_TOLERANCES, **options.atol}
    rows += _compare_level(
        "stock", output_diffs(flax_out, stock, mask), lambda name, _: tolerances[name]
    )
    tops = {"flax": top_detections(flax_out, mask, options.top_k)}
    for level, outs, tol in (
        ("mapping", patched, MAPPING_ATOL),
        ("stock", stock, tolerances["top_k"]),
    ):
        tops[level] = top_detections(outs, mask, options.top_k)
        rows.append(top_k_row(level, tops["flax"], tops[level], tol))
    return rows, tops


def top_k_row(level: str, flax_top: list[dict], other: list[dict], tol: float) -> Comparison:
    worst, same = top_k_agreement(flax_top, other, tol)
    note = "" if same else "different detections or order"
    return Comparison("top_k", level, worst, tol, same and worst <= tol, note)


@dataclass
class Verification:
    report: dict[str, Any]
    arrays: dict[str, np.ndarray]
    inputs: VerifyInputs
    top_detections: dict[str, list[dict]]
    # The loaded models, for a caller that runs more on them. Held here rather than freed
    # when verification returns: freeing a compiled XLA program and two sets of weights
    # takes 0.1-0.25 s, which a process about to exit (the CLI) need not spend.
    models: dict[str, Any] = field(default_factory=dict, repr=False)

    def picture(self) -> Any:
        """The first image with the Flax and the stock transformers top detections side by
        side (boxes in the image's own pixels), for a reviewer to see agreement at a glance."""
        from owlvit_cli.detect.run import draw_side_by_side

        raw = self.inputs.raw_images[0]
        image = raw if raw is not None else (self.inputs.scenic_pixels[0] * 255).round()
        image = np.asarray(image, np.uint8)
        left, right = (
            detections_in_pixels(self.top_detections[side][0], self.inputs.queries, image.shape)
            for side in ("flax", "stock")
        )
        return draw_side_by_side(image, left, right, "Flax (scenic-exact)", "transformers (stock)")


def detections_in_pixels(top: dict, queries: list[str], shape: tuple[int, ...]) -> list[dict]:
    """Boxes are relative to the bottom/right-padded square: scale by the longer side."""
    height, width = shape[:2]
    side = max(height, width)
    found = []
    for query, score, (cx, cy, w, h) in zip(
        top["queries"], top["scores"], top["boxes"], strict=True
    ):
        box = [(cx - w / 2) * side, (cy - h / 2) * side, (cx + w / 2) * side, (cy + h / 2) * side]
        box = [
            min(max(v, 0.0), lim)
            for v, lim in zip(box, (width, height, width, height), strict=True)
        ]
        found.append(
            {"box": box, "label": queries[query], "score": float(1 / (1 + np.exp(-score)))}
        )
    return found


SAVED_OUTPUTS = ("pred_logits", "pred_boxes", "objectness_logits", "class_embeddings")


def saved_arrays(inputs: VerifyInputs, flax: dict, hf: dict) -> dict[str, np.ndarray]:
    """What --save-outputs writes: the inputs and both sides' (stock) outputs."""
    arrays = {"pixel_values": inputs.pixel_values, "input_ids": inputs.input_ids}
    for name in SAVED_OUTPUTS:
        if name in flax:
            arrays[f"flax_{name}"] = flax[name]
            arrays[f"hf_{name}"] = hf[name]
    return arrays


def run_hf_both(model: Any, inputs: VerifyInputs) -> tuple[dict, dict]:
    """Stock and scenic-semantics outputs. The towers are identical in both; only the merged
    LayerNorm and the head MLPs differ, so the towers run once and are reused."""
    from owlvit_cli.verify.hf_model import (
        apply_scenic_semantics,
        reuse_tower_outputs,
        run_hf_detection,
        run_hf_image_only,
        stock_semantics,
    )

    with reuse_tower_outputs(model):
        stock = run_hf_detection(model, inputs.pixel_values, inputs.input_ids)
        stock.update(run_hf_image_only(model, inputs.pixel_values))
        with stock_semantics(model):
            apply_scenic_semantics(model)
            patched = run_hf_detection(model, inputs.pixel_values, inputs.input_ids)
            patched.update(run_hf_image_only(model, inputs.pixel_values))
    return stock, patched


def processor_drift(
    model: Any,
    processor: Any,
    inputs: VerifyInputs,
    flax_top: list[dict],
    options: VerifyOptions,
) -> tuple[list[Comparison], dict[str, Any]]:
    """How far the saved transformers processor moves pixels, ids and detections."""
    from PIL import Image

    from owlvit_cli.verify.hf_model import run_hf_detection

    keep = [i for i, raw in enumerate(inputs.raw_images) if raw is not None]
    images = [Image.fromarray(inputs.raw_images[i]) for i in keep]
    batch = processor(
        text=[inputs.queries] * len(keep),
        images=images,
        return_tensors="np",
        padding="max_length",
        truncation=True,
    )
    pixel_values = np.asarray(batch["pixel_values"], np.float32)
    ids = np.asarray(batch["input_ids"]).reshape(len(keep), len(inputs.queries), -1)
    scenic_ids = inputs.input_ids[keep][:, : len(inputs.queries)]
    scenic_pixels = inputs.pixel_values[keep]
    pixel_diff = float((np.abs(pixel_values - scenic_pixels) * CLIP_STD[:, None, None]).max())
    ids_differ = int((ids != scenic_ids).any(axis=-1).sum())
    tol = STRICT_PROCESSOR_TOLERANCES

    def row(name: str, value: float, within: bool, note: str) -> Comparison:
        strict = options.strict_processor
        return Comparison(
            name, "processor", value, tol[name] if strict else None, within or not strict, note
        )

    rows = [
        row("pixels", pixel_diff, pixel_diff <= tol["pixels"], "max |diff| in [0, 1] units"),
        row("input_ids", float(ids_differ), ids_differ == 0, "queries tokenized differently"),
    ]
    hf_top = None
    if options.processor_forward:
        outputs = run_hf_detection(model, pixel_values, ids)
        hf_top = top_detections(outputs, np.ones(ids.shape[:2], bool), options.top_k)
        ref_top = [flax_top[i] for i in keep]
        worst, same = top_k_agreement(ref_top, hf_top, tol["top_k"])
        note = "same top detections" if same else "top detections differ"
        rows.append(row("top_k", worst, same and worst <= tol["top_k"], note))
    info = {
        "processor_class": type(processor).__name__,
        "image_processor_class": type(processor.image_processor).__name__,
        "top_detections": hf_top,
    }
    return rows, info


def build_report(
    checkpoint: Path,
    hf_dir: Path,
    spec: ModelSpec,
    inputs: VerifyInputs,
    rows: list[Comparison],
    timings: dict[str, float],
    flax_top: list[dict],
    processor_info: dict[str, Any],
    options: VerifyOptions,
) -> dict[str, Any]:
    levels = {}
    for level in ("mapping", "stock", "processor"):
        members = [r for r in rows if r.level == level]
        if members:
            levels[level] = {"passed": all(r.passed for r in members)}
    return {
        "passed": all(r.passed for r in rows),
        # Names, not paths: the report is published with the model (push) and local
        # paths are nobody else's business.
        "checkpoint": Path(checkpoint).name,
        "hf_dir": Path(hf_dir).name,
        "version": spec.version,
        "images": [Path(image).name for image in inputs.images],
        "queries": inputs.queries,
        "strict_processor": options.strict_processor,
        "processor_detections": options.processor_forward,
        "levels": levels,
        "outputs": [asdict(r) for r in rows],
        "failed": [f"{r.level}/{r.name}" for r in rows if not r.passed],
        "top_detections": {"flax": flax_top, "hf_processor": processor_info.get("top_detections")},
        "processor": {k: v for k, v in processor_info.items() if k != "top_detections"},
        "timings": timings,
        "tool_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def failure_summary(report: dict[str, Any]) -> str:
    bad = [r for r in report["outputs"] if not r["passed"]]
    parts = [
        f"{r['level']}/{r['name']} max |diff| {r['max_abs']:.3g} > {r['tolerance']:.3g}"
        for r in bad[:6]
    ]
    return "verification failed: " + "; ".join(parts)
