"""Outputs appear whole or not at all: write beside the target, rename at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from owlvit_cli.errors import BadInputError

TMP_MARK = ".owlvit-tmp-"


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to clobber a non-empty directory (or any file) unless asked to."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise BadInputError(f"{out} is not empty; pass --overwrite to replace it")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise BadInputError(f"{parent}: parent directory does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"{parent}: no permission to write here")


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success it replaces `out`, on any failure
    (Ctrl-C included) it is removed and `out` is left as it was."""
    check_output_dir(out, overwrite)
    parent = out.resolve().parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP_MARK}", dir=parent))
    except OSError as exc:
        raise BadInputError(f"{parent}: cannot create a directory here ({exc.strerror})") from exc
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should look like mkdir's
    try:
        yield tmp
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, out: Path) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
    backup.rmdir()
    out.rename(backup)
    try:
        tmp.rename(out)
    except BaseException:
        backup.rename(out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling so readers never see half of it."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes it private; look like open()'s
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
