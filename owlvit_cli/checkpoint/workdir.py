"""Which checkpoint a path names: a msgpack file, an Orbax directory, or a training workdir.

flax's `save_checkpoint` (and scenic's trainer) keep every saved step in one workdir as
`checkpoint_N` (a msgpack file, or an Orbax directory since flax 0.7); orbax's
`CheckpointManager` names step directories plain `N`, with the state in an item directory
inside (`N/default/`). Given a workdir, the latest step is read unless `step` names one, and
which one was taken is part of the answer so that commands can say so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from owlvit_cli.checkpoint.released import refuse_remote
from owlvit_cli.errors import BadInputError, CheckpointError

# What orbax writes into every checkpoint directory (one of them suffices to recognise one);
# the first two only where the tree itself is (a CheckpointManager step keeps it in an item).
TREE_MARKERS = ("_METADATA", "manifest.ocdbt")
ORBAX_MARKERS = (*TREE_MARKERS, "_CHECKPOINT_METADATA", "commit_success.txt")
STEP_RE = re.compile(r"^(?:checkpoint_)?(\d+)$")  # unfinished saves carry a suffix: skipped


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """The checkpoint to read; `step` and `steps` are set when it was picked from a workdir."""

    path: Path
    is_orbax: bool
    workdir: Path | None = None
    step: int | None = None
    steps: tuple[int, ...] = ()

    def describe(self) -> str | None:
        """One line saying which checkpoint of a workdir is read, or None for a plain path."""
        if self.workdir is None:
            return None
        which = "the latest" if self.step == max(self.steps) else "chosen with --step"
        return (
            f"reading {self.path} (step {self.step}, {which} of {len(self.steps)} "
            f"in {self.workdir})"
        )


def is_orbax_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ORBAX_MARKERS)


def resolve_checkpoint(
    source: str | os.PathLike[str], step: int | None = None
) -> ResolvedCheckpoint:
    """Name the checkpoint `source` means; a file or a missing path is left to the msgpack
    reader, which says what is wrong with it in its own words, except a URL or a released
    checkpoint's name, which gets the command that downloads it."""
    refuse_remote(source)
    path = Path(source)
    if not path.is_dir():
        if step is not None:
            raise BadInputError(f"a step needs a workdir of checkpoint_N entries; {path} is not")
        return ResolvedCheckpoint(path, is_orbax=False)
    if is_orbax_dir(path):
        if step is not None:
            raise BadInputError(
                f"a step needs a workdir of checkpoint_N entries; {path} is one checkpoint"
            )
        return ResolvedCheckpoint(_item_dir(path), is_orbax=True)
    steps = workdir_steps(path)
    if not steps:
        raise CheckpointError(directory_error(path))
    chosen = max(steps) if step is None else step
    if chosen not in steps:
        known = ", ".join(map(str, sorted(steps)))
        raise BadInputError(f"{path} has no checkpoint for step {chosen} (steps: {known})")
    target = _item_dir(steps[chosen])
    return ResolvedCheckpoint(target, is_orbax_dir(target), path, chosen, tuple(sorted(steps)))


def workdir_steps(path: Path) -> dict[int, Path]:
    """{step: entry} for the `checkpoint_N` (or orbax's `N`) entries of a workdir."""
    steps: dict[int, Path] = {}
    for entry in path.iterdir():
        match = STEP_RE.match(entry.name)
        if match and (entry.is_file() or entry.is_dir()):
            steps[int(match.group(1))] = entry
    return steps


def _item_dir(step_dir: Path) -> Path:
    """A CheckpointManager step holds its state in one item directory (`default`, `state`)."""
    if not step_dir.is_dir() or _holds_tree(step_dir):
        return step_dir
    items = sorted(p for p in step_dir.iterdir() if p.is_dir() and _holds_tree(p))
    if len(items) == 1:
        return items[0]
    if items:
        names = ", ".join(p.name for p in items)
        raise CheckpointError(f"{step_dir} holds several Orbax items ({names}); pass one of them")
    if is_orbax_dir(step_dir):
        return step_dir  # damaged: the reader says what is missing
    raise CheckpointError(directory_error(step_dir))


def _holds_tree(path: Path) -> bool:
    return any((path / name).exists() for name in TREE_MARKERS)


def directory_error(path: Path) -> str:
    """Why a directory is not a checkpoint, in words that point at what it is instead."""
    if (path / "config.json").exists():
        return f"{path} is a directory holding a transformers model, not a scenic checkpoint"
    return (
        f"{path} is a directory but neither an Orbax checkpoint (no {', '.join(ORBAX_MARKERS)}) "
        "nor a workdir of checkpoint_N entries"
    )
