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

import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from owlvit_cli.checkpoint.hashing import start_hashing
from owlvit_cli.errors import BadInputError, ModelDirError
from owlvit_cli.interrupts import raise_if_interrupted
from owlvit_cli.model.spec import ModelSpec
from owlvit_cli.progress import NO_PROGRESS, Progress
from owlvit_cli.testing.hold import hold_point
from owlvit_cli.verify.compare import (
    STOCK_TOLERANCES,
    compare_outputs,
    finite_weights_row,
    processor_drift,
)
from owlvit_cli.verify.inputs import VerifyInputs, VerifyOptions, prepare_inputs
from owlvit_cli.verify.report import (
    Verification,
    build_report,
    check_output_paths,
    saved_arrays,
    write_outputs,
)


def check_same_architecture(spec: ModelSpec, hf_dir: Path) -> None:
    """Different architectures are bad input (exit 2), not a numerical mismatch."""
    from owlvit_cli.convert.hf_files import hf_config
    from owlvit_cli.verify.hf_model import check_model_dir

    found = check_model_dir(hf_dir)
    expected = hf_config(spec).to_dict()
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
    rows.append(finite_weights_row(checkpoint))
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


def verify(
    checkpoint: str | os.PathLike[str],
    hf_dir: str | os.PathLike[str],
    options: VerifyOptions | None = None,
    *,
    record: bool = False,
    save_outputs: str | os.PathLike[str] | None = None,
    save_viz: str | os.PathLike[str] | None = None,
    progress: Progress = NO_PROGRESS,
) -> Verification:
    """Verify, then keep what was asked for: `record` writes the report into HF_DIR (and hashes
    the checkpoint so the report names it), `save_outputs` a .npz of inputs and outputs,
    `save_viz` both sides' top detections drawn on the first image."""
    hf_dir = Path(hf_dir)
    outputs = None if save_outputs is None else Path(save_outputs)
    viz = None if save_viz is None else Path(save_viz)
    options = dataclasses.replace(options or VerifyOptions(), record=record)
    inputs = [Path(checkpoint), hf_dir, *map(Path, options.images)]
    check_output_paths(outputs, viz, hf_dir if record else None, inputs)
    result = run_verification(checkpoint, hf_dir, options, progress)
    hold_point("verify-compared")
    raise_if_interrupted()  # a Ctrl-C that landed in a GC callback: no report after it
    write_outputs(result, hf_dir, record, outputs, viz)
    return result
