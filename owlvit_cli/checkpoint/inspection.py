"""What `inspect` reports about a checkpoint, as plain data (rendering lives in the CLI)."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from owlvit_cli.checkpoint.reader import Checkpoint
from owlvit_cli.model.spec import ModelSpec, spec_from_shapes

if TYPE_CHECKING:
    import numpy as np


def checkpoint_spec(ckpt: Checkpoint) -> ModelSpec:
    return spec_from_shapes({entry.path: entry.shape for entry in ckpt})


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
    spec = checkpoint_spec(ckpt)
    by_dtype: dict[str, int] = defaultdict(int)
    for entry in ckpt:
        by_dtype[entry.dtype_name] += entry.record.nbytes
    return {
        "file": str(ckpt.path),
        "file_size": ckpt.file_size,
        "layout": ckpt.layout,
        "params_root": ckpt.root,
        "other_top_level_keys": ckpt.other_top_level,
        "version": spec.version,
        "config": spec.to_json(),
        "num_parameters": ckpt.num_parameters,
        "num_tensors": len(ckpt.tensors),
        "bytes_by_dtype": dict(by_dtype),
        "params": param_rows(ckpt, pattern),
    }
