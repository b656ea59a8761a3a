"""What `inspect` reports about a checkpoint, as plain data (rendering lives in the CLI)."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from owlvit_cli.checkpoint.reader import Checkpoint
from owlvit_cli.errors import CheckpointError, MappingError
from owlvit_cli.model.spec import ModelSpec, spec_from_shapes

if TYPE_CHECKING:
    import numpy as np


FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def checkpoint_spec(ckpt: Checkpoint) -> ModelSpec:
    """The model the tensors describe; `CheckpointError` if they describe none."""
    problems = dtype_problems(ckpt)
    if problems:
        raise CheckpointError(problems[0])
    return spec_from_shapes({entry.path: entry.shape for entry in ckpt})


def dtype_problems(ckpt: Checkpoint) -> list[str]:
    bad = [f"{e.source_path} ({e.dtype_name})" for e in ckpt if e.dtype_name not in FLOAT_DTYPES]
    if not bad:
        return []
    return [
        f"{len(bad)} tensor(s) are not floating point (expected {', '.join(FLOAT_DTYPES)}): "
        + ", ".join(bad[:6])
        + (" …" if len(bad) > 6 else "")
    ]


def checkpoint_problems(ckpt: Checkpoint) -> tuple[ModelSpec | None, list[str]]:
    """The spec if one can be derived, and every problem convert would refuse the checkpoint
    for before writing anything (what `inspect` lists)."""
    from owlvit_cli.convert.mapping import plan_mapping

    problems = dtype_problems(ckpt)
    try:
        spec = spec_from_shapes({entry.path: entry.shape for entry in ckpt})
    except CheckpointError as exc:
        return None, [*problems, str(exc)]
    try:
        plan_mapping({entry.path: entry.shape for entry in ckpt}, spec)
    except MappingError as exc:
        problems.append(str(exc))
    return spec, problems


def has_non_finite(array: np.ndarray) -> bool:
    """NaN or ±Inf anywhere. A sum propagates both at memory speed without allocating; only
    a non-finite sum (possibly a finite overflow) is checked element by element."""
    import numpy as np

    if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
        return False
    if array.dtype.itemsize >= 4:
        with np.errstate(all="ignore"):
            if np.isfinite(np.sum(array)):
                return False
    return not bool(np.isfinite(array).all())


def non_finite_tensors(ckpt: Checkpoint) -> list[str]:
    """Names (as in the file) of the tensors holding NaN or ±Inf."""
    return [entry.source_path for entry in ckpt if has_non_finite(ckpt.read(entry.path))]


def param_rows(ckpt: Checkpoint, pattern: str | None = None) -> list[dict[str, Any]]:
    """One row per tensor, in file order; `pattern` is a glob on either spelling of the path."""
    rows = []
    for entry in ckpt:
        if pattern and not (
            fnmatch.fnmatchcase(entry.source_path, pattern)
            or fnmatch.fnmatchcase(entry.path, pattern)
        ):
            continue
        rows.append(
            {
                "path": entry.source_path,
                "name": entry.path,
                "shape": list(entry.shape),
                "dtype": entry.dtype_name,
                "size": entry.size,
                "nbytes": entry.record.nbytes,
            }
        )
    return rows


def inspect_report(ckpt: Checkpoint, pattern: str | None = None) -> dict[str, Any]:
    spec, problems = checkpoint_problems(ckpt)
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
    }
