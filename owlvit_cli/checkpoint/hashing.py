"""sha256 of a checkpoint, computed beside the real work and remembered.

hashlib releases the GIL on large updates, so hashing a 1.7 GB file in a second thread
overlaps the tensor writes (convert) instead of adding a second pass over the file. At
~0.85 GB/s it still costs a core for two seconds, so the digest is kept in the cache under
the file's identity (device, inode, size, modification time in ns: what git's index
trusts too) and a file that has not changed is not hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
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


class RememberingHasher(FileHasher):
    """Hashes, then stores the digest under the file's identity for the next run."""

    def __init__(self, path: Path, memo: Path | None) -> None:
        super().__init__(path)
        self.memo = memo

    def digest(self) -> str:
        value = super().digest()
        if self.memo is not None:
            with contextlib.suppress(OSError):
                self.memo.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.memo.with_name(f".{self.memo.name}.{os.getpid()}")
                tmp.write_text(value)
                tmp.replace(self.memo)
        return value


def _memo_path(path: Path) -> Path | None:
    try:
        info = path.stat()
    except OSError:
        return None
    identity = f"{path.resolve()}\0{info.st_dev}\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}"
    return cache_root() / "sha256" / hashlib.sha256(os.fsencode(identity)).hexdigest()[:32]


def start_hashing(path: Path) -> FileHasher | KnownDigest:
    memo = _memo_path(path)
    if memo is not None:
        with contextlib.suppress(OSError, ValueError):
            known = memo.read_text().strip()
            if len(known) == 64 and int(known, 16) >= 0:
                return KnownDigest(known)
    hasher = RememberingHasher(path, memo)
    hasher.start()
    return hasher
