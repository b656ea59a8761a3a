"""sha256 of a checkpoint, computed beside the real work and remembered.

hashlib releases the GIL on large updates, so hashing a 1.7 GB file in a second thread
overlaps the tensor writes (convert) instead of adding a second pass over the file. It still
costs a core for a second or two, so the digest is remembered under the file's identity and a
file that has not changed is not hashed again.

The identity trusted is (device, inode, size, mtime_ns, ctime_ns). Content can change under
an unchanged (path, size, mtime): `touch -d`/`os.utime` set mtime back, and a rewrite within
one timestamp tick (up to 2 s on some filesystems) leaves it equal. ctime cannot be set by
any user call and moves on every write and every utime, and (device, inode) tells a replaced
file from the old one. Two rules close the remaining gaps, as git's index does for "racy"
files: a digest is remembered only if the identity was the same before and after hashing (no
write during the read), and only if the file's last change is more than `RACY_SECONDS` older
than the start of the hash (a write in the same tick as the hash cannot hide). What is not
covered: filesystems that do not maintain ctime (some FUSE and network mounts), and writes
through a shared writable memory map, which the kernel time-stamps only at the first write
after each write-back. A digest is what `convert` records as the source's sha256, so the
memo lives in owlvit's cache directory (`checkpoint/cache.py`) and deleting it only costs time.

A checkpoint directory (Orbax) is hashed as its regular files in sorted relative-path order,
each as `path NUL size NUL bytes`, so a renamed, resized or edited file changes the digest;
its identity is the directory's own with every file's identity folded in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from owlvit_cli.checkpoint.cache import cache_root
from owlvit_cli.errors import BadInputError
from owlvit_cli.progress import NO_PROGRESS, Progress

HASH_CHUNK = 8 << 20
POLL_SECONDS = 0.1


class FileHasher(threading.Thread):
    """Start it, do other work, then call `digest()`."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self._digest = ""
        self._error: OSError | None = None
        self.hashed = 0  # bytes so far, read by digest() in the caller's thread

    def run(self) -> None:
        try:
            hasher = hashlib.sha256()
            if self.path.is_dir():
                for relative, file in tree_files(self.path):
                    header = f"{relative}\0{file.stat().st_size}\0"
                    hasher.update(header.encode("utf-8", "surrogateescape"))
                    self._hash_file(hasher, file)
            else:
                self._hash_file(hasher, self.path)
            self._digest = hasher.hexdigest()
        except OSError as exc:  # reported by digest(), in the caller's thread
            self._error = exc

    def _hash_file(self, hasher: Any, path: Path) -> None:
        with path.open("rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                hasher.update(chunk)
                self.hashed += len(chunk)

    def digest(self, progress: Progress = NO_PROGRESS) -> str:
        """The digest; if hashing is still running, `progress` shows it catch up, in bytes."""
        if self.is_alive():
            self._wait(progress)
        self.join()
        if self._error is not None:
            raise BadInputError(f"{self.path}: cannot read ({self._error.strerror or self._error})")
        return self._digest

    def _wait(self, progress: Progress) -> None:
        with progress.step("hashing the checkpoint (sha256)") as step:
            with contextlib.suppress(OSError):
                step.set_total(total_size(self.path), "bytes")
            shown = 0
            while self.is_alive():
                self.join(POLL_SECONDS)
                done = self.hashed
                step.advance(done - shown)
                shown = done


def tree_files(root: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every regular file under `root`, sorted by the former."""
    files = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                files.append((path.relative_to(root).as_posix(), path))
    return sorted(files)


def total_size(path: Path) -> int:
    """Bytes hashed for `path`: the file's size, or a directory's regular files together."""
    if path.is_dir():
        return sum(file.stat().st_size for _, file in tree_files(path))
    return path.stat().st_size


class KnownDigest:
    """A digest remembered from an earlier run: nothing to compute."""

    def __init__(self, digest: str) -> None:
        self._digest = digest

    def digest(self, progress: Progress = NO_PROGRESS) -> str:
        return self._digest


RACY_SECONDS = 3  # coarser than any filesystem's timestamp granularity (FAT: 2 s)
# (device, inode, size, mtime_ns, ctime_ns, what lies inside: "" for a file, a digest of
# every file's identity for a directory)
Identity = tuple[int, int, int, int, int, str]


def file_identity(path: Path) -> Identity | None:
    """The identity trusted to say a checkpoint did not change, or None if it cannot be
    stat'ed. A directory's size and times are its files' total and latest."""
    try:
        info = os.stat(path)
        if not path.is_dir():
            return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, "")
        files = [(name, os.stat(file)) for name, file in tree_files(path)]
    except OSError:
        return None
    inside = hashlib.sha256()
    for name, st in files:
        fields = (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        inside.update("\0".join(map(str, fields)).encode("utf-8", "surrogateescape") + b"\n")
    return (
        info.st_dev,
        info.st_ino,
        sum(st.st_size for _, st in files),
        max([info.st_mtime_ns, *(st.st_mtime_ns for _, st in files)]),
        max([info.st_ctime_ns, *(st.st_ctime_ns for _, st in files)]),
        inside.hexdigest(),
    )


class RememberingHasher(FileHasher):
    """Hashes, then stores the digest under the file's identity for the next run, if the file
    did not change while it was read and is old enough for its timestamps to tell."""

    def __init__(self, path: Path, identity: Identity | None) -> None:
        super().__init__(path)
        self.identity = identity
        self.started_ns = time.time_ns()

    def digest(self, progress: Progress = NO_PROGRESS) -> str:
        value = super().digest(progress)
        if self.identity is not None and self._trustworthy():
            memo = _memo_path(self.identity)
            with contextlib.suppress(OSError):
                memo.parent.mkdir(parents=True, exist_ok=True)
                tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
                tmp.write_text(value)
                tmp.replace(memo)
        return value

    def _trustworthy(self) -> bool:
        assert self.identity is not None
        last_change = max(self.identity[3], self.identity[4])
        settled = last_change < self.started_ns - RACY_SECONDS * 1_000_000_000
        return settled and file_identity(self.path) == self.identity


def _memo_path(identity: Identity) -> Path:
    key = "\0".join(map(str, identity))
    return cache_root() / "sha256" / hashlib.sha256(key.encode()).hexdigest()[:32]


def start_hashing(path: Path) -> FileHasher | KnownDigest:
    identity = file_identity(path)
    if identity is not None:
        with contextlib.suppress(OSError, ValueError):
            known = _memo_path(identity).read_text().strip()
            if len(known) == 64 and int(known, 16) >= 0:
                return KnownDigest(known)
    hasher = RememberingHasher(path, identity)
    hasher.start()
    return hasher
