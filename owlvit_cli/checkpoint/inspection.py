"""What a checkpoint's tensors say on their own, as plain data: one row per tensor, and which
ones hold NaN or ±Inf (`convert.inspection` adds what convert would make of them)."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from owlvit_cli.checkpoint.interface import BLOCK_RE, Checkpoint
from owlvit_cli.model.dtypes import FLOAT_DTYPES, dtype_problems  # re-exported
from owlvit_cli.model.spec import checkpoint_spec  # re-exported

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "FLOAT_DTYPES",
    "checkpoint_spec",
    "dtype_problems",
    "fold_repeated_blocks",
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


@dataclass(frozen=True)
class FoldedRows:
    """`param_rows` with each run of identical repeated blocks shown once: `rows` carry
    `repeat` (how many blocks a row stands for), `blocks` maps each folded block's path (as
    in `rows`, e.g. `…/resblocks.{0..11}`) to its count."""

    rows: list[dict[str, Any]]
    blocks: dict[str, int]


def fold_repeated_blocks(rows: list[dict[str, Any]]) -> FoldedRows:
    """Fold consecutive transformer blocks whose tensors are the same (names below the block,
    shapes, dtypes) into one block named with the range of its numbers, in file order; a
    block that differs from its neighbours stays on its own. For people, not for scripts:
    the rows no longer name real tensors."""
    tensors: dict[tuple[str, str], dict[int, list[tuple[Any, ...]]]] = defaultdict(dict)
    for row in rows:
        if block := _block_of(row["path"]):
            tower, index, rest = block
            tensors[tower].setdefault(index, []).append((rest, tuple(row["shape"]), row["dtype"]))
    run_of = {
        (tower, index): (first, last)
        for tower, blocks in tensors.items()
        for first, last in _runs(blocks)
        for index in range(first, last + 1)
    }
    folded, counts = [], {}
    for row in rows:
        block = _block_of(row["path"])
        run = run_of.get(block[:2]) if block else None
        if block is None or run is None:
            folded.append({**row, "repeat": 1})
        elif block[1] == run[0]:  # the run's first block stands for all of them
            (head, separator), _, rest = block
            name = f"{head}resblocks{separator}{{{run[0]}..{run[1]}}}"
            counts[name] = run[1] - run[0] + 1
            folded.append({**row, "path": name + rest, "repeat": counts[name]})
    return FoldedRows(folded, counts)


def _block_of(path: str) -> tuple[tuple[str, str], int, str] | None:
    """((what precedes the block, its separator), block number, the path below it)."""
    found = BLOCK_RE.search(path)
    if found is None:
        return None
    return (path[: found.start()], found.group(1)), int(found.group(2)), path[found.end() :]


def _runs(blocks: dict[int, list[tuple[Any, ...]]]) -> list[tuple[int, int]]:
    """(first, last) of each run of two or more consecutive block numbers with equal tensors."""
    runs, order = [], sorted(blocks)
    start = 0
    for i in range(1, len(order) + 1):
        ends = (
            i == len(order)
            or order[i] != order[i - 1] + 1
            or sorted(blocks[order[i]]) != sorted(blocks[order[start]])
        )
        if ends:
            if i - start > 1:
                runs.append((order[start], order[i - 1]))
            start = i
    return runs
