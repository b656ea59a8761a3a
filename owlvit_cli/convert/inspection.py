"""What `inspect` reports about a checkpoint, as plain data (rendering lives in the CLI): its
tensors, the model they describe, and every problem convert would refuse it for.

It plans the mapping, so it sits beside convert, above the checkpoint readers it reports on.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owlvit_cli.checkpoint.inspection import param_rows
from owlvit_cli.checkpoint.interface import Checkpoint
from owlvit_cli.checkpoint.reader import open_checkpoint
from owlvit_cli.convert.mapping import MappingPlan, mapping_rows, plan_mapping
from owlvit_cli.errors import CheckpointError, MappingError
from owlvit_cli.model.dtypes import dtype_problems
from owlvit_cli.model.spec import ModelSpec, spec_from_shapes


def checked_plan(ckpt: Checkpoint) -> tuple[ModelSpec | None, MappingPlan | None, list[str]]:
    """The spec and the mapping plan where they can be made, and every problem found on the
    way: unlike `plan_checkpoint`, it goes on after the first one, to list them all."""
    problems = dtype_problems(ckpt)
    try:
        spec = spec_from_shapes({entry.path: entry.shape for entry in ckpt})
    except CheckpointError as exc:
        return None, None, [*problems, str(exc)]
    plan = None
    try:
        plan = plan_mapping({entry.path: entry.shape for entry in ckpt}, spec)
    except MappingError as exc:
        problems.append(str(exc))
    return spec, plan, problems


def inspect_report(
    ckpt: Checkpoint, pattern: str | None = None, *, mapping: bool = False
) -> dict[str, Any]:
    """`inspect --json`'s object; with `mapping`, also the source → target rows of a
    checkpoint convert would accept (from the plan made for the problems, not another)."""
    spec, plan, problems = checked_plan(ckpt)
    by_dtype: dict[str, int] = defaultdict(int)
    for entry in ckpt:
        by_dtype[entry.dtype_name] += entry.record.nbytes
    return {
        "file": str(ckpt.path),
        "format": ckpt.format,
        "file_size": ckpt.file_size,
        "layout": ckpt.layout,
        "params_root": ckpt.root,
        "other_top_level_keys": ckpt.other_top_level,
        "version": spec.version if spec else None,
        "config": spec.to_json() if spec else None,
        "problems": problems,
        "num_parameters": ckpt.num_parameters,
        "num_tensors": len(ckpt.tensors),
        "bytes_by_dtype": dict(by_dtype),
        "params": param_rows(ckpt, pattern),
        **({"mapping": mapping_rows(ckpt, pattern, plan)} if mapping and not problems else {}),
    }


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
    checkpoint: str | os.PathLike[str], pattern: str | None = None, *, step: int | None = None
) -> CheckpointInfo:
    """Read a checkpoint's tree and derive its config; reads headers only, never the arrays.
    `pattern` is a glob on tensor paths (either spelling: the file's own or current scenic's).
    A workdir's latest step is read, or `step`; `path` is the checkpoint read."""
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
