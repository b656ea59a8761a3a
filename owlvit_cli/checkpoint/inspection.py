"""What a checkpoint's tensors say on their own, as plain data: one row per tensor, and which
ones hold NaN or ±Inf (`convert.inspection` adds what convert would make of them)."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

from owlvit_cli.checkpoint.interface import Checkpoint
from owlvit_cli.model.dtypes import FLOAT_DTYPES, dtype_problems  # re-exported
from owlvit_cli.model.spec import checkpoint_spec  # re-exported

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "FLOAT_DTYPES",
    "checkpoint_spec",
    "dtype_problems",
    "has_non_finite",
    "non_finite_tensors",
    "param_rows",
]


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
