"""What `inspect` reports about a checkpoint, as plain data (rendering lives in the CLI)."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from typing import Any

from owlvit_cli.checkpoint.reader import Checkpoint
from owlvit_cli.model.spec import ModelSpec, spec_from_shapes


def checkpoint_spec(ckpt: Checkpoint) -> ModelSpec:
    return spec_from_shapes({entry.path: entry.shape for entry in ckpt})


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
        "format": ckpt.format,
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
