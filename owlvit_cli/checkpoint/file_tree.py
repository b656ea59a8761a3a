"""Every file of a checkpoint directory, as its reader sees them: links followed, nothing but
regular files and directories.

tensorstore opens an Orbax checkpoint's files by path, so it follows every link, of a file or
of a directory: a Hugging Face cache snapshot, git-annex, DVC or `cp -rs` make checkpoints
that are all links. Hashing and sizing must see the same bytes, so links are followed here
too. Anything a read would hang on or never finish (a FIFO, a device), a socket, a broken
link and a link back up the tree are refused up front, before any file is opened: tensorstore
would open them without asking. The stat of each file is kept, so that a checkpoint rewritten
while it was read can be told apart (`changed_files`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from owlvit_cli.errors import CheckpointError
from owlvit_cli.input_files import file_kind

# Far more than any checkpoint holds (an L/14 train state as per-array zarr folders: a few
# thousand); a link to `/` or to a home directory is refused instead of walked.
MAX_TREE_FILES = 100_000
# What tells a file's content apart (see hashing.py): (device, inode, size, mtime_ns, ctime_ns).
FileStamp = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class TreeFile:
    """One regular file of the tree: its path relative to the root (posix), and its stat."""

    relative: str
    path: Path
    stamp: FileStamp

    @property
    def size(self) -> int:
        return self.stamp[2]


def file_stamp(info: os.stat_result) -> FileStamp:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def scan_tree(root: Path) -> list[TreeFile]:
    """The regular files under `root` (links followed), sorted by relative path; anything
    else in the tree is a `CheckpointError`."""
    files: list[TreeFile] = []
    root_info = _stat(root)
    pending = [(root, "", frozenset({(root_info.st_dev, root_info.st_ino)}))]
    while pending:
        directory, prefix, ancestors = pending.pop()
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise CheckpointError(f"{directory}: cannot list ({exc.strerror or exc})") from exc
        if len(files) + len(names) > MAX_TREE_FILES:
            raise CheckpointError(
                f"{root} holds more than {MAX_TREE_FILES:,} files (links followed); not a "
                "checkpoint directory"
            )
        for name in names:
            path = directory / name
            info = _stat(path)
            relative = prefix + name
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    raise CheckpointError(f"{path}: a link back into the checkpoint (a loop)")
                pending.append((path, relative + "/", ancestors | {key}))
            elif stat.S_ISREG(info.st_mode):
                files.append(TreeFile(relative, path, file_stamp(info)))
            else:
                raise CheckpointError(
                    f"{path} is {file_kind(info.st_mode)}, not a regular file; a checkpoint "
                    "holds only files and directories"
                )
    return sorted(files, key=lambda file: file.relative)


def changed_files(before: list[TreeFile], root: Path) -> list[str]:
    """Relative paths whose file was added, removed or modified since `before` was taken."""
    try:
        now = {file.relative: file.stamp for file in scan_tree(root)}
    except CheckpointError:
        return ["(the directory itself)"]
    was = {file.relative: file.stamp for file in before}
    return sorted(name for name in was.keys() | now.keys() if was.get(name) != now.get(name))


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise CheckpointError(f"{path}: a broken link (its target does not exist)") from None
        raise CheckpointError(f"{path}: vanished while the checkpoint was read") from None
    except OSError as exc:  # ELOOP for a link to itself, EACCES, ...
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from exc
