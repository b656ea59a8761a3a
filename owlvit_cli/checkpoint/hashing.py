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
write during the read), and kept on disk only if the file's last change is more than
`RACY_SECONDS` older than the start of the hash (a write in the same tick as the hash cannot
hide); the process that hashed a newer file keeps its digest in memory. What is not
covered: filesystems that do not maintain ctime (some FUSE and network mounts), and writes
through a shared writable memory map, which the kernel time-stamps only at the first write
after each write-back. A digest is what `convert` records as the source's sha256, so the
memo lives in owlvit's cache directory (`cache.py`) and deleting it only costs time.

A checkpoint directory (Orbax) is hashed as its files in sorted relative-path order, each as
`path NUL size NUL bytes`, so a renamed, resized or edited file changes the digest; links are
followed as the reader follows them (`file_tree`), so what is hashed is what is read. Its
identity is the directory's own with every file's identity folded in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from owlvit_cli.cache import cache_root
from owlvit_cli.checkpoint.file_tree import scan_tree
from owlvit_cli.errors import BadInputError, OwlvitError
from owlvit_cli.hold import hold_point
from owlvit_cli.input_files import open_regular, read_limited
from owlvit_cli.progress import NO_PROGRESS, Progress

HASH_CHUNK = 8 << 20
POLL_SECONDS = 0.1


RACY_SECONDS = 3  # coarser than any filesystem's timestamp granularity (FAT: 2 s)
# (device, inode, size, mtime_ns, ctime_ns, what lies inside: "" for a file, a digest of
# every file's identity for a directory)
Identity = tuple[int, int, int, int, int, str]


class FileHasher(threading.Thread):
    """Start it, do other work, then call `digest()`."""

    def __init__(self, path: Path, identity: Identity | None = None) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.identity = identity  # taken before hashing: the digest is remembered under it
        self.started_ns = time.time_ns()
        self._digest = ""
        self._error: BaseException | None = None
        self.hashed = 0  # bytes so far, read by digest() in the caller's thread

    def run(self) -> None:
        hold_point("checkpoint-hashing")
        try:
            hasher = hashlib.sha256()
            if self.path.is_dir():
                for file in scan_tree(self.path):
                    header = f"{file.relative}\0{file.size}\0"
                    hasher.update(header.encode("utf-8", "surrogateescape"))
                    self._hash_file(hasher, file.path)
            else:
                self._hash_file(hasher, self.path)
            self._digest = hasher.hexdigest()
        except (OSError, OwlvitError) as exc:  # reported by digest(), in the caller's thread
            self._error = exc

    def _hash_file(self, hasher: Any, path: Path) -> None:
        with open(open_regular(path), "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                hasher.update(chunk)
                self.hashed += len(chunk)

    def digest(self, progress: Progress = NO_PROGRESS) -> str:
        """The digest; if hashing is still running, `progress` shows it catch up, in bytes."""
        if self.is_alive():
            self._wait(progress)
        self.join()
        if isinstance(self._error, OwlvitError):
            raise self._error
        if isinstance(self._error, OSError):
            raise BadInputError(f"{self.path}: cannot read ({self._error.strerror or self._error})")
        if self._error is not None:
            raise self._error
        remember_digest(self.path, self.identity, self.started_ns, self._digest)
        return self._digest

    def _wait(self, progress: Progress) -> None:
        with progress.step("hashing the checkpoint (sha256)") as step:
            with contextlib.suppress(OSError, OwlvitError):
                step.set_total(total_size(self.path), "bytes")
            shown = 0
            while self.is_alive():
                self.join(POLL_SECONDS)
                done = self.hashed
                step.advance(done - shown)
                shown = done


class OrderedHasher(FileHasher):
    """sha256 of a file from the buffers its readers fill anyway, instead of a second read.

    Convert reads every payload of a msgpack checkpoint into memory once, to transform and
    write it; hashing those buffers in file order, and reading here only the few bytes between
    them, gives the file's digest for the cost of the hash alone (a second read was 0.34 s of
    CPU for a 0.61 GB B/32 on 2 cores). Readers `submit` the declared `spans` as they fill
    them, whole or in consecutive parts, and may reuse a buffer once `wait_hashed` returns;
    parts may arrive in any order, as long as none is held back waiting for a later one."""

    def __init__(
        self,
        path: Path,
        size: int,
        spans: Iterable[tuple[int, int]],
        read_into: Callable[[memoryview, int], None],
        identity: Identity | None = None,
    ) -> None:
        super().__init__(path, identity)
        self.size = size
        self.spans = sorted((offset, length) for offset, length in spans if length)
        self._read_into = read_into
        self._ready: dict[int, memoryview] = {}
        self._hashed_to = 0  # every byte before this offset is in the digest
        self._aborted = False
        self._changed = threading.Condition()

    def submit(self, offset: int, data: memoryview) -> None:
        with self._changed:
            self._ready[offset] = data
            self._changed.notify_all()

    def wait_hashed(self, end: int) -> None:
        """Until the bytes before `end` are hashed (or hashing stopped): their buffer is free."""
        with self._changed:
            while self._hashed_to < end and not self._stopped():
                self._changed.wait()

    def abort(self) -> None:
        with self._changed:
            self._aborted = True
            self._changed.notify_all()

    def _stopped(self) -> bool:
        return self._aborted or self._error is not None or not self.is_alive()

    def run(self) -> None:
        try:
            hasher = hashlib.sha256()
            for offset, length in self.spans:
                self._hash_gap(hasher, self._hashed_to, offset)
                while self._hashed_to < offset + length:  # readers may submit it in parts
                    data = self._take(self._hashed_to)
                    if data is None:
                        return
                    hasher.update(data)  # outside the lock; hashlib releases the GIL
                    self._advance(self._hashed_to + len(data))
            self._hash_gap(hasher, self._hashed_to, self.size)
            self._digest = hasher.hexdigest()
        except BaseException as exc:  # reported by digest(), in the caller's thread
            self._error = exc
        finally:
            with self._changed:
                self._changed.notify_all()

    def _take(self, offset: int) -> memoryview | None:
        with self._changed:
            while offset not in self._ready and not self._aborted:
                self._changed.wait()
            return None if self._aborted else self._ready.pop(offset)

    def _advance(self, position: int) -> None:
        with self._changed:
            self.hashed += position - self._hashed_to
            self._hashed_to = position
            self._changed.notify_all()

    def _hash_gap(self, hasher: Any, start: int, end: int) -> None:
        if start > end:
            raise ValueError(f"overlapping spans at byte {end}")
        scratch = memoryview(bytearray(min(end - start, HASH_CHUNK)))
        while start < end:
            chunk = scratch[: min(len(scratch), end - start)]
            self._read_into(chunk, start)
            hasher.update(chunk)
            self._advance(start + len(chunk))
            start += len(chunk)


def total_size(path: Path) -> int:
    """Bytes hashed for `path`: the file's size, or a directory's files together (links
    followed)."""
    if path.is_dir():
        return sum(file.size for file in scan_tree(path))
    return path.stat().st_size


class KnownDigest:
    """A digest remembered from an earlier run: nothing to compute."""

    def __init__(self, digest: str) -> None:
        self._digest = digest

    def digest(self, progress: Progress = NO_PROGRESS) -> str:
        return self._digest


def file_identity(path: Path) -> Identity | None:
    """The identity trusted to say a checkpoint did not change, or None if it cannot be
    stat'ed. A directory's size and times are its files' total and latest."""
    try:
        info = os.stat(path)
        if not path.is_dir():
            return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, "")
        files = scan_tree(path)
    except (OSError, OwlvitError):
        return None
    inside = hashlib.sha256()
    for file in files:
        fields = (file.relative, *file.stamp)
        inside.update("\0".join(map(str, fields)).encode("utf-8", "surrogateescape") + b"\n")
    return (
        info.st_dev,
        info.st_ino,
        sum(file.size for file in files),
        max([info.st_mtime_ns, *(file.stamp[3] for file in files)]),
        max([info.st_ctime_ns, *(file.stamp[4] for file in files)]),
        inside.hexdigest(),
    )


def _settled(identity: Identity, started_ns: int) -> bool:
    """Last changed long enough before the hash for timestamps to tell a later write apart
    (the "racy" rule in this module's docstring)."""
    last_change = max(identity[3], identity[4])
    return last_change < started_ns - RACY_SECONDS * 1_000_000_000


# This process's digests, by identity. A write within one timestamp tick of the hash is the
# blind spot of any hash followed by a read (verify hashes, then reads the weights): kept in
# memory, a digest carries that blind spot no further than this process, so the racy rule
# is left to the digests kept on disk, which would carry it into every later run. Without it
# a `convert --verify` of a file written just before would hash that file twice.
_REMEMBERED: dict[Identity, str] = {}


def remember_digest(path: Path, identity: Identity | None, started_ns: int, value: str) -> None:
    """Keep `value` for the rest of this process if the identity taken before hashing still
    holds (no write during the hash), and for later runs too if the file had settled."""
    if identity is None or file_identity(path) != identity:
        return
    _REMEMBERED[identity] = value
    if not _settled(identity, started_ns):
        return
    from owlvit_cli.atomic import atomic_write_bytes

    memo = _memo_path(identity)
    with contextlib.suppress(OSError, OwlvitError):  # a cache: without it the next run hashes
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(memo, value.encode())  # no stray temporary after a signal


def remembered_digest(identity: Identity | None) -> str | None:
    if identity is None:
        return None
    if identity in _REMEMBERED:
        return _REMEMBERED[identity]
    with contextlib.suppress(OwlvitError, ValueError):
        known = read_limited(_memo_path(identity), 256).decode().strip()
        if len(known) == 64 and int(known, 16) >= 0:
            return known
    return None


def _memo_path(identity: Identity) -> Path:
    key = "\0".join(map(str, identity))
    return cache_root() / "sha256" / hashlib.sha256(key.encode()).hexdigest()[:32]


def start_hashing(
    path: Path, make: Callable[[Identity | None], FileHasher] | None = None
) -> FileHasher | KnownDigest:
    """The digest remembered for `path`, else a started hasher: a `FileHasher` reading the
    file, or what `make` builds for the identity (convert's `OrderedHasher`)."""
    identity = file_identity(path)
    known = remembered_digest(identity)
    if known is not None:
        return KnownDigest(known)
    hasher = make(identity) if make is not None else FileHasher(path, identity)
    hasher.start()
    return hasher
