"""Prove a converted model equals the scenic-exact Flax model, in three separate questions.

1. mapping: same pixels and token ids into both models, the two known modelling differences
   patched on the transformers side. Only a mapping bug can fail this (~1e-5, scaled by the
   magnitude of the output).
2. stock: the transformers model exactly as users load it, same inputs, with the tolerances
   that the modelling differences allow.
3. processor: the saved transformers processor vs scenic's tokenizer and each of scenic's two
   preprocessings, `notebook` and `evaluator` (pixels and token ids); with
   `processor_detections`, also what that does to the top detections, at the price of a third
   forward pass (a fourth, Flax, for the pipeline levels 1-2 did not use). Informational unless
   `strict_processor`, which implies the detections and holds the processor to the pipeline
   verify ran with (`options.preprocessing`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from owlvit_cli.checkpoint.hashing import start_hashing
from owlvit_cli.checkpoint.interface import Checkpoint
from owlvit_cli.checkpoint.reader import open_checkpoint
from owlvit_cli.checkpoint.workdir import as_resolved
from owlvit_cli.errors import BadInputError, ModelDirError
from owlvit_cli.hold import hold_point
from owlvit_cli.interrupts import raise_if_interrupted
from owlvit_cli.model.model_dir import RECORD_FILE
from owlvit_cli.model.pinned_dir import pinned_directory
from owlvit_cli.model.spec import ModelSpec
from owlvit_cli.progress import LAYERS, NO_PROGRESS, Progress, Step, forward_detail, step_name
from owlvit_cli.verify.architecture import check_same_architecture
from owlvit_cli.verify.compare import (
    FlaxOutputs,
    Tolerances,
    compare_outputs,
    describe_levels,
    finite_weights_row,
    processor_drift,
)
from owlvit_cli.verify.hf_loading import hf_loading
from owlvit_cli.verify.inputs import (
    VerifyInputs,
    VerifyOptions,
    check_preprocessing,
    prepare_inputs,
)
from owlvit_cli.verify.record import keep_only_own_source, plan_record
from owlvit_cli.verify.report import (
    Verification,
    build_report,
    check_output_paths,
    saved_arrays,
    source_failure_report,
    write_outputs,
)
from owlvit_cli.verify.source import check_source, read_record, stored_dtype
from owlvit_cli.verify.tolerances import STOCK_TOLERANCES


@contextmanager
def _timed(timings: dict[str, float], key: str, progress: Progress, label: str) -> Iterator[Step]:
    started = time.perf_counter()
    with progress.step(label) as step:
        yield step
    timings[key] = round(time.perf_counter() - started, 3)


def run_verification(
    checkpoint: str | os.PathLike[str],
    hf_dir: str | os.PathLike[str],
    options: VerifyOptions | None = None,
    progress: Progress = NO_PROGRESS,
) -> Verification:
    """Check the pairing, then run both models; the report is a plain dict (what --json
    prints). A checkpoint that is not HF_DIR's source fails here, before any model loads,
    unless `options.ignore_source`."""
    checkpoint, hf_dir = Path(checkpoint), Path(hf_dir)
    options = options or VerifyOptions()
    unknown = set(options.atol) - set(STOCK_TOLERANCES)
    if unknown:
        raise BadInputError(
            f"--atol names unknown outputs {sorted(unknown)}; known: {', '.join(STOCK_TOLERANCES)}"
        )
    check_preprocessing(options.preprocessing)  # before seconds of loading, not after
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as opened:  # the checkpoint, opened once for the whole run
        with _timed(timings, "source", progress, "checking the source checkpoint"):
            ckpt = opened.enter_context(open_checkpoint(checkpoint))
            pairing = check_pairing(checkpoint, hf_dir, options.ignore_source, ckpt)
            if pairing.source["matches"] is not False or options.ignore_source:
                # Bad input, said before seconds of Flax work rather than after them.
                check_same_architecture(pairing.spec, hf_dir, pairing.config)
        hold_point("verify-paired")
        if pairing.source["matches"] is False and not options.ignore_source:
            report = source_failure_report(checkpoint, hf_dir, pairing, timings)
            return Verification(report, {}, None, {})
        return run_models(checkpoint, ckpt, hf_dir, pairing, options, timings, progress)


def run_models(
    checkpoint: Path,
    ckpt: Checkpoint,
    hf_dir: Path,
    pairing: Pairing,
    options: VerifyOptions,
    timings: dict[str, float],
    progress: Progress,
) -> Verification:
    """Both models on the same inputs, compared level by level, for a checkpoint `check_pairing`
    accepted: what the pairing opened and read is used, not opened again. `checkpoint` is the
    path as given (a workdir, say), `ckpt` what it opened."""
    # A recorded report names the checkpoint it verified; hashing costs a core, so only then.
    hasher = start_hashing(checkpoint) if options.record and pairing.sha256 is None else None
    tolerances = Tolerances.for_dtype(pairing.dtype, options.atol)
    spec = pairing.spec
    loading = hf_loading(hf_dir, pairing.dtype)  # loads while the Flax side reads and runs
    runner, inputs = load_reference(ckpt, spec, options, timings, progress, loading.start)
    with _timed(timings, "flax_compile", progress, "compiling the Flax model"):
        runner.compile(inputs.scenic_pixels, inputs.input_ids)
    keep = options.processor_detections or options.strict_processor
    flax_out, rounded_out, flax_runner = run_flax_both(
        runner, pairing.dtype, inputs, timings, progress, keep=keep
    )
    with _timed(timings, "load_hf", progress, "loading the transformers model"):
        model, stock_model = loading.get("model"), loading.get("stock")
        has_images = any(raw is not None for raw in inputs.raw_images)
        processor = loading.get("processor") if has_images else None
        loading.join()
    timings["load_hf_total"], timings["load_hf_cpu"] = loading.seconds, loading.cpu_seconds
    from owlvit_cli.runtime.hf_model import layer_progress, model_device

    hf_detail = describe_forward(model_device(model), spec, inputs)
    hf_label = step_name("running the transformers model", hf_detail)
    with _timed(timings, "hf_forward", progress, hf_label) as step:
        step.set_total(hf_layers(model, stock_model), LAYERS)
        hold_point("verify-hf-forward")
        with layer_progress((model, stock_model), step.advance):
            stock, patched = run_hf_both(model, inputs, stock_model)
    with _timed(timings, "image_query", progress, "choosing the image-query embeddings"):
        stock, patched = hf_image_queries(inputs, (model, stock_model), (stock, patched))
    flax = FlaxOutputs(flax_out, rounded_out)
    with _timed(timings, "compare", progress, "comparing"):
        rows, tops = compare_outputs(flax, stock, patched, inputs, options, tolerances)
    flax_top = tops["flax"]
    processor_rows, processor_info = [], {}
    if processor is not None:
        with _timed(timings, "processor", progress, "checking the transformers processor"):
            processor_rows, processor_info = processor_drift(
                model,
                processor,
                inputs,
                scenic_top_detections(flax_runner, inputs, flax_top, options),
                options,
            )
    rows += processor_rows
    rows.append(finite_weights_row(ckpt))
    report = build_report(
        checkpoint, hf_dir, spec, inputs, rows, timings, flax_top, processor_info, options
    )
    report.update(pairing.report_fields())
    report["image_query"] = image_query_report(inputs, flax_out, stock)
    report["levels"] = describe_levels(report["levels"], tolerances, model_dtype(stock_model))
    digest = pairing.sha256 or (hasher.digest(progress) if hasher is not None else None)
    if digest is not None and options.record:
        report["checkpoint_sha256"] = digest
    models = {"flax": flax_runner, "hf": model, "hf_stock": stock_model}
    return Verification(report, saved_arrays(inputs, flax_out, stock), inputs, tops, models)


def describe_forward(device: str, spec: ModelSpec, inputs: VerifyInputs) -> str:
    """What a forward pass of verify runs on: the device, the images, the queries."""
    images, size = inputs.input_ids.shape[0], spec.vision.image_size
    return forward_detail(device, images, size, spec.num_patches, len(inputs.queries))


def run_flax_both(
    runner: Any,
    dtype: str,
    inputs: VerifyInputs,
    timings: dict[str, float],
    progress: Progress,
    *,
    keep: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Any]:
    """The Flax model on the float32 params and, for a directory stored in another dtype, on
    them rounded to it; each side's image-query outputs are taken from its own pass. Then its
    weights are freed, before the transformers model runs, unless `keep` (the processor
    check's detections run the float32 model again later): only then do two float32 copies
    exist, the params and their rounded copy. Returns the outputs and the float32 runner
    (params released unless kept). Progress is the encoder layers the programs finish."""
    from owlvit_cli.memory import release_freed_memory
    from owlvit_cli.scenic.flax_model import layer_progress
    from owlvit_cli.verify.image_query import with_image_query

    rounding = dtype != "float32"
    label = step_name(
        "running the Flax model", describe_forward(runner.device, runner.spec, inputs)
    )
    with _timed(timings, "flax_forward", progress, label) as step:
        step.set_total(runner.layers_per_pass * (2 if rounding else 1), LAYERS)
        with layer_progress(step.advance):
            out = with_image_query(
                runner.detect(inputs.scenic_pixels, inputs.input_ids, image_only=True),
                inputs,
                runner.score_features,
            )
            rounded_out = out
            if rounding:
                rounded = runner.with_params(runner.variables["params"]) if keep else runner
                rounded.round_params(dtype)
                rounded_out = with_image_query(
                    rounded.detect(inputs.scenic_pixels, inputs.input_ids, image_only=True),
                    inputs,
                    rounded.score_features,
                )
                rounded.release_params()
    if not keep:
        runner.release_params()
    release_freed_memory()
    return out, rounded_out, runner


def scenic_top_detections(
    runner: Any, inputs: VerifyInputs, flax_top: list[dict], options: VerifyOptions
) -> Callable[[str, list[int], np.ndarray], list[dict]]:
    """The Flax model's top detections for some images under a scenic pipeline: the ones
    already computed for verify's own pipeline, one more forward pass for the other."""
    from owlvit_cli.verify.compare import top_detections

    def top(pipeline: str, indices: list[int], pixels: np.ndarray) -> list[dict]:
        if pipeline == inputs.preprocessing:
            return [flax_top[i] for i in indices]
        ids = inputs.input_ids[indices]
        outputs = runner.detect(pixels, ids, image_only=True)  # the compiled program
        return top_detections(outputs, ids[..., 0] > 0, options.top_k)

    return top


@dataclass
class Pairing:
    """What HF_DIR's own files say before any model loads: its source and stored dtype; and
    what checking them read, for the rest of the run to use: the model the checkpoint
    describes and HF_DIR's config."""

    source: dict[str, Any]
    sha256: str | None
    dtype: str
    dtype_source: str
    spec: ModelSpec
    config: dict[str, Any]

    def report_fields(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "dtype_source": self.dtype_source, "source": self.source}


def check_pairing(
    checkpoint: Path, hf_dir: Path, ignore_source: bool = False, ckpt: Checkpoint | None = None
) -> Pairing:
    """Is CKPT the file HF_DIR was converted from (size, then sha256), and in which dtype are
    HF_DIR's weights stored. Unusable inputs raise their usual bad-input errors. `ckpt` is
    CKPT already opened (opened here, and closed, when not given)."""
    from owlvit_cli.convert.mapping import plan_checkpoint
    from owlvit_cli.model.model_dir import check_model_dir

    # Headers only (no payload read, no jax): a file that is no usable checkpoint is bad
    # input with the reader's own message, not a pairing failure.
    if ckpt is None:
        with open_checkpoint(checkpoint) as opened:
            spec, _ = plan_checkpoint(opened)
    else:
        spec, _ = plan_checkpoint(ckpt)
    config, _, weights = check_model_dir(hf_dir)
    record = read_record(hf_dir)
    source, digest = check_source(checkpoint, hf_dir, record)
    if source["matches"] is False and not ignore_source:  # the verdict waits for no import
        dtype = str((record or {}).get("dtype"))
        return Pairing(source, digest, dtype, RECORD_FILE, spec, config)
    dtype, dtype_source = stored_dtype(hf_dir, record, weights)
    return Pairing(source, digest, dtype, dtype_source, spec, config)


def model_dtype(model: Any) -> str:
    return str(model.dtype).removeprefix("torch.")


def load_reference(
    ckpt: Checkpoint,
    spec: ModelSpec,
    options: VerifyOptions,
    timings: dict[str, float],
    progress: Progress,
    then: Callable[[], None],
) -> tuple[Any, VerifyInputs]:
    """The Flax model on the float32 params, and the inputs. Images and queries are prepared
    in a second thread while jax imports: PIL's decoding and scipy's resize release the GIL,
    so that work costs no wall time. `inputs` times only what is left to wait for afterwards.
    `then` is called once both are done, before the params are read: it may import more in
    another thread (the transformers side) without meeting a module these imports left
    half-initialised, as two threads importing one package at once can."""
    from concurrent.futures import ThreadPoolExecutor

    with (
        ThreadPoolExecutor(max_workers=1) as background,
        _timed(timings, "load_flax", progress, "reading the checkpoint"),
    ):
        prepared = background.submit(prepare_inputs, spec, options)
        from owlvit_cli.scenic.flax_model import FlaxRunner  # jax: seconds, so timed as loading

        started = time.perf_counter()
        inputs = prepared.result()
        timings["inputs"] = round(time.perf_counter() - started, 3)
        then()
        runner = FlaxRunner(spec, ckpt.params_tree(np.float32))
    return runner, inputs


def hf_image_queries(
    inputs: VerifyInputs, models: tuple[Any, Any], outputs: tuple[dict, dict]
) -> tuple[dict, dict]:
    """The stock and patched transformers outputs with their image-conditioned outputs, each
    from its own forward pass: only the class head runs again."""
    from functools import partial

    from owlvit_cli.runtime.hf_model import run_hf_class_head
    from owlvit_cli.verify.image_query import with_image_query

    (model, stock_model), (stock, patched) = models, outputs
    stock = with_image_query(stock, inputs, partial(run_hf_class_head, stock_model))
    patched = with_image_query(patched, inputs, partial(run_hf_class_head, model))
    return stock, patched


def image_query_report(inputs: VerifyInputs, flax: dict, stock: dict) -> dict[str, Any]:
    """What the image-conditioned check used and what each side chose."""
    return {
        "image": Path(inputs.images[inputs.query_image_index]).name,
        "boxes": [list(box) for box in inputs.query_boxes],
        "box_index": {
            "flax": flax["image_query_box"].tolist(),
            "stock": stock["image_query_box"].tolist(),
        },
    }


def hf_layers(model: Any, stock_model: Any) -> int:
    """The encoder layers `run_hf_both` runs: each tower once when one model serves both
    checks (the towers are memoised); a stock model in another dtype runs its own towers, its
    vision tower twice (detection, then the image-only path)."""
    from owlvit_cli.runtime.hf_model import encoder_layers

    vision, text = (len(layers) for layers in encoder_layers(model))
    return vision + text if stock_model is model else 3 * vision + 2 * text


def run_hf_both(model: Any, inputs: VerifyInputs, stock_model: Any = None) -> tuple[dict, dict]:
    """Stock and scenic-semantics outputs. With one model (a float32 directory) the towers
    are identical in both; only the merged LayerNorm and the head MLPs differ, so the towers
    run once and are reused. A `stock_model` in another dtype runs on its own."""
    from owlvit_cli.runtime.hf_model import (
        apply_scenic_semantics,
        reuse_tower_outputs,
        stock_semantics,
    )

    stock_model = model if stock_model is None else stock_model
    with reuse_tower_outputs(model):
        stock = run_hf_all(stock_model, inputs)
        with stock_semantics(model):
            apply_scenic_semantics(model)
            patched = run_hf_all(model, inputs)
    return stock, patched


def run_hf_all(model: Any, inputs: VerifyInputs) -> dict[str, np.ndarray]:
    """Detection and the image-only path, outputs upcast to float32."""
    from owlvit_cli.runtime.hf_model import run_hf_detection, run_hf_image_only

    outputs = run_hf_detection(model, inputs.pixel_values, inputs.input_ids)
    outputs.update(run_hf_image_only(model, inputs.pixel_values))
    return outputs


def verify(
    checkpoint: str | os.PathLike[str],
    hf_dir: str | os.PathLike[str],
    options: VerifyOptions | None = None,
    *,
    record: bool | None = None,
    save_outputs: str | os.PathLike[str] | None = None,
    save_viz: str | os.PathLike[str] | None = None,
    step: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> Verification:
    """Verify, then keep what was asked for: the report in HF_DIR (`record`: True, False, or
    None for "when owlvit wrote HF_DIR"; recording also hashes the checkpoint so the report
    names it), `save_outputs` a .npz of inputs and outputs, `save_viz` both sides' top
    detections drawn on the first image. `Verification.recorded` says where the report went.
    `checkpoint` may be a workdir: its latest step is read, or `step`.

    HF_DIR is pinned while it is read: if it is replaced or rewritten before the end (another
    conversion into it), nothing is kept and a `ModelDirError` says so, rather than a report
    about weights that were never compared."""
    resolved = as_resolved(checkpoint, step)
    hf_dir = Path(hf_dir)
    outputs = None if save_outputs is None else Path(save_outputs)
    viz = None if save_viz is None else Path(save_viz)
    target = plan_record(hf_dir, record)
    options = dataclasses.replace(options or VerifyOptions(), record=target.path is not None)
    inputs = [hf_dir, *map(Path, options.images)]
    check_output_paths(outputs, viz, inputs, resolved.inputs)
    with pinned_directory(hf_dir) as pinned:
        result = run_verification(resolved.path, hf_dir, options, progress)
        hold_point("verify-compared")
        raise_if_interrupted()  # a Ctrl-C that landed in a GC callback: no report after it
        if pinned is None:  # no directory when verify began, one now: not what was read
            raise ModelDirError(f"{hf_dir} appeared while it was being read; nothing was recorded")
        pinned.check()
        target = keep_only_own_source(target, result.report, asked=record is True)
        write_outputs(result, pinned, target.path is not None, outputs, viz)
    ran = result.inputs is not None  # else CKPT is not HF_DIR's source, said once already
    recorded, skipped = (target.path, target.skipped) if ran else (None, None)
    return dataclasses.replace(result, recorded=recorded, record_skipped=skipped)
