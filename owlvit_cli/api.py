"""The Python API: what the five commands do, callable from a notebook or a pipeline.

Every function takes paths as `str` or `os.PathLike`, reports progress through an optional
`owlvit_cli.progress.Progress` (nothing is shown by default), returns a typed result and raises
the typed errors of `owlvit_cli.errors` (each carries the exit code the CLI would use). Nothing
here prints. Heavy libraries load only when a function that needs them is called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlvit_cli.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from owlvit_cli.convert.run import ConversionPlan, ConversionResult
    from owlvit_cli.detect.run import DetectionResult
    from owlvit_cli.model.spec import ModelSpec
    from owlvit_cli.publish.hub import PushResult
    from owlvit_cli.verify.inputs import VerifyOptions
    from owlvit_cli.verify.report import Verification

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class CheckpointInfo:
    """What `owlvit inspect` reports: layout, OWL version, the config derived from shapes and
    one row per tensor (`report` is the same dict `inspect --json` prints)."""

    path: Path
    layout: str
    version: int
    spec: ModelSpec
    num_parameters: int
    params: list[dict[str, Any]]
    report: dict[str, Any]


def inspect_checkpoint(
    checkpoint: PathLike, pattern: str | None = None, *, step: int | None = None
) -> CheckpointInfo:
    """Read a checkpoint's tree and derive its config; reads headers only, never the arrays.
    `pattern` is a glob on tensor paths (either spelling: the file's own or current scenic's).
    A workdir's latest step is read, or `step`; `path` is the checkpoint read."""
    from owlvit_cli.checkpoint.inspection import inspect_report
    from owlvit_cli.checkpoint.reader import open_checkpoint
    from owlvit_cli.model.spec import ModelSpec

    with open_checkpoint(checkpoint, step) as ckpt:
        report = inspect_report(ckpt, pattern)
    return CheckpointInfo(
        path=ckpt.path,
        layout=report["layout"],
        version=report["version"],
        spec=ModelSpec.from_json(report["config"]),
        num_parameters=report["num_parameters"],
        params=report["params"],
        report=report,
    )


def convert_checkpoint(
    checkpoint: PathLike,
    output: PathLike,
    *,
    dtype: str = "auto",
    max_shard_size: str | int = "5GB",
    overwrite: bool = False,
    force_overwrite: bool = False,
    step: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> ConversionResult:
    """Write a transformers model directory (weights, config, processor, tokenizer, conversion
    record) that `from_pretrained` loads offline; it appears atomically at `output`.
    `dtype` "auto" keeps the dtype the checkpoint's weights are stored in (the result's
    `record["dtype_reason"]` says why). `overwrite` replaces only an earlier owlvit output,
    `force_overwrite` any directory that is not an input. A workdir's latest step is
    converted, or `step`; `max_shard_size` is a size like "2GB" or a number of bytes."""
    from owlvit_cli.convert.run import convert_checkpoint as run

    return run(
        checkpoint,
        output,
        dtype=dtype,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
        force_overwrite=force_overwrite,
        step=step,
        progress=progress,
    )


def plan_conversion(
    checkpoint: PathLike,
    output: PathLike,
    *,
    dtype: str = "auto",
    max_shard_size: str | int = "5GB",
    overwrite: bool = False,
    force_overwrite: bool = False,
    step: int | None = None,
) -> ConversionPlan:
    """The dry run of `convert_checkpoint`: the files, tensors, bytes, shards and dtype it
    would write, from the checkpoint's headers; nothing is written."""
    from owlvit_cli.convert.run import plan_conversion as run

    return run(
        checkpoint,
        output,
        dtype=dtype,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
        force_overwrite=force_overwrite,
        step=step,
    )


def verify_conversion(
    checkpoint: PathLike,
    hf_dir: PathLike,
    options: VerifyOptions | None = None,
    *,
    record: bool | None = None,
    save_outputs: PathLike | None = None,
    save_viz: PathLike | None = None,
    step: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> Verification:
    """Run the scenic-exact Flax model and the converted model on the same inputs and compare
    every output. A mismatch is not an exception: read `.report["passed"]` and
    `.report["failed"]`. `options` is a `owlvit_cli.verify.inputs.VerifyOptions`. The report is
    kept in HF_DIR (for `push_to_hub`'s card) when owlvit wrote it, unless `record=False`;
    `record=True` refuses any other directory; `.recorded` says where it went."""
    from owlvit_cli.verify.run import verify as run

    return run(
        checkpoint,
        hf_dir,
        options,
        record=record,
        save_outputs=save_outputs,
        save_viz=save_viz,
        step=step,
        progress=progress,
    )


def push_to_hub(
    hf_dir: PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    timeout: float = 60.0,
    progress: Progress = NO_PROGRESS,
    **plan_options: Any,
) -> PushResult:
    """Upload a converted directory with its model card in one commit. `plan_options` are
    `owlvit_cli.publish.hub.plan_push`'s keywords (revision, create_pr, private, license_,
    commit_message, endpoint, ...); `plan_push` alone is the dry run (no network)."""
    from owlvit_cli.publish import hub
    from owlvit_cli.publish.secrets import resolve_token

    plan = hub.plan_push(Path(hf_dir), repo_id, **plan_options)
    secret = resolve_token(token)
    return hub.push(plan, token=secret, timeout=timeout, progress=progress)


def detect_objects(
    hf_dir: PathLike,
    image: PathLike,
    queries: str | Sequence[str] | None = None,
    threshold: float = 0.1,
    *,
    progress: Progress = NO_PROGRESS,
    **options: Any,
) -> DetectionResult:
    """Run a converted model with its saved processor on an image; boxes in image pixels.
    `queries` is one text query or several.
    `options` are `owlvit_cli.detect.run.detect`'s keywords (image_query, query_boxes,
    query_embedding, max_detections, ...)."""
    from owlvit_cli.detect.run import detect as run

    return run(Path(hf_dir), Path(image), queries, threshold, progress=progress, **options)


def embed_image_query(
    hf_dir: PathLike,
    image: PathLike,
    box: Sequence[float] | str,
    *,
    preprocessing: str = "processor",
) -> np.ndarray:
    """The query embedding ([E] float32, not normalised) that scenic's notebook takes for an
    example `box` ([x0, y0, x1, y1] in `image`'s pixels); save it with `numpy.save` and detect
    with `detect_objects(..., query_embedding=path)` on any image, as often as needed."""
    from owlvit_cli.detect.run import embed_query_box

    return embed_query_box(Path(hf_dir), Path(image), box, preprocessing=preprocessing)
