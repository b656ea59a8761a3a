"""Read a file into the page cache ahead of the code that consumes it.

Reads of a cold file wait for the disk in the very threads that transpose and write, so
reading and working take turns. A thread that reads the file in large sequential `preadv`
calls keeps the disk busy on its own, the way `cat` does, and the consumers find their pages
cached. Before each chunk it probes one byte with `RWF_NOWAIT`, which fails instead of waiting
when the page is not cached: a file that is already warm costs a syscall per chunk, not a
second copy of its bytes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

PREFETCH_CHUNK = 1 << 20  # fits in L2: the throw-away copy stays cheap


def supported() -> bool:
    return hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")


class Prefetcher(threading.Thread):
    """Reads `path[:end]` once, in order, until done or stopped; never raises."""

    def __init__(self, path: Path, end: int) -> None:
        super().__init__(name="owlvit-prefetch", daemon=True)
        self.path, self.end = path, end
        self._stop_requested = threading.Event()
        self.read_bytes = 0  # what had to come from the disk (not already cached)

    def run(self) -> None:
        with contextlib.suppress(OSError):  # a read error surfaces where the data is used
            fd = os.open(self.path, os.O_RDONLY)
            try:
                self._read_all(fd)
            finally:
                os.close(fd)

    def _read_all(self, fd: int) -> None:
        scratch = memoryview(bytearray(PREFETCH_CHUNK))
        probe = memoryview(bytearray(1))
        offset = 0
        probing = True
        while offset < self.end and not self._stop_requested.is_set():
            cached = False
            if probing:
                try:
                    cached = os.preadv(fd, [probe], offset, os.RWF_NOWAIT) == 1
                except BlockingIOError:  # not cached: this is the read worth doing
                    pass
                except OSError:  # the filesystem cannot tell (EOPNOTSUPP): read it all
                    probing = False
            if not cached:
                self.read_bytes += os.preadv(fd, [scratch], offset)
            offset += PREFETCH_CHUNK

    def stop(self) -> None:
        self._stop_requested.set()
        if self.is_alive():
            self.join()


_running: dict[Path, Prefetcher] = {}
_running_lock = threading.Lock()


def start_prefetch(path: str | os.PathLike[str]) -> Prefetcher | None:
    """Start reading the whole file ahead, or join the reader already at it: a command starts
    one before its heavy imports, and the checkpoint reader asks again when it streams.
    None where the OS lacks what it needs (then the kernel's own read-ahead applies)."""
    if not supported():
        return None
    try:
        key = Path(path).resolve()
        info = key.stat()
    except OSError:  # the reader reports it, in its own words
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    with _running_lock:
        running = _running.get(key)
        if running is not None and running.is_alive():
            return running
        prefetcher = _running[key] = Prefetcher(key, info.st_size)
        prefetcher.start()
        return prefetcher


@contextlib.contextmanager
def prefetching(path: str | os.PathLike[str]) -> Iterator[None]:
    """Read `path` ahead for the duration of the block."""
    prefetcher = start_prefetch(path)
    try:
        yield
    finally:
        if prefetcher is not None:
            prefetcher.stop()
