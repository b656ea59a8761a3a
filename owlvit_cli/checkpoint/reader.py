"""Open a scenic OWL-ViT checkpoint: pick its reader, and read Flax msgpack files.

Two formats, one interface (`interface.Checkpoint`): a Flax msgpack file (what scenic's
trainer and the released checkpoints are), read here with pread, and an Orbax checkpoint
directory (what flax writes by default), read by `orbax_reader` with tensorstore. Finding the
params, naming the layout and the strict per-tensor accounting are shared by both and live in
`interface`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from owlvit_cli.checkpoint.interface import (  # re-exported: every reader's callers import here
    LAYOUTS,
    ArrayInfo,
    Checkpoint,
    TensorEntry,
    canonical_name,
    detect_layout,
    index_params,
)
from owlvit_cli.checkpoint.msgpack_index import ArrayRecord, PagedFile, index_msgpack
from owlvit_cli.checkpoint.prefetch import Prefetcher, start_prefetch
from owlvit_cli.checkpoint.workdir import directory_error, resolve_checkpoint
from owlvit_cli.errors import CheckpointError
from owlvit_cli.input_files import open_regular

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "LAYOUTS",
    "ArrayInfo",
    "Checkpoint",
    "MsgpackCheckpoint",
    "TensorEntry",
    "canonical_name",
    "detect_layout",
    "index_params",
    "open_checkpoint",
    "open_msgpack",
]


@dataclass
class MsgpackCheckpoint(Checkpoint):
    """A Flax msgpack file, read with pread(2) only, never memory-mapped: a mapped file that
    is truncated while being read kills the process with SIGBUS, which no Python code can
    catch; pread just returns short, and that becomes one clear error."""

    _prefetcher: Prefetcher | None = None
    _fd: int | None = None
    _identity: tuple[int, int, int] | None = None

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.stop()
            self._prefetcher = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, path: str, dtype: np.dtype | str | None = None) -> np.ndarray:
        """The tensor's values: a fresh read-only array (one copy out of the page cache; none
        more when no cast is asked for)."""
        import numpy as np

        if self._fd is None:
            raise CheckpointError(f"{self.path} is closed")
        record = self.tensors[path].record
        if record.dtype.hasobject or record.dtype.itemsize == 0:
            raise CheckpointError(f"tensor {path} has dtype {record.dtype_name!r}: not numbers")
        flat = np.empty(record.size, dtype=record.dtype)
        view = memoryview(flat.view(np.uint8))
        done = 0
        for offset, length in record.segments:
            self.read_into(view[done : done + length], offset)
            done += length
        flat.flags.writeable = False  # checkpoint values: nobody edits them by accident
        array = flat.reshape(record.shape)
        return array if dtype is None else array.astype(dtype, copy=False)

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill `view` with the file's bytes from `offset` (convert's workers and its hasher
        read payloads straight into buffers they reuse)."""
        if self._fd is None:
            raise CheckpointError(f"{self.path} is closed")
        _pread_exactly(self._fd, self.path, view, offset)

    def check_unchanged(self) -> None:
        """Refuse a result made from a file that was modified while it was read."""
        if self._fd is not None and _identity(os.fstat(self._fd)) != self._identity:
            raise CheckpointError(f"{self.path} changed while being read; run again")

    def stream(self) -> None:
        """About to read every payload in file order: read ahead, and let the kernel know."""
        if self._fd is not None:
            if hasattr(os, "posix_fadvise"):  # a larger read-ahead window for the preads
                with contextlib.suppress(OSError):
                    os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            if self._prefetcher is None:
                self._prefetcher = start_prefetch(self.path)

    def segments(self, path: str) -> tuple[tuple[int, int], ...]:
        """The byte ranges of the file holding the tensor's C-order bytes as they are:
        convert reads them itself, with `read_into`, into buffers it reuses."""
        record = self.tensors[path].record
        assert isinstance(record, ArrayRecord)
        return record.segments


def open_checkpoint(path: str | os.PathLike[str], step: int | None = None) -> Checkpoint:
    """Open and index a checkpoint (a msgpack file, an Orbax directory, or a workdir of
    `checkpoint_N` entries: the latest, or `step`), or raise `CheckpointError` saying what
    was found instead."""
    resolved = resolve_checkpoint(path, step)
    if resolved.is_orbax:
        from owlvit_cli.checkpoint.orbax_reader import open_orbax  # tensorstore: only when needed

        return open_orbax(resolved.path)
    return open_msgpack(resolved.path)


def open_msgpack(path: str | os.PathLike[str]) -> MsgpackCheckpoint:
    """Open and index a Flax msgpack checkpoint file."""
    file_path = Path(path)
    fd = _open_regular(file_path)
    try:
        info = os.fstat(fd)
        if info.st_size == 0:
            raise CheckpointError(f"{file_path}: file is empty")
        buf = PagedFile(functools.partial(_pread_exactly, fd, file_path), info.st_size)
        _reject_known_formats(file_path, buf)
        fields = index_params(file_path, index_msgpack(buf), ArrayRecord)
    except BaseException:
        os.close(fd)
        raise
    ckpt = MsgpackCheckpoint(file_path, info.st_size, **fields)
    ckpt._fd, ckpt._identity = fd, _identity(info)
    return ckpt


def _pread_exactly(fd: int, path: Path, view: memoryview, offset: int) -> None:
    """Fill `view` from `offset`; a file that ends first changed while being read."""
    while view:
        count = os.preadv(fd, [view], offset)
        if count == 0:
            raise CheckpointError(
                f"{path} changed while being read: it ends before byte "
                f"{offset + len(view):,} (truncated or overwritten?)"
            )
        view, offset = view[count:], offset + count


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _open_regular(path: Path) -> int:
    """A descriptor of a regular file. Anything else is refused before it is opened for
    reading: a FIFO (or /dev/stdin) would block forever or read as empty, a device never ends."""
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.stat(path).st_mode):
            raise CheckpointError(directory_error(path))
    return open_regular(path, CheckpointError)


_MAGIC_HINTS = (
    (b"PK\x03\x04", "a zip archive (PyTorch .pt/.bin files are zips)"),
    (b"\x89HDF", "an HDF5 file (a Keras/TF model?)"),
    (b"\x80\x02", "a Python pickle"),
    (b"\x80\x03", "a Python pickle"),
    (b"\x80\x04", "a Python pickle"),
    (b"\x80\x05", "a Python pickle"),
)


def _reject_known_formats(path: Path, buf: PagedFile) -> None:
    head = buf[:16]
    for magic, what in _MAGIC_HINTS:
        if head.startswith(magic):
            raise CheckpointError(f"{path} is {what}, not a scenic Flax msgpack checkpoint")
    if len(buf) > 9 and buf[8:9] == b"{" and int.from_bytes(head[:8], "little") < len(buf):
        raise CheckpointError(
            f"{path} is a safetensors file (already converted?), not a scenic checkpoint"
        )
    if _looks_like_text(buf[:512]):
        raise CheckpointError(
            f"{path} looks like a text file, not a scenic Flax msgpack checkpoint"
        )


def _looks_like_text(head: bytes) -> bool:
    """A Flax checkpoint starts with a msgpack map header (0x80-0x8f, 0xde, 0xdf): never text."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head[:-3].decode("utf-8", errors="replace")  # a character cut at the end
        if "\ufffd" in text:
            return False
    return bool(text) and all(ch.isprintable() or ch in "\t\n\r\f" for ch in text)
