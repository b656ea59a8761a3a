"""Which checkpoint a path names: a msgpack file, an Orbax directory, or a training workdir.

flax's `save_checkpoint` (and scenic's trainer) keep every saved step in one workdir as
`checkpoint_N` (a msgpack file, or an Orbax directory since flax 0.7); orbax's
`CheckpointManager` names step directories plain `N`, with the state in an item directory
inside (`N/default/`). Given a workdir, the latest step is read unless `step` names one, and
which one was taken is part of the answer so that commands can say so.

A workdir given as the checkpoint is an input as a whole: training writes its next steps
there and flax's `latest_checkpoint` picks any `checkpoint_*` entry by its number, so an
output inside it, or named like a step beside other steps, would be read as a checkpoint.
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
STEP_RE = re.compile(r"^(?:checkpoint_)?(\d+)$", re.ASCII)  # unfinished saves have a suffix
FLAX_PREFIX = "checkpoint_"  # flax's `latest_checkpoint` takes every entry named so


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """The checkpoint to read; `step` and `steps` are set when it was picked from a workdir."""

    path: Path
    is_orbax: bool
    workdir: Path | None = None
    step: int | None = None
    steps: tuple[int, ...] = ()

    def __fspath__(self) -> str:
        """Usable wherever a path is: the checkpoint read."""
        return os.fspath(self.path)

    @property
    def inputs(self) -> tuple[Path, ...]:
        """What a run reading this checkpoint may not write into: the whole workdir it was
        picked from, not just the step read."""
        return (self.path,) if self.workdir is None else (self.path, self.workdir)

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
    entries = steps[chosen]
    if len(entries) > 1:
        names = ", ".join(entry.name for entry in entries)
        raise BadInputError(
            f"{path} holds {len(entries)} checkpoints for step {chosen} ({names}) and cannot "
            "tell which one is meant",
            hint=f"pass the one to read as the checkpoint, e.g. {entries[0]}",
        )
    target = _item_dir(entries[0])
    return ResolvedCheckpoint(target, is_orbax_dir(target), path, chosen, tuple(sorted(steps)))


def as_resolved(
    checkpoint: str | os.PathLike[str] | ResolvedCheckpoint, step: int | None = None
) -> ResolvedCheckpoint:
    """A checkpoint a caller resolved already (to say which step it reads) is taken as it is."""
    if not isinstance(checkpoint, ResolvedCheckpoint):
        return resolve_checkpoint(checkpoint, step)  # as typed: a Path folds a URL's //
    if step is not None and step != checkpoint.step:
        raise BadInputError(f"step {step} asked for, but {checkpoint.path} was already chosen")
    return checkpoint


def workdir_steps(path: Path) -> dict[int, list[Path]]:
    """{step: entries} for the `checkpoint_N` (or orbax's `N`) entries of a workdir; more
    than one entry for a step (`checkpoint_100`, `checkpoint_0100`, `100`) is ambiguous."""
    steps: dict[int, list[Path]] = {}
    for entry in sorted(path.iterdir()):
        match = STEP_RE.match(entry.name)
        if match and (entry.is_file() or entry.is_dir()):
            steps.setdefault(int(match.group(1)), []).append(entry)
    return steps


def looks_like_step(name: str) -> bool:
    """Would flax (any `checkpoint_*`), orbax (`N`) or owlvit take an entry so named for a
    saved step?"""
    return name.startswith(FLAX_PREFIX) or STEP_RE.match(name) is not None


def check_not_a_step(output: Path) -> None:
    """Refuse an output named like a checkpoint step in a directory that holds steps: flax's
    `latest_checkpoint` (and a workdir given to owlvit) would read it as the newest one."""
    for path in dict.fromkeys((Path(os.path.abspath(output)), Path(os.path.realpath(output)))):
        if not looks_like_step(path.name):
            continue
        try:
            steps = [e.name for e in path.parent.iterdir() if looks_like_step(e.name)]
        except OSError:
            continue  # a missing parent holds no steps
        others = sorted(name for name in steps if name != path.name)
        if others:
            raise BadInputError(
                f"{output} is named like a checkpoint step in {path.parent}, which holds "
                f"{', '.join(others[:3])}{' …' if len(others) > 3 else ''}: flax's "
                "latest_checkpoint would read it as a step; choose another name"
            )


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
