"""Opening a file the user named, safely: only regular files, and small files read whole only
up to a limit.

Anything but a regular file is refused before it is opened: a FIFO blocks the open (and every
read) until some writer appears, `/dev/zero` or `/dev/urandom` never end, a socket cannot be
opened at all. Links are followed, as every reader follows them, and the check is on what
they point to. The open itself uses O_NONBLOCK, so a FIFO swapped in after the check cannot
block it either, and the descriptor is checked again.

The limits below are the one place that says how much of a metadata or JSON file owlvit will
hold in memory; each is far above what any real file of its kind holds.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from owlvit_cli.errors import BadInputError, OwlvitError
from owlvit_cli.json_text import parse_json

# Real files: a config.json or owlvit_conversion.json holds a few KB, a safetensors header or
# an index some 100 KB, an Orbax `_METADATA` of a whole train state a few MB.
JSON_LIMIT = 16 << 20
METADATA_LIMIT = 256 << 20

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words ("a pipe (FIFO)")."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def regular_stat(path: Path, error: type[OwlvitError] = BadInputError) -> os.stat_result:
    """The stat of the regular file `path` names (links followed), or `error` saying what it
    is instead."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path} is {file_kind(info.st_mode)}, not a regular file")
    return info


def is_regular_file(path: Path, error: type[OwlvitError] = BadInputError) -> bool:
    """Whether a regular file is at `path` (links followed): False if nothing is, `error` if
    something else is, since a pipe or a device where a file belongs is not a missing file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if stat.S_ISREG(info.st_mode):
        return True
    raise error(f"{path} is {file_kind(info.st_mode)}, not a regular file")


def open_regular(path: Path, error: type[OwlvitError] = BadInputError) -> int:
    """A read-only descriptor of the regular file `path` names; nothing else is opened."""
    regular_stat(path, error)
    try:
        fd = os.open(path, OPEN_FLAGS)
    except PermissionError as exc:
        raise error(f"{path}: permission denied") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # swapped between the check and the open
        os.close(fd)
        raise error(f"{path} is {file_kind(mode)}, not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_limited(
    path: Path, limit: int = JSON_LIMIT, error: type[OwlvitError] = BadInputError
) -> bytes:
    """The whole of the small regular file `path`, refused past `limit` bytes (the size on
    disk is checked first; what is read is capped too, for files that grow or lie about
    their size, as /proc files do)."""
    fd = open_regular(path, error)
    try:
        if os.fstat(fd).st_size > limit:
            raise error(_too_large(path, limit))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(_too_large(path, limit))
    return data


def read_json_file(
    path: Path, limit: int = JSON_LIMIT, error: type[OwlvitError] = BadInputError
) -> Any:
    """A JSON file the user gave, read within `limit` and parsed strictly (`parse_json`)."""
    return parse_json(read_limited(path, limit, error), str(path), error)


def _too_large(path: Path, limit: int) -> str:
    return f"{path}: larger than the {limit >> 20} MiB such a file may hold; not reading it"
