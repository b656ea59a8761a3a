"""A model directory held to what it was when a command began to read it.

verify reads HF_DIR over seconds or minutes: its config, weights, processor and conversion
record. A `convert --overwrite` (or a user) replacing or rewriting it meanwhile would end in
a "mapping" failure that is really another directory, or in a report saying `passed` written
next to weights nobody compared. So the directory is opened once, and what the command reads
from it is pinned by identity: the directory's (device, inode), and (device, inode, size,
mtime, ctime) of every file read, symlinks included. `check` refuses any change; `write`
puts a file into the directory that was opened and pinned, never into whatever took its
name since, and replaces a symlink of that name instead of writing where it points.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from owlvit_cli.atomic import atomic_write_at
from owlvit_cli.errors import ModelDirError
from owlvit_cli.model.model_dir import (
    CONFIG_FILE,
    PROCESSOR_FILES,
    RECORD_FILE,
    TOKENIZER_FILES,
    WEIGHTS_INDEX_FILE,
)

# What verify reads (with every *.safetensors file): a change to anything else, say the model
# card, does not make a verification wrong.
READ_FILES = frozenset({CONFIG_FILE, WEIGHTS_INDEX_FILE, RECORD_FILE, *TOKENIZER_FILES,
                        *PROCESSOR_FILES})  # fmt: skip

FileIdentity = tuple[int, ...] | None


class PinnedDir:
    """An open directory and the identity of the files read from it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self._identity = _dir_identity(os.fstat(fd))
        self._files = self._snapshot()

    def check(self) -> None:
        """Refuse (one line) if the directory was replaced, or a file read from it changed."""
        try:
            now = _dir_identity(os.stat(self.path))
        except OSError:
            now = None
        if now != self._identity:
            raise ModelDirError(
                f"{self.path} was replaced while it was being read (by another run?); nothing "
                "was recorded: what was compared is no longer there"
            )
        files = self._snapshot()
        changed = sorted(n for n in files.keys() | self._files.keys()
                         if files.get(n) != self._files.get(n))  # fmt: skip
        if changed:
            raise ModelDirError(
                f"{self.path} changed while it was being read ({', '.join(changed[:4])}); "
                "nothing was recorded: what was compared is no longer there"
            )

    def write(self, name: str, data: bytes) -> None:
        """Write `name` into the pinned directory, whole or not at all."""
        atomic_write_at(self.fd, name, data, shown_as=self.path / name)

    def read_bytes(self, name: str) -> bytes | None:
        """A file of the pinned directory, or None where there is none (or a non-file)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            return handle.read()

    def _snapshot(self) -> dict[str, FileIdentity]:
        return {name: _file_identity(self.fd, name) for name in os.listdir(self.fd)
                if name in READ_FILES or name.endswith(".safetensors")}  # fmt: skip


@contextlib.contextmanager
def pinned_directory(path: Path) -> Iterator[PinnedDir | None]:
    """The directory at `path`, pinned; None where it is no directory (the command's own
    checks say what is wrong with it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        yield PinnedDir(path, fd)
    finally:
        os.close(fd)


def _dir_identity(info: os.stat_result) -> tuple[int, int]:
    return (info.st_dev, info.st_ino)


def _file_identity(dir_fd: int, name: str) -> FileIdentity:
    fields: list[int] = []
    for follow in (False, True):
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=follow)
        except OSError:
            return None
        fields += [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
    return tuple(fields)
