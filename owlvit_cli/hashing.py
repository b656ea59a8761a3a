"""sha256 of a checkpoint, computed beside the real work.

hashlib releases the GIL on large updates, so hashing a 1.7 GB file in a second thread
overlaps the tensor writes (convert) or the forward passes (verify) instead of adding a
second pass over the file.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

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


def start_hashing(path: Path) -> FileHasher:
    hasher = FileHasher(path)
    hasher.start()
    return hasher
