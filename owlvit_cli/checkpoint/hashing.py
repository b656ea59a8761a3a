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
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

from owlvit_cli.checkpoint.cache import cache_root
from owlvit_cli.errors import BadInputError

HASH_CHUNK = 8 << 20


class FileHasher(threading.Thread):
    """Start it, do other work, then call `digest()`."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self._digest = ""
        self._error: OSError | None = None

    def run(self) -> None:
        try:
            hasher = hashlib.sha256()
            with self.path.open("rb") as handle:
                while chunk := handle.read(HASH_CHUNK):
                    hasher.update(chunk)
            self._digest = hasher.hexdigest()
        except OSError as exc:  # reported by digest(), in the caller's thread
            self._error = exc

    def digest(self) -> str:
        self.join()
        if self._error is not None:
            raise BadInputError(f"{self.path}: cannot read ({self._error.strerror or self._error})")
        return self._digest


class KnownDigest:
    """A digest remembered from an earlier run: nothing to compute."""

    def __init__(self, digest: str) -> None:
        self._digest = digest

    def digest(self) -> str:
        return self._digest


RACY_SECONDS = 3  # coarser than any filesystem's timestamp granularity (FAT: 2 s)
Identity = tuple[int, int, int, int, int]


def file_identity(path: Path) -> Identity | None:
    """(device, inode, size, mtime_ns, ctime_ns), or None if the file cannot be stat'ed."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class RememberingHasher(FileHasher):
    """Hashes, then stores the digest under the file's identity for the next run, if the file
    did not change while it was read and is old enough for its timestamps to tell."""

    def __init__(self, path: Path, identity: Identity | None) -> None:
        super().__init__(path)
        self.identity = identity
        self.started_ns = time.time_ns()

    def digest(self) -> str:
        value = super().digest()
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
