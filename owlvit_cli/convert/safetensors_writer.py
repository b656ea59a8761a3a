"""Stream tensors into safetensors files, a piece at a time, through reused buffers.

`safetensors.numpy.save_file` wants every tensor in memory at once; for a 1.7 GB checkpoint
that is a second full copy. The format is a JSON header of shapes and byte offsets followed by
raw little-endian data, so knowing every shape up front fixes where each tensor goes: workers
read, transform and write pieces at their own offsets, in parallel. Each worker reads into
and transforms into buffers it keeps, because fresh memory costs a page fault per 4 KiB:
allocating each tensor anew made a B/32 conversion spend more time faulting pages in than
copying bytes (1.3 s against 0.08 s for 0.6 GB, measured). A tensor whose layout keeps its
bytes in order is cut into pieces, so no buffer is larger than the largest transposed kernel.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from owlvit_cli.errors import BadInputError
from owlvit_cli.model.dtypes import SAFETENSORS_DTYPES, numpy_dtype  # re-exported
from owlvit_cli.model.model_dir import WEIGHTS_FILE, WEIGHTS_INDEX_FILE

SINGLE_FILE = WEIGHTS_FILE
# Tensors transformed and written at once (and at most this many transformed copies in memory).
WORKERS = min(4, max(2, os.cpu_count() or 2))
INDEX_FILE = WEIGHTS_INDEX_FILE
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


# A tensor that keeps its byte order is read and written in pieces of about this size.
PIECE_BYTES = 16 << 20
# Bytes per pwrite. One 16 MiB write into the page cache took 4-5x as long as sixteen 1 MiB
# ones (600 MB: 0.9-1.4 s against 0.2-0.26 s, Linux 6.18, ext4, measured side by side).
WRITE_CHUNK = 1 << 20
# Source rows per band when copying a transposed view (12: measured best on float32 kernels
# of every OWL-ViT shape, 1.2-2.3 GB/s against 0.8 for 64; 16 falls into cache-set aliasing).
TRANSPOSE_BAND = 12


@dataclass(frozen=True)
class FileBytes:
    """Where a tensor's source values lie, uncompressed, in a file, and how to read them."""

    segments: tuple[tuple[int, int], ...]
    dtype: np.dtype
    shape: tuple[int, ...]
    read_into: Callable[[memoryview, int], None]


def _same(array: np.ndarray) -> np.ndarray:
    return array


def _ignore(array: np.ndarray) -> None:
    return None


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: where its source values come from and how they are laid out.

    Values come from `source` (read into a worker's buffer) or else from `produce`; `layout`
    turns them into the written shape as a view; `inspect` sees every source value once."""

    name: str
    shape: tuple[int, ...]
    produce: Callable[[], np.ndarray] | None = None
    source: FileBytes | None = None
    layout: Callable[[np.ndarray], np.ndarray] = _same
    keeps_order: bool = False  # layout leaves the C-order bytes as they are: may be split
    inspect: Callable[[np.ndarray], None] = _ignore

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def nbytes(self, dtype: str) -> int:
        return self.size * numpy_dtype(dtype).itemsize


class ReadObserver(Protocol):
    """Sees every byte range workers read (the source hash): `submit` as soon as it is read,
    and the buffer is not reused before `wait_hashed` returns."""

    def submit(self, offset: int, data: memoryview) -> None: ...

    def wait_hashed(self, end: int) -> None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class _Piece:
    """Elements [first, first + count) of a tensor whose data starts at byte `offset` of `fd`."""

    tensor: PlannedTensor
    fd: int
    offset: int
    first: int
    count: int
    ranges: tuple[tuple[int, int], ...]  # where those elements lie in the source file

    @property
    def whole(self) -> bool:
        return self.first == 0 and self.count == self.tensor.size


def parse_size(text: str | int) -> int:
    """'5GB' → 5·10^9, as transformers reads --max-shard-size; 'GiB' units are powers of 2.
    A number is bytes, as transformers' `max_shard_size` takes it too."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise BadInputError(f"cannot read size {text!r}; use e.g. 5GB, 500MB, 2GiB or bytes")
    match = _SIZE_RE.match(text)
    if not match:
        raise BadInputError(f"cannot read size {text!r}; use e.g. 5GB, 500MB, 2GiB")
    value = float(match.group(1)) * _UNITS[(match.group(2) or "B").upper()]
    if value < 1:
        raise BadInputError(f"size {text!r} must be positive")
    return int(value)


def shard(
    tensors: Sequence[PlannedTensor], dtype: str, max_bytes: int
) -> list[list[PlannedTensor]]:
    """Greedy split in order; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[PlannedTensor]] = [[]]
    used = 0
    for tensor in tensors:
        size = tensor.nbytes(dtype)
        if shards[-1] and used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(tensor)
        used += size
    return shards


def weight_file_names(count: int) -> list[str]:
    """The files `count` shards are written to, as transformers names them (the index file
    comes with more than one)."""
    if count == 1:
        return [SINGLE_FILE]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def write_model_files(
    directory: Path,
    tensors: Sequence[PlannedTensor],
    dtype: str,
    max_shard_bytes: int,
    on_written: Callable[[int], None] = lambda _: None,
    observer: ReadObserver | None = None,
) -> list[str]:
    """Write model.safetensors, or numbered shards plus their index; return the file names.
    `on_written` gets the bytes of each finished piece, in the order pieces are read."""
    shards = shard(tensors, dtype, max_shard_bytes)
    names = weight_file_names(len(shards))
    if len(shards) == 1:
        write_safetensors(directory / SINGLE_FILE, shards[0], dtype, on_written, observer)
        return names
    files = [(directory / name, part) for name, part in zip(names, shards, strict=True)]
    _write_files(files, dtype, on_written, observer)
    weight_map = {t.name: name for name, part in zip(names, shards, strict=True) for t in part}
    total = sum(t.nbytes(dtype) for t in tensors)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [*names, INDEX_FILE]


def write_safetensors(
    path: Path,
    tensors: Sequence[PlannedTensor],
    dtype: str,
    on_written: Callable[[int], None] = lambda _: None,
    observer: ReadObserver | None = None,
) -> None:
    _write_files([(path, tensors)], dtype, on_written, observer)


def _write_files(
    files: Sequence[tuple[Path, Sequence[PlannedTensor]]],
    dtype: str,
    on_written: Callable[[int], None],
    observer: ReadObserver | None,
) -> None:
    """All files in one pass over the source: the observer needs its bytes in file order,
    which shards (cut in output order) do not follow."""
    target = numpy_dtype(dtype)
    with contextlib.ExitStack() as files_open:
        pieces: list[_Piece] = []
        for path, tensors in files:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            files_open.callback(os.close, fd)
            header = _encoded_header(tensors, dtype)
            _pwrite_all(fd, header, 0)
            offsets = itertools.accumulate((t.nbytes(dtype) for t in tensors), initial=len(header))
            pieces += [p for t, o in zip(tensors, offsets, strict=False) for p in _pieces(t, fd, o)]
        pieces.sort(key=lambda p: p.ranges[0][0] if p.ranges else -1)  # reads stay sequential
        _run_pieces(pieces, target, on_written, observer)


def _run_pieces(
    pieces: list[_Piece],
    dtype: np.dtype,
    on_written: Callable[[int], None],
    observer: ReadObserver | None,
) -> None:
    buffers = _Buffers()
    # One write at a time: a buffered write holds the file's inode lock, and a second writer
    # spins on it in the kernel while the first copies its megabytes (rwsem optimistic
    # spinning: a core burnt for nothing); waiting here sleeps, and that core transposes or
    # hashes. One lock per conversion, so parallel conversions in one process do not queue.
    writing = threading.Lock()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        # Pieces go to workers in file order and each worker holds one at a time, so the
        # observer (which needs the bytes in order) never waits on a piece nobody holds.
        futures = [pool.submit(_write_piece, p, dtype, buffers, writing, observer) for p in pieces]
        try:
            for piece, future in zip(pieces, futures, strict=True):
                future.result()
                on_written(piece.count * dtype.itemsize)
        except BaseException:
            for future in futures:
                future.cancel()
            if observer is not None:
                observer.abort()  # wakes workers waiting for the hash
            raise


def _pieces(tensor: PlannedTensor, fd: int, offset: int) -> Iterator[_Piece]:
    count = tensor.size
    source = tensor.source
    if source is None or not tensor.keeps_order:
        ranges = source.segments if source is not None else ()
        yield _Piece(tensor, fd, offset, 0, count, ranges)
        return
    step = max(1, PIECE_BYTES // source.dtype.itemsize)
    for first in range(0, count, step) if count else [0]:
        span = min(step, count - first)
        ranges = _slice_segments(source.segments, first * source.dtype.itemsize,
                                 span * source.dtype.itemsize)  # fmt: skip
        yield _Piece(tensor, fd, offset, first, span, ranges)


def _slice_segments(
    segments: tuple[tuple[int, int], ...], start: int, length: int
) -> tuple[tuple[int, int], ...]:
    """The file ranges of bytes [start, start + length) of data stored as `segments`."""
    ranges = []
    for offset, size in segments:
        if length and start < size:
            take = min(size - start, length)
            ranges.append((offset + start, take))
            length -= take
        start = max(0, start - size)
    return tuple(ranges)


class _Buffers(threading.local):
    """Each worker's two buffers (what it reads, what it writes), kept across pieces."""

    def __init__(self) -> None:
        self.held: dict[str, np.ndarray] = {}

    def get(self, role: str, nbytes: int) -> np.ndarray:
        buffer = self.held.get(role)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = self.held[role] = np.empty(nbytes, np.uint8)
        return buffer[:nbytes]


def _write_piece(
    piece: _Piece,
    dtype: np.dtype,
    buffers: _Buffers,
    writing: threading.Lock,
    observer: ReadObserver | None,
) -> None:
    tensor = piece.tensor
    values = _source_values(piece, buffers, observer)
    tensor.inspect(values)
    if piece.whole:
        values = tensor.layout(values)
        if values.shape != tensor.shape:
            raise ValueError(f"{tensor.name}: produced {values.shape}, planned {tensor.shape}")
    data = _as_written(values, dtype, buffers)
    at = piece.offset + piece.first * dtype.itemsize
    with writing:
        _pwrite_all(piece.fd, memoryview(data.reshape(-1).view(np.uint8)), at)
    if observer is not None and piece.ranges:
        observer.wait_hashed(max(offset + size for offset, size in piece.ranges))


def _source_values(piece: _Piece, buffers: _Buffers, observer: ReadObserver | None) -> np.ndarray:
    """The piece's source values, read into this worker's buffer (or produced)."""
    source = piece.tensor.source
    if source is None:
        assert piece.tensor.produce is not None, piece.tensor.name
        return np.asarray(piece.tensor.produce())
    raw = buffers.get("read", piece.count * source.dtype.itemsize)
    view, done = memoryview(raw), 0
    for offset, size in piece.ranges:
        source.read_into(view[done : done + size], offset)
        if observer is not None:
            observer.submit(offset, view[done : done + size])
        done += size
    values = raw.view(source.dtype)
    return values.reshape(source.shape) if piece.whole else values


def _as_written(values: np.ndarray, dtype: np.dtype, buffers: _Buffers) -> np.ndarray:
    """`values` in `dtype` and C order: as they are when they already are, else copied once
    into this worker's output buffer."""
    if values.dtype == dtype and values.flags.c_contiguous:
        return values
    out = buffers.get("write", values.size * dtype.itemsize).view(dtype).reshape(values.shape)
    if values.ndim == 2 and not values.flags.c_contiguous:
        # A transposed view: copy a band of source rows at a time. numpy's own copy strides
        # through memory a column at a time and is about 4x slower on large kernels.
        for start in range(0, values.shape[1], TRANSPOSE_BAND):
            band = slice(start, start + TRANSPOSE_BAND)
            np.copyto(out[:, band], values[:, band], casting="unsafe")
    else:
        np.copyto(out, values, casting="unsafe")
    return out


def _encoded_header(tensors: Sequence[PlannedTensor], dtype: str) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        size = tensor.nbytes(dtype)
        header[tensor.name] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
    return struct.pack("<Q", len(encoded)) + encoded


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view[:WRITE_CHUNK], offset)
        view, offset = view[written:], offset + written
