"""How two models' outputs are compared, level by level (the tolerances: `verify.tolerances`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from owlvit_cli.runtime.pixels import CLIP_STD
from owlvit_cli.verify.inputs import VerifyInputs, VerifyOptions
from owlvit_cli.verify.tolerances import (
    ATOL_SOURCE,
    DEFAULT_SOURCE,
    MAPPING_ATOL,
    MAPPING_RULE,
    STOCK_TOLERANCES_BY_DTYPE,
    STRICT_PROCESSOR_TOLERANCES,
)

if TYPE_CHECKING:
    from owlvit_cli.checkpoint.interface import Checkpoint


@dataclass(frozen=True)
class Tolerances:
    """The stock level's tolerances for one directory's dtype, and where each comes from."""

    dtype: str
    values: dict[str, float]
    sources: dict[str, str]

    @classmethod
    def for_dtype(cls, dtype: str, overrides: dict[str, float]) -> Tolerances:
        defaults = STOCK_TOLERANCES_BY_DTYPE[dtype]
        values = {**defaults, **overrides}
        default_source = DEFAULT_SOURCE.format(dtype=dtype)
        sources = {k: ATOL_SOURCE if k in overrides else default_source for k in values}
        return cls(dtype, values, sources)


@dataclass
class Comparison:
    name: str
    level: str
    max_abs: float
    tolerance: float | None
    passed: bool
    note: str = ""


def finite_weights_row(ckpt: Checkpoint) -> Comparison:
    """NaN or Inf in any weight fails verification, even where the sample inputs never reach
    it (an embedding row of a token no query uses): users' inputs will."""
    from owlvit_cli.checkpoint.inspection import non_finite_tensors

    bad = non_finite_tensors(ckpt)
    note = "" if not bad else "NaN/Inf in " + ", ".join(bad[:3]) + (" …" if len(bad) > 3 else "")
    return Comparison("finite_weights", "mapping", float(len(bad)), 0.0, not bad, note)


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
    if "image_query_logits" in flax:
        for name in ("image_query_embedding", "image_query_logits"):
            pairs[name] = (flax[name], hf[name])
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
    """Same boxes in the same order; a swap is forgiven only between near-tied scores, and
    boxes are compared where both sides picked the same patch (a forgiven swap puts two
    different patches' boxes side by side, which says nothing about the model)."""
    worst, same = 0.0, True
    for a, b in zip(ref, other, strict=True):
        for i, (pa, pb) in enumerate(zip(a["patches"], b["patches"], strict=True)):
            if pa != pb:
                same = same and abs(a["scores"][i] - b["scores"][i]) <= score_tol
                continue
            diff = np.abs(np.array(a["boxes"][i]) - np.array(b["boxes"][i])).max()
            worst = max(worst, float(diff))
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


@dataclass
class FlaxOutputs:
    """The references: the Flax model on the checkpoint's float32 params, and on the same
    params rounded to the directory's dtype (the same object for a float32 directory)."""

    float32: dict[str, np.ndarray]
    rounded: dict[str, np.ndarray]


def compare_outputs(
    flax: FlaxOutputs,
    stock: dict[str, np.ndarray],
    patched: dict[str, np.ndarray],
    inputs: VerifyInputs,
    options: VerifyOptions,
    tolerances: Tolerances,
) -> tuple[list[Comparison], dict[str, list[dict]]]:
    """Levels 1 and 2 (every output and the top-k detections, against their tolerances), and
    for a float16/bfloat16 directory the informational precision line.

    mapping: patched transformers (float32 compute) vs Flax on the rounded params, so the
    stored dtype costs nothing here and a misplaced tensor still shows at 1e-5.
    stock: transformers as loaded by default (stored dtype) vs Flax on the float32 params."""
    mask = inputs.query_mask
    values = tolerances.values
    rows = _compare_level("mapping", output_diffs(flax.rounded, patched, mask), mapping_tolerance)
    rows += _compare_level(
        "stock", output_diffs(flax.float32, stock, mask), lambda name, _: values[name]
    )
    tops = {
        "flax": top_detections(flax.float32, mask, options.top_k),
        "flax_rounded": top_detections(flax.rounded, mask, options.top_k),
    }
    tops["mapping"] = top_detections(patched, mask, options.top_k)
    rows.append(top_k_row("mapping", tops["flax_rounded"], tops["mapping"], MAPPING_ATOL))
    tops["stock"] = top_detections(stock, mask, options.top_k)
    rows.append(top_k_row("stock", tops["flax"], tops["stock"], values["top_k"]))
    if "image_query_box" in flax.float32:
        rows += image_query_rows("mapping", flax.rounded, patched, options.top_k, MAPPING_ATOL)
        rows += image_query_rows("stock", flax.float32, stock, options.top_k, values["top_k"])
    if flax.rounded is not flax.float32:
        precision = output_diffs(flax.float32, flax.rounded, mask)
        rows += [
            Comparison(name, "precision", diff, None, True) for name, (diff, _) in precision.items()
        ]
    return rows, tops


def top_k_row(level: str, flax_top: list[dict], other: list[dict], tol: float) -> Comparison:
    worst, same = top_k_agreement(flax_top, other, tol)
    note = "" if same else "different detections or order"
    return Comparison("top_k", level, worst, tol, same and worst <= tol, note)


def image_query_rows(
    level: str, ref: dict[str, np.ndarray], other: dict[str, np.ndarray], k: int, tol: float
) -> list[Comparison]:
    """The image-conditioned check's own rows: the same predicted box chosen for every
    example (exactly), and the same top-k detections against that embedding."""
    ref_boxes, other_boxes = ref["image_query_box"], other["image_query_box"]
    differ = int((ref_boxes != other_boxes).sum())
    note = (
        ""
        if not differ
        else f"Flax chose {ref_boxes.tolist()}, transformers {other_boxes.tolist()}"
    )
    box_row = Comparison("image_query_box", level, float(differ), 0.0, not differ, note)
    worst, same = top_k_agreement(image_query_top(ref, k), image_query_top(other, k), tol)
    note = "" if same else "different detections or order"
    top_row = Comparison("image_query_top_k", level, worst, tol, same and worst <= tol, note)
    return [box_row, top_row]


def image_query_top(outputs: dict[str, np.ndarray], k: int) -> list[dict]:
    """The top-k patches of the image-conditioned logits, picked as the text path's are."""
    logits = outputs["image_query_logits"]
    plain = {"pred_logits": logits, "pred_boxes": outputs["pred_boxes"]}
    return top_detections(plain, np.ones(logits.shape[::2], bool), k)


PIPELINE_NOTES = {
    "notebook": "scenic notebook: pad 0.5, anti-aliased resize",
    "evaluator": "scenic evaluator: bilinear resize, pad 0.0",
}


def processor_drift(
    model: Any,
    processor: Any,
    inputs: VerifyInputs,
    scenic_top: Callable[[str, list[int], np.ndarray], list[dict]],
    options: VerifyOptions,
) -> tuple[list[Comparison], dict[str, Any]]:
    """How far the saved transformers processor moves pixels, ids and detections, against
    each of scenic's two preprocessings (rows `pixels_notebook`, `pixels_evaluator`, and with
    detections `top_k_notebook`, `top_k_evaluator`). `--strict-processor` holds the processor
    to the pipeline verify was run with; the other pipeline's rows are information.
    `scenic_top(pipeline, image_indices, pixels_nhwc)` gives the Flax model's top
    detections. Images the processor would pad to a huge square are left out (`skipped_images`)."""
    from PIL import Image

    from owlvit_cli.runtime.hf_model import processor_square_refusal, run_hf_detection
    from owlvit_cli.runtime.pixels import normalize_pixels
    from owlvit_cli.scenic.preprocess import PIPELINES, preprocess

    keep = [i for i, raw in enumerate(inputs.raw_images) if raw is not None]
    size = inputs.scenic_pixels.shape[1]
    blurs = type(processor.image_processor).__name__.startswith("Owlv2")
    skipped = {
        Path(inputs.images[i]).name: why
        for i in keep
        if (why := processor_square_refusal(*inputs.raw_images[i].shape[:2], size, blurs))
    }
    keep = [i for i in keep if Path(inputs.images[i]).name not in skipped]
    if not keep:
        return [], {"skipped_images": skipped}
    raws = [inputs.raw_images[i] for i in keep]
    batch = processor(
        text=[inputs.queries] * len(keep),
        images=[Image.fromarray(raw) for raw in raws],
        return_tensors="np",
        padding="max_length",
        truncation=True,
    )
    pixel_values = np.asarray(batch["pixel_values"], np.float32)
    ids = np.asarray(batch["input_ids"]).reshape(len(keep), len(inputs.queries), -1)
    scenic_ids = inputs.input_ids[keep][:, : len(inputs.queries)]
    size = pixel_values.shape[-1]
    scenic_pixels = {
        name: inputs.scenic_pixels[keep]
        if name == inputs.preprocessing
        else np.stack([preprocess(raw, size, name) for raw in raws])
        for name in PIPELINES
    }
    ids_differ = int((ids != scenic_ids).any(axis=-1).sum())
    tol = STRICT_PROCESSOR_TOLERANCES

    def row(name: str, value: float, within: bool, note: str, pipeline: str | None) -> Comparison:
        strict = options.strict_processor and pipeline in (None, inputs.preprocessing)
        kind = name if pipeline is None else name.removesuffix(f"_{pipeline}")
        tolerance = tol[kind] if strict else None
        return Comparison(name, "processor", value, tolerance, within or not strict, note)

    rows = []
    for name, pixels in scenic_pixels.items():
        diff = float(
            (np.abs(pixel_values - normalize_pixels(pixels)) * CLIP_STD[:, None, None]).max()
        )
        note = f"vs {PIPELINE_NOTES[name]}; max |diff| in [0, 1] units"
        rows.append(row(f"pixels_{name}", diff, diff <= tol["pixels"], note, name))
    rows.append(
        row("input_ids", float(ids_differ), ids_differ == 0, "queries tokenized differently", None)
    )
    hf_top = None
    scenic_tops: dict[str, list[dict]] = {}
    if options.processor_forward:
        outputs = run_hf_detection(model, pixel_values, ids)
        hf_top = top_detections(outputs, np.ones(ids.shape[:2], bool), options.top_k)
        for name, pixels in scenic_pixels.items():
            scenic_tops[name] = scenic_top(name, keep, pixels)
            worst, same = top_k_agreement(scenic_tops[name], hf_top, tol["top_k"])
            verdict = "same top detections" if same else "top detections differ"
            note = f"vs Flax on {PIPELINE_NOTES[name]}: {verdict}"
            rows.append(row(f"top_k_{name}", worst, same and worst <= tol["top_k"], note, name))
    info = {
        "processor_class": type(processor).__name__,
        "image_processor_class": type(processor.image_processor).__name__,
        "reference_preprocessing": inputs.preprocessing,
        "top_detections": hf_top,
        "scenic_top_detections": scenic_tops or None,
        "skipped_images": skipped,
    }
    return rows, info


def describe_levels(
    levels: dict[str, dict[str, Any]], tolerances: Tolerances, stock_dtype: str
) -> dict[str, dict[str, Any]]:
    """Each level's verdict with what it compared and the tolerances it used, and where they
    come from: what the terminal, --json and the model card (via --record) show."""
    dtype = tolerances.dtype
    about: dict[str, dict[str, Any]] = {
        "mapping": {
            "reference": f"Flax, checkpoint params rounded to {dtype}, float32 compute",
            "compared": "transformers with scenic's head GELU and LayerNorm eps, float32 compute",
            "tolerance": MAPPING_RULE,
            "tolerance_source": "built-in",
        },
        "stock": {
            "reference": "Flax, checkpoint params in float32",
            "compared": f"transformers as from_pretrained loads it ({stock_dtype})",
            "tolerances": dict(tolerances.values),
            "tolerance_sources": dict(tolerances.sources),
        },
        "precision": {
            "reference": "Flax, checkpoint params in float32",
            "compared": f"Flax, checkpoint params rounded to {dtype}, float32 compute",
            "informational": True,
        },
    }
    return {level: {**verdict, **about.get(level, {})} for level, verdict in levels.items()}
