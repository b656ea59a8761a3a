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

    from owlvit_cli.convert.run import ConversionResult
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


def inspect_checkpoint(checkpoint: PathLike, pattern: str | None = None) -> CheckpointInfo:
    """Read a checkpoint's tree and derive its config; reads headers only, never the arrays.
    `pattern` is a glob on tensor paths (either spelling: the file's own or current scenic's)."""
    from owlvit_cli.checkpoint.reader import open_checkpoint
    from owlvit_cli.convert.inspection import inspect_report
    from owlvit_cli.model.spec import ModelSpec

    with open_checkpoint(Path(checkpoint)) as ckpt:
        report = inspect_report(ckpt, pattern)
    return CheckpointInfo(
        path=Path(checkpoint),
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
    dtype: str = "float32",
    max_shard_size: str = "5GB",
    overwrite: bool = False,
    force_overwrite: bool = False,
    progress: Progress = NO_PROGRESS,
) -> ConversionResult:
    """Write a transformers model directory (weights, config, processor, tokenizer, conversion
    record) that `from_pretrained` loads offline; it appears atomically at `output`.
    `overwrite` replaces only an earlier owlvit output, `force_overwrite` any directory that
    is not an input."""
    from owlvit_cli.convert.run import convert_checkpoint as run

    return run(
        checkpoint,
        output,
        dtype=dtype,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
        force_overwrite=force_overwrite,
        progress=progress,
    )


def verify_conversion(
    checkpoint: PathLike,
    hf_dir: PathLike,
    options: VerifyOptions | None = None,
    *,
    record: bool = False,
    save_outputs: PathLike | None = None,
    save_viz: PathLike | None = None,
    progress: Progress = NO_PROGRESS,
) -> Verification:
    """Run the scenic-exact Flax model and the converted model on the same inputs and compare
    every output. A mismatch is not an exception: read `.report["passed"]` and
    `.report["failed"]`. `options` is a `owlvit_cli.verify.inputs.VerifyOptions`."""
    from owlvit_cli.verify.run import verify as run

    return run(
        checkpoint,
        hf_dir,
        options,
        record=record,
        save_outputs=save_outputs,
        save_viz=save_viz,
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

    plan = hub.plan_push(Path(hf_dir), repo_id, **plan_options)
    secret = hub.resolve_token(token)
    return hub.push(plan, token=secret, timeout=timeout, progress=progress)


def detect_objects(
    hf_dir: PathLike,
    image: PathLike,
    queries: Sequence[str] | None = None,
    threshold: float = 0.1,
    *,
    progress: Progress = NO_PROGRESS,
    **options: Any,
) -> DetectionResult:
    """Run a converted model with its saved processor on an image; boxes in image pixels.
    `options` are `owlvit_cli.detect.run.detect`'s keywords (image_query, max_detections, ...)."""
    from owlvit_cli.detect.run import detect as run

    return run(Path(hf_dir), Path(image), queries, threshold, progress=progress, **options)
