"""The read-ahead thread: reads what is not cached, skips what is, stops when told."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from owlvit_cli.checkpoint import prefetch
from owlvit_cli.checkpoint.reader import open_checkpoint

pytestmark = pytest.mark.skipif(not prefetch.supported(), reason="needs preadv + RWF_NOWAIT")
MIB = 1 << 20


def write_file(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())  # clean pages, so the kernel agrees to drop them
    return path


def is_cached(path: Path, offset: int) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(1)], offset, os.RWF_NOWAIT)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if is_cached(path, 0):
        pytest.skip("this filesystem keeps the file cached (e.g. tmpfs)")


def test_reads_a_cold_file_into_the_page_cache(tmp_path: Path):
    path = write_file(tmp_path / "cold.bin", 8 * MIB + 123)
    evict(path)
    reader = prefetch.Prefetcher(path, path.stat().st_size)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive()
    # It read what was missing (the kernel's own read-ahead may bring in more per read).
    assert 0 < reader.read_bytes <= path.stat().st_size
    assert all(is_cached(path, offset) for offset in range(0, path.stat().st_size, MIB))


def test_skips_a_file_already_cached(tmp_path: Path):
    path = write_file(tmp_path / "warm.bin", 4 * MIB)
    path.read_bytes()
    reader = prefetch.Prefetcher(path, path.stat().st_size)
    reader.start()
    reader.join(timeout=30)
    assert reader.read_bytes == 0  # probed, nothing read twice


def test_stop_ends_the_thread_early(tmp_path: Path):
    path = write_file(tmp_path / "f.bin", MIB)
    reader = prefetch.Prefetcher(path, 1 << 40)  # far past the end: only stop() ends it
    reader.start()
    reader.stop()
    assert not reader.is_alive()


def test_one_reader_per_file_and_none_for_what_is_not_a_file(tmp_path: Path):
    path = write_file(tmp_path / "f.bin", 3 * MIB)
    evict(path)
    first = prefetch.start_prefetch(path)
    again = prefetch.start_prefetch(tmp_path / "." / "f.bin")
    assert first is not None and (again is first or not first.is_alive())
    first.stop()
    assert prefetch.start_prefetch(tmp_path) is None
    assert prefetch.start_prefetch(tmp_path / "missing") is None


def test_streaming_a_checkpoint_reads_ahead_and_close_stops_it(tiny_checkpoint):
    with open_checkpoint(tiny_checkpoint()) as ckpt:
        ckpt.stream()
        reader = ckpt._prefetcher
        assert reader is not None
    assert ckpt._prefetcher is None and not reader.is_alive()
