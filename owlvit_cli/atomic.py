"""Outputs appear whole or not at all, and nothing a user owns is ever lost.

A directory output is written into a hidden temporary sibling of its real (symlink-resolved)
location, so that the final rename stays on one filesystem, and renamed into place at the end.
The rules, checked before any work starts:
- OUT may not be, contain or lie inside an input of the same run.
- Without `overwrite`, OUT must be absent or an empty directory, and the final step is a plain
  rename(2), which the kernel refuses onto a non-empty directory: of two runs racing for the
  same OUT exactly one wins, the other fails and leaves nothing.
- With `overwrite`, only a directory that the caller's `replaceable` check vouches for (an
  earlier output whose every file the run's own tool wrote) is replaced, and it is checked
  again once it has been moved aside, just before it is deleted; any other non-empty
  directory needs `force` as well.
- Never the current directory, a mount point, the home directory or a directory holding
  one of them, whatever the flags.
- Missing parent directories are created, and removed again if the run fails.

Every temporary output is registered here while it exists, so that the console script, when a
signal ends it from the main thread while the command's thread may sit in a long native call,
removes them (and puts back an output that was being replaced) without that thread's help:
`remove_temporaries`. A rename is one step that this never cuts in half, and no rename starts
after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from owlvit_cli.errors import BadInputError, OutputError
from owlvit_cli.interrupts import SignalState, raise_if_interrupted, wait_for_the_end

TMP_MARK = ".owlvit-tmp-"
OLD_MARK = ".owlvit-old-"
NAME_MAX = 255
_RANDOM_SUFFIX = 8  # what tempfile appends
ENDING_WAIT_SECONDS = 2.0  # how long an ending waits for a rename (a hung one cannot hold it)


class _Temporaries:
    """The undo actions of the temporary outputs that exist now, and whether the process is
    being ended (then no rename starts)."""

    lock = threading.RLock()
    undo: ClassVar[dict[int, Callable[[], None]]] = {}
    ending = False


@contextlib.contextmanager
def _visible_step() -> Iterator[None]:
    """A change the user can see (a rename, a restore): whole, or not started when the process
    is ended by a signal (the calling thread then waits here for that end)."""
    with _Temporaries.lock:
        if not _Temporaries.ending and SignalState.received is None:
            yield
            return
    raise_if_interrupted()  # outside the lock, which the ending needs
    wait_for_the_end()


@contextlib.contextmanager
def _registered(undo: Callable[[], None]) -> Iterator[Callable[[], None]]:
    """Keep `undo` for `remove_temporaries` while the block runs; the block may call the
    function it gets to drop it early (once its output is in place)."""
    key = id(undo)
    with _Temporaries.lock:
        _Temporaries.undo[key] = undo

    def forget() -> None:
        with _Temporaries.lock:
            _Temporaries.undo.pop(key, None)

    try:
        yield forget
    finally:
        forget()


def remove_temporaries() -> None:
    """Undo every temporary output that exists now, and let no rename start after this: the
    console script calls it when a signal ends the process, from the main thread, while the
    command's thread may still run. A rename in progress is waited for, but not for long."""
    acquired = _Temporaries.lock.acquire(timeout=ENDING_WAIT_SECONDS)
    try:
        _Temporaries.ending = True
        undo, _Temporaries.undo = list(_Temporaries.undo.values()), {}
        for action in reversed(undo):
            with contextlib.suppress(OSError):
                action()
    finally:
        if acquired:
            _Temporaries.lock.release()


@dataclass(frozen=True)
class OutputTarget:
    """Where an output directory really goes, as checked before any work."""

    given: Path
    real: Path
    exists: bool


# Why a non-empty directory may not be replaced without `force`, or None where it may.
Replaceable = Callable[[Path], "str | None"]


def check_output_dir(
    out: Path,
    overwrite: bool,
    *,
    force: bool = False,
    inputs: Sequence[Path] = (),
    replaceable: Replaceable | None = None,
) -> OutputTarget:
    """Apply the module's rules to `out` (a path as the user gave it) without changing anything."""
    check_name_length(out)
    real = Path(os.path.realpath(out))  # a symlinked OUT is written where it points
    for source in inputs:
        check_not_input(out, source)
    _check_not_precious(out, real)
    exists = os.path.lexists(real)
    if exists and not real.is_dir():
        raise BadInputError(f"{out} exists and is not a directory")
    if exists and _is_non_empty(real) and not force:
        if not overwrite:
            raise BadInputError(f"{out} is not empty", hint="pass --overwrite to replace it")
        _check_replaceable(out, real, replaceable)
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


def _check_not_precious(out: Path, real: Path) -> None:
    """Directories no flag may replace: replacing one deletes what the user stands in."""
    home = os.path.realpath(os.path.expanduser("~"))
    for kept in (os.getcwd(), home):
        if real == Path(kept) or real in Path(kept).parents:
            raise BadInputError(
                f"{out} is or holds the current directory or the home directory, which cannot "
                "be replaced; name a new directory instead"
            )
    if os.path.ismount(real):
        raise BadInputError(
            f"{out} is a mount point, which cannot be replaced; name a new directory inside it"
        )


def _check_replaceable(out: Path, real: Path, replaceable: Replaceable | None) -> None:
    why = "nothing vouches for what is in it" if replaceable is None else replaceable(real)
    if why is not None:
        raise BadInputError(
            f"{out} is not empty and is left alone: {why}",
            hint="pass --force-overwrite to replace it and everything in it",
        )


@contextlib.contextmanager
def atomic_directory(
    out: Path,
    overwrite: bool = False,
    *,
    force: bool = False,
    inputs: Sequence[Path] = (),
    replaceable: Replaceable | None = None,
) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success it replaces `out`, on any failure
    (Ctrl-C and termination signals included) it is removed and `out` is left as it was."""
    from owlvit_cli.hold import hold_point

    target = check_output_dir(out, overwrite, force=force, inputs=inputs, replaceable=replaceable)
    made: list[Path] = []

    def undo() -> None:
        for tmp in made[:1]:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(made[1:])

    with _registered(undo) as done:
        with _visible_step():
            made.extend(_make_temporary_directory(out, target))
        tmp = made[0]
        try:
            yield tmp
            hold_point("convert-before-rename")
            with _visible_step():
                _move_into_place(tmp, target, overwrite or force, force, replaceable)
                done()
        except BaseException:
            undo()
            raise


def _make_temporary_directory(out: Path, target: OutputTarget) -> list[Path]:
    """The temporary sibling, then the missing parents made for it (to remove on failure)."""
    created = _make_parents(target.real.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=hidden_prefix(target.real.name, TMP_MARK),
                                    dir=target.real.parent))  # fmt: skip
    except OSError as exc:
        _remove_created(created)
        raise BadInputError(f"{out.parent}: cannot create a directory here ({_why(exc)})") from exc
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should look like mkdir's
    return [tmp, *created]


def hidden_prefix(name: str, mark: str) -> str:
    """`.NAME<mark>`, or just `<mark>` where NAME would push the full name past NAME_MAX."""
    prefix = f".{name}{mark}"
    if len(os.fsencode(prefix)) + _RANDOM_SUFFIX > NAME_MAX:
        return mark
    return prefix


def _move_into_place(
    tmp: Path, target: OutputTarget, replace: bool, force: bool, replaceable: Replaceable | None
) -> None:
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
    check_output_dir(target.given, True, force=force, replaceable=replaceable)  # what is there now
    backup = Path(tempfile.mkdtemp(prefix=hidden_prefix(real.name, OLD_MARK), dir=real.parent))
    backup.rmdir()
    real.rename(backup)
    try:
        if not force:  # a file added between that check and the rename: still the user's
            _check_replaceable(target.given, backup, replaceable)
        tmp.rename(real)
    except BaseException:
        backup.rename(real)
        raise
    with _registered(lambda: shutil.rmtree(backup, ignore_errors=True)):  # finished if cut short
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


def atomic_write_bytes(path: Path, data: bytes, *, follow_symlinks: bool = True) -> None:
    """Write a file through a temporary sibling so readers never see half of it. A write the
    filesystem refuses (disk full, quota, permissions) is an `OutputError` naming `path`.

    A symlink at `path` is written through (the user's own output link), unless
    `follow_symlinks` is false: then the link itself is replaced by the file."""
    check_name_length(path)
    if follow_symlinks:
        real = Path(os.path.realpath(path))
    else:
        real = Path(os.path.realpath(path.parent)) / path.name
    try:
        with _temporary_file(real) as (fd, tmp_name, done):
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes it private; look like open()'s
            with _visible_step():
                os.replace(tmp_name, real)
                done()
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_why(exc)})") from exc


@contextlib.contextmanager
def _temporary_file(real: Path) -> Iterator[tuple[int, str, Callable[[], None]]]:
    """A new hidden sibling of `real`, removed unless the block calls the function it gets
    once the file has been renamed away, also when a signal ends the process."""
    names: list[str] = []

    def undo() -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    with _registered(undo) as forget:
        with _visible_step():
            fd, name = tempfile.mkstemp(prefix=hidden_prefix(real.name, TMP_MARK), dir=real.parent)
            names.append(name)

        def done() -> None:
            names.clear()
            forget()

        try:
            yield fd, name, done
        finally:
            undo()


def atomic_write_at(dir_fd: int, name: str, data: bytes, *, shown_as: Path) -> None:
    """`atomic_write_bytes` into the directory open as `dir_fd`, whatever holds its path now;
    a symlink named `name` is replaced, not written through. `shown_as` names it in errors."""
    check_name_length(Path(name))
    tmp_name = hidden_prefix(name, TMP_MARK) + secrets.token_hex(_RANDOM_SUFFIX // 2)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    made: list[str] = []

    def undo() -> None:
        for made_name in made:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(made_name, dir_fd=dir_fd)

    try:
        with _registered(undo) as forget:
            with _visible_step():
                fd = os.open(tmp_name, flags, 0o666, dir_fd=dir_fd)  # the umask applies
                made.append(tmp_name)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                with _visible_step():
                    os.replace(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                    made.clear()
                    forget()
            finally:
                undo()
    except OSError as exc:
        raise OutputError(f"{shown_as}: cannot write ({_why(exc)})") from exc


def check_writable_file(path: Path) -> None:
    """Refuse up front a file output that could not be written at the end of a long run."""
    check_name_length(path)
    real = Path(os.path.realpath(path))
    if real.is_dir():
        raise OutputError(f"{path} is a directory")
    if not real.parent.is_dir():
        raise OutputError(f"{path.parent}: no such directory")
    try:  # the only reliable test (read-only mounts, ACLs, root): create a file there
        with _temporary_file(real) as (fd, _, _):
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({_why(exc)})") from exc


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _short(name: str) -> str:
    return name if len(name) <= 40 else f"{name[:20]}…{name[-12:]}"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
