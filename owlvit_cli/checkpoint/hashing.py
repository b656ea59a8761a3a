"""sha256 of a checkpoint, computed beside the real work and remembered.

hashlib releases the GIL on large updates, so hashing a 1.7 GB file in a second thread
overlaps the tensor writes (convert) instead of adding a second pass over the file. At
~0.85 GB/s it still costs a core for two seconds, so the digest is kept in the cache under
the file's identity (device, inode, size, modification time in ns: what git's index
trusts too) and a file that has not changed is not hashed again.

A checkpoint directory (Orbax) is hashed as its regular files in sorted relative-path order,
each as `path NUL size NUL bytes`, so a renamed, resized or edited file changes the digest;
its identity is every file's identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
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


class RememberingHasher(FileHasher):
    """Hashes, then stores the digest under the file's identity for the next run."""

    def __init__(self, path: Path, memo: Path | None) -> None:
        super().__init__(path)
        self.memo = memo

    def digest(self, progress: Progress = NO_PROGRESS) -> str:
        value = super().digest(progress)
        if self.memo is not None:
            with contextlib.suppress(OSError):
                self.memo.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.memo.with_name(f".{self.memo.name}.{os.getpid()}")
                tmp.write_text(value)
                tmp.replace(self.memo)
        return value


def _identity(path: Path) -> str:
    info = path.stat()
    return f"{path.resolve()}\0{info.st_dev}\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}"


def _memo_path(path: Path) -> Path | None:
    try:
        identity = _identity(path)
        if path.is_dir():
            identity += "".join(f"\0{name}\0{_identity(file)}" for name, file in tree_files(path))
    except OSError:
        return None
    return cache_root() / "sha256" / hashlib.sha256(identity.encode()).hexdigest()[:32]


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
