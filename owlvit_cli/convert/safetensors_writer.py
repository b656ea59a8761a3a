"""Stream tensors into safetensors files, a few at a time.

`safetensors.numpy.save_file` wants every tensor in memory at once; for a 1.7 GB checkpoint
that is a second full copy. The format is a JSON header of shapes and byte offsets followed by
raw little-endian data, so knowing every shape up front fixes where each tensor goes: workers
transform tensors and write each at its own offset, in parallel, holding one tensor each.
Tensors whose bytes need no change are copied file to file by the kernel.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from owlvit_cli.errors import BadInputError
from owlvit_cli.model.model_dir import WEIGHTS_FILE, WEIGHTS_INDEX_FILE

SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def numpy_dtype(name: str) -> np.dtype:
    """bfloat16 comes from ml_dtypes, imported only when asked for: its import costs over a
    second of CPU (ml_dtypes 0.7 with numpy 2.4, measured), more than a B/32 conversion."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


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


@dataclass(frozen=True)
class RawBytes:
    """Where a tensor's bytes already lie, in the target layout, in a file."""

    path: Path
    segments: tuple[tuple[int, int], ...]
    dtype: str


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    produce: Callable[[], np.ndarray]
    raw: RawBytes | None = None  # set when the bytes can be copied as they are

    def nbytes(self, dtype: str) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * numpy_dtype(dtype).itemsize


def parse_size(text: str) -> int:
    """'5GB' → 5·10^9, as transformers reads --max-shard-size; 'GiB' units are powers of 2."""
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


def write_model_files(
    directory: Path,
    tensors: Sequence[PlannedTensor],
    dtype: str,
    max_shard_bytes: int,
    on_tensor: Callable[[PlannedTensor], None] = lambda _: None,
) -> list[str]:
    """Write model.safetensors, or numbered shards plus their index; return the file names."""
    shards = shard(tensors, dtype, max_shard_bytes)
    if len(shards) == 1:
        write_safetensors(directory / SINGLE_FILE, shards[0], dtype, on_tensor)
        return [SINGLE_FILE]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, part in zip(names, shards, strict=True):
        write_safetensors(directory / name, part, dtype, on_tensor)
        weight_map.update({t.name: name for t in part})
    total = sum(t.nbytes(dtype) for t in tensors)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [*names, INDEX_FILE]


def write_safetensors(
    path: Path,
    tensors: Sequence[PlannedTensor],
    dtype: str,
    on_tensor: Callable[[PlannedTensor], None] = lambda _: None,
) -> None:
    header = _encoded_header(tensors, dtype)
    target = numpy_dtype(dtype)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _pwrite_all(fd, header, 0)
        offsets = itertools.accumulate((t.nbytes(dtype) for t in tensors), initial=len(header))
        with _SourceFiles() as sources, ThreadPoolExecutor(max_workers=WORKERS) as pool:
            # Each tensor lands at its own offset, so workers transform and write in
            # parallel; results are collected in order to report progress in order.
            futures = [
                pool.submit(_write_tensor, fd, offset, tensor, target, sources)
                for tensor, offset in zip(tensors, offsets, strict=False)  # offsets has one more
            ]
            try:
                for tensor, future in zip(tensors, futures, strict=True):
                    future.result()
                    on_tensor(tensor)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    finally:
        os.close(fd)


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


def _write_tensor(
    fd: int, offset: int, tensor: PlannedTensor, dtype: np.dtype, sources: _SourceFiles
) -> None:
    raw = tensor.raw
    if raw is not None and raw.dtype == dtype.name and sources.copy(raw, fd, offset):
        return
    array = _produce(tensor, dtype)
    _pwrite_all(fd, memoryview(array.reshape(-1).view(np.uint8)), offset)


def _produce(tensor: PlannedTensor, dtype: np.dtype) -> np.ndarray:
    array = np.asarray(tensor.produce(), dtype=dtype)
    if not array.flags.c_contiguous:  # (ascontiguousarray would make 0-d arrays 1-d)
        array = array.copy(order="C")
    if array.shape != tensor.shape:
        raise ValueError(f"{tensor.name}: produced {array.shape}, planned {tensor.shape}")
    return array


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class _SourceFiles:
    """Open source files, for copying bytes that need no change file to file in the kernel
    (`copy_file_range`: no trip through user memory, a reflink where the filesystem can)."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        self.kernel_copy = hasattr(os, "copy_file_range")

    def __enter__(self) -> _SourceFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)

    def copy(self, raw: RawBytes, fd: int, offset: int) -> bool:
        """Copy `raw` to `offset` in `fd`; False where the kernel cannot (caller writes)."""
        if not self.kernel_copy:
            return False
        try:
            for start, length in raw.segments:
                _copy_range(self._fd(raw.path), fd, start, length, offset)
                offset += length
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
            self.kernel_copy = False  # e.g. across filesystems: write from memory from now on
            return False
        return True

    def _fd(self, path: Path) -> int:
        with self._lock:
            if path not in self._fds:
                self._fds[path] = os.open(path, os.O_RDONLY)
            return self._fds[path]


_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


def _copy_range(src: int, dst: int, start: int, length: int, offset: int) -> None:
    while length:
        copied = os.copy_file_range(src, dst, length, start, offset)
        if copied == 0:
            raise OSError(errno.EIO, "source file ended early (did it change while converting?)")
        start, offset, length = start + copied, offset + copied, length - copied
