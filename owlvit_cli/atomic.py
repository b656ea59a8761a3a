"""Outputs appear whole or not at all, and nothing a user owns is ever lost.

A directory output is written into a hidden temporary sibling of its real (symlink-resolved)
location, so that the final rename stays on one filesystem, and renamed into place at the end.
The rules, checked before any work starts (README "Safety"):
- OUT may not be, contain or lie inside an input of the same run.
- Without `overwrite`, OUT must be absent or an empty directory, and the final step is a plain
  rename(2), which the kernel refuses onto a non-empty directory: of two runs racing for the
  same OUT exactly one wins, the other fails and leaves nothing.
- With `overwrite`, only a directory that owlvit wrote (it holds the conversion record) is
  replaced; any other non-empty directory needs `force` as well.
- Missing parent directories are created, and removed again if the run fails.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from owlvit_cli.errors import BadInputError, OutputError
from owlvit_cli.interrupts import raise_if_interrupted

# The mark of a directory owlvit wrote: its conversion record names the tool. The overwrite
# rule above depends on it, so it is owned here, below the model-directory contract.
RECORD_FILE = "owlvit_conversion.json"
TOOL_NAME = "owlvit"
TMP_MARK = ".owlvit-tmp-"
OLD_MARK = ".owlvit-old-"
NAME_MAX = 255
_RANDOM_SUFFIX = 8  # what tempfile appends


@dataclass(frozen=True)
class OutputTarget:
    """Where an output directory really goes, as checked before any work."""

    given: Path
    real: Path
    exists: bool


def check_output_dir(
    out: Path, overwrite: bool, *, force: bool = False, inputs: Sequence[Path] = ()
) -> OutputTarget:
    """Apply the module's rules to `out` (a path as the user gave it) without changing anything."""
    check_name_length(out)
    real = Path(os.path.realpath(out))  # a symlinked OUT is written where it points
    for source in inputs:
        check_not_input(out, source)
    if real == Path(os.getcwd()) or os.path.ismount(real):
        raise BadInputError(
            f"{out} is the current directory or a mount point, which cannot be replaced; "
            f"name a new directory inside it instead"
        )
    exists = os.path.lexists(real)
    if exists and not real.is_dir():
        raise BadInputError(f"{out} exists and is not a directory")
    if exists and _is_non_empty(real):
        if not overwrite and not force:
            raise BadInputError(f"{out} is not empty; pass --overwrite to replace it")
        if not force and not is_owlvit_output(real):
            raise BadInputError(
                f"{out} is not empty and was not written by owlvit (it has no conversion "
                "record), so --overwrite leaves it alone; pass --force-overwrite to replace it "
                "and everything in it"
            )
    ancestor = _nearest_existing(real.parent)
    if not ancestor.is_dir():
        raise BadInputError(f"{ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BadInputError(f"{ancestor}: no permission to write here")
    return OutputTarget(out, real, exists)


def check_name_length(path: Path) -> None:
    """Every name must fit the filesystem's limit, with room for owlvit's temporary mark."""
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise BadInputError(
                f"{_short(part)}: file name longer than {NAME_MAX} bytes, which Linux "
                "filesystems do not allow"
            )


def check_not_input(output: Path, source: Path, *, directory: bool = True) -> None:
    """Refuse an output that is `source`, or (a `directory` output, replaced as a whole) that
    contains it or lies inside it: writing there would destroy the input."""
    if not os.path.lexists(source):
        return
    out_real, src_real = Path(os.path.realpath(output)), Path(os.path.realpath(source))
    nested = out_real in src_real.parents or src_real in out_real.parents
    if out_real == src_real or (directory and nested):
        raise BadInputError(
            f"{output} is, holds or lies inside the input {source}; writing there would destroy "
            "it, so choose another output"
        )


def is_owlvit_output(directory: Path) -> bool:
    """Recognisably written by `owlvit convert`: its conversion record names the tool."""
    try:
        record = json.loads((directory / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and record.get("tool") == TOOL_NAME


@contextlib.contextmanager
def atomic_directory(
    out: Path, overwrite: bool = False, *, force: bool = False, inputs: Sequence[Path] = ()
) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success it replaces `out`, on any failure
    (Ctrl-C and termination signals included) it is removed and `out` is left as it was."""
    from owlvit_cli.hold import hold_point

    target = check_output_dir(out, overwrite, force=force, inputs=inputs)
    created = _make_parents(target.real.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=hidden_prefix(target.real.name, TMP_MARK),
                                    dir=target.real.parent))  # fmt: skip
    except OSError as exc:
        _remove_created(created)
        raise BadInputError(f"{out.parent}: cannot create a directory here ({_why(exc)})") from exc
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should look like mkdir's
    try:
        yield tmp
        hold_point("convert-before-rename")
        raise_if_interrupted()
        _move_into_place(tmp, target, overwrite or force, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        raise


def hidden_prefix(name: str, mark: str) -> str:
    """`.NAME<mark>`, or just `<mark>` where NAME would push the full name past NAME_MAX."""
    prefix = f".{name}{mark}"
    if len(os.fsencode(prefix)) + _RANDOM_SUFFIX > NAME_MAX:
        return mark
    return prefix


def _move_into_place(tmp: Path, target: OutputTarget, replace: bool, force: bool) -> None:
    """rename(2) refuses a non-empty target directory: the race-free way to claim OUT."""
    real = target.real
    try:
        tmp.rename(real)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        if not replace:
            raise BadInputError(
                f"{target.given} was filled by someone else (another run?) while this one "
                "worked; it was left as it is and nothing was written"
            ) from None
    check_output_dir(target.given, True, force=force)  # whatever is there now
    backup = Path(tempfile.mkdtemp(prefix=hidden_prefix(real.name, OLD_MARK), dir=real.parent))
    backup.rmdir()
    real.rename(backup)
    try:
        tmp.rename(real)
    except BaseException:
        backup.rename(real)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _make_parents(parent: Path) -> list[Path]:
    """Create missing parents, returning those created (deepest last) to undo on failure."""
    missing = []
    probe = parent
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    created: list[Path] = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
    except OSError as exc:
        _remove_created(created)
        raise BadInputError(f"{parent}: cannot create this directory ({_why(exc)})") from exc
    return created


def _remove_created(created: list[Path]) -> None:
    """Only directories this run made, and only while empty: never anything else."""
    for directory in reversed(created):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path):
        path = path.parent
    return path


def _is_non_empty(directory: Path) -> bool:
    with os.scandir(directory) as entries:
        return any(True for _ in entries)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling so readers never see half of it."""
    check_name_length(path)
    real = Path(os.path.realpath(path))
    fd, tmp_name = tempfile.mkstemp(prefix=hidden_prefix(real.name, TMP_MARK), dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes it private; look like open()'s
        raise_if_interrupted()
        os.replace(tmp_name, real)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def check_writable_file(path: Path) -> None:
    """Refuse up front a file output that could not be written at the end of a long run."""
    check_name_length(path)
    real = Path(os.path.realpath(path))
    if real.is_dir():
        raise OutputError(f"{path} is a directory")
    if not real.parent.is_dir():
        raise OutputError(f"{path.parent}: no such directory")
    try:  # the only reliable test (read-only mounts, ACLs, root): create a file there
        fd, probe = tempfile.mkstemp(prefix=hidden_prefix(real.name, TMP_MARK), dir=real.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({_why(exc)})") from exc
    os.close(fd)
    os.unlink(probe)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _short(name: str) -> str:
    return name if len(name) <= 40 else f"{name[:20]}…{name[-12:]}"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
