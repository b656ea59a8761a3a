"""How two models' outputs are compared, level by level, and the tolerances that apply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from owlvit_cli.verify.inputs import CLIP_STD, VerifyInputs, VerifyOptions

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


def finite_weights_row(checkpoint: Path) -> Comparison:
    """NaN or Inf in any weight fails verification, even where the sample inputs never reach
    it (an embedding row of a token no query uses): users' inputs will."""
    from owlvit_cli.checkpoint.inspection import non_finite_tensors
    from owlvit_cli.checkpoint.reader import open_checkpoint

    with open_checkpoint(checkpoint) as ckpt:
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
