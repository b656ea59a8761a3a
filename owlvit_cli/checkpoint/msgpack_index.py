"""Index a Flax msgpack checkpoint without reading array payloads.

`flax.training.checkpoints` writes one msgpack object whose array leaves are ExtType records
holding msgpack of `(shape, dtype_name, raw_bytes)`. The `msgpack` package can only hand those
payloads over as copied `bytes`, which for a 1.7 GB L/14 file means reading every byte just
to list the tree. This walker parses headers only and records where each payload lies, so
listing is instant and tensors are read later, with pread, straight into their buffers.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, overload

from owlvit_cli.errors import CheckpointError
from owlvit_cli.model.dtypes import numpy_dtype  # re-exported: the readers import it here

if TYPE_CHECKING:
    import numpy as np

EXT_NDARRAY = 1
EXT_NPSCALAR = 3
CHUNKED_MARKER = "__msgpack_chunked_array__"
MAX_DEPTH = 64

# Item sizes of the dtypes a Flax checkpoint can hold, so that listing a file needs no numpy
# (its import is a quarter of `inspect`'s run time); anything else is resolved by numpy.
ITEMSIZES = {
    "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
    "int16": 2, "int8": 1, "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1,
    "complex64": 8, "complex128": 16,
}  # fmt: skip


@dataclass(frozen=True)
class ArrayRecord:
    """Where one array's raw C-order bytes lie in the file (one segment per chunk)."""

    shape: tuple[int, ...]
    dtype_name: str
    segments: tuple[tuple[int, int], ...]

    @property
    def nbytes(self) -> int:
        return sum(length for _, length in self.segments)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype_name)


def itemsize(name: str) -> int:
    if name in ITEMSIZES:
        return ITEMSIZES[name]
    try:
        return numpy_dtype(name).itemsize
    except TypeError as exc:
        raise CheckpointError(f"unsupported array dtype {name!r} in checkpoint") from exc


class ByteSource(Protocol):
    """What the walker reads: bytes, a memoryview, or `PagedFile`."""

    def __len__(self) -> int: ...

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> bytes | memoryview: ...


class PagedFile:
    """A file read a block at a time with pread, for the header walk.

    The walk touches a few bytes before each payload. Through a memory map, each touch mapped
    the page cache's whole folio around it into the process (155 MB of RSS for a 0.6 GB B/32
    whose file had just been read), and a file truncated under the map kills the process with
    SIGBUS. Here a short read is one clear error, and only the last few blocks are held."""

    BLOCK = 16 << 10
    KEEP = 4

    def __init__(self, read_into: Callable[[memoryview, int], None], size: int) -> None:
        self._read_into, self._size = read_into, size
        self._blocks: dict[int, bytes] = {}

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, int):
            return self._block(key // self.BLOCK)[key % self.BLOCK]
        start, stop, _ = key.indices(self._size)
        parts = []
        while start < stop:
            block = self._block(start // self.BLOCK)
            begin = start % self.BLOCK
            parts.append(block[begin : begin + stop - start])
            start += len(parts[-1])
        return b"".join(parts)

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            start = index * self.BLOCK
            data = bytearray(min(self.BLOCK, self._size - start))
            self._read_into(memoryview(data), start)
            if len(self._blocks) >= self.KEEP:
                self._blocks.pop(next(iter(self._blocks)))
            block = self._blocks[index] = bytes(data)
        return block


class _Walker:
    """A recursive-descent msgpack parser over a buffer that never copies bin/ext payloads."""

    def __init__(self, buf: ByteSource, size: int | None = None) -> None:
        self.buf = buf
        self.size = len(buf) if size is None else size  # a nested record ends before the file

    def need(self, pos: int, count: int) -> None:
        if count < 0 or pos + count > self.size:
            raise CheckpointError(
                f"file ends early: needed {count} bytes at offset {pos}, file has {self.size} "
                "(truncated or not a msgpack checkpoint)"
            )

    def unpack(self, fmt: str, pos: int) -> tuple[Any, int]:
        width = struct.calcsize(fmt)
        self.need(pos, width)
        return struct.unpack(fmt, self.buf[pos : pos + width])[0], pos + width

    def parse(self, pos: int, depth: int = 0) -> tuple[Any, int]:
        if depth > MAX_DEPTH:
            raise CheckpointError(f"nesting deeper than {MAX_DEPTH} levels at offset {pos}")
        self.need(pos, 1)
        tag = self.buf[pos]
        pos += 1
        if tag <= 0x7F:
            return tag, pos
        if tag >= 0xE0:
            return tag - 0x100, pos
        if 0x80 <= tag <= 0x8F:
            return self.parse_map(tag & 0x0F, pos, depth)
        if 0x90 <= tag <= 0x9F:
            return self.parse_array(tag & 0x0F, pos, depth)
        if 0xA0 <= tag <= 0xBF:
            return self.read_str(tag & 0x1F, pos)
        return self.parse_tagged(tag, pos, depth)

    def parse_tagged(self, tag: int, pos: int, depth: int) -> tuple[Any, int]:
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if tag in simple:
            return simple[tag], pos
        numbers = {
            0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
            0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
        }  # fmt: skip
        if tag in numbers:
            return self.unpack(numbers[tag], pos)
        sized = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}
        if tag in sized:
            length, pos = self.unpack(sized[tag], pos)
            if tag >= 0xD9:
                return self.read_str(length, pos)
            self.need(pos, length)
            return (pos, length), pos + length  # bin: a (offset, length) reference
        containers = {0xDC: ">H", 0xDD: ">I", 0xDE: ">H", 0xDF: ">I"}
        if tag in containers:
            count, pos = self.unpack(containers[tag], pos)
            if tag >= 0xDE:
                return self.parse_map(count, pos, depth)
            return self.parse_array(count, pos, depth)
        fixext = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
        if tag in fixext:
            return self.parse_ext(fixext[tag], pos)
        ext = {0xC7: ">B", 0xC8: ">H", 0xC9: ">I"}
        if tag in ext:
            length, pos = self.unpack(ext[tag], pos)
            return self.parse_ext(length, pos)
        raise CheckpointError(f"invalid msgpack byte 0x{tag:02x} at offset {pos - 1}")

    def read_str(self, length: int, pos: int) -> tuple[str, int]:
        self.need(pos, length)
        try:
            return bytes(self.buf[pos : pos + length]).decode("utf-8"), pos + length
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"invalid UTF-8 string at offset {pos}") from exc

    def parse_map(self, count: int, pos: int, depth: int) -> tuple[dict[str, Any], int]:
        self.need(pos, count)  # every entry takes at least one byte
        result: dict[str, Any] = {}
        for _ in range(count):
            key, pos = self.parse(pos, depth + 1)
            if not isinstance(key, str | int):
                raise CheckpointError(f"map key of type {type(key).__name__} at offset {pos}")
            result[str(key)], pos = self.parse(pos, depth + 1)
        return result, pos

    def parse_array(self, count: int, pos: int, depth: int) -> tuple[list[Any], int]:
        self.need(pos, count)
        items = []
        for _ in range(count):
            item, pos = self.parse(pos, depth + 1)
            items.append(item)
        return items, pos

    def parse_ext(self, length: int, pos: int) -> tuple[Any, int]:
        code, pos = self.unpack(">b", pos)
        self.need(pos, length)
        end = pos + length
        if code == EXT_NDARRAY:
            return self.parse_ndarray(pos, end), end
        if code == EXT_NPSCALAR:
            return self.parse_npscalar(pos, end), end
        raise CheckpointError(f"unsupported msgpack extension type {code} at offset {pos}")

    def parse_ndarray(self, pos: int, end: int) -> ArrayRecord:
        fields, stop = _Walker(self.buf, end).parse(pos, MAX_DEPTH - 2)
        if not (isinstance(fields, list) and len(fields) == 3 and stop == end):
            raise CheckpointError(f"malformed array record at offset {pos}")
        shape, dtype_name, data = fields
        dtype = self.text(dtype_name)
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise CheckpointError(f"malformed array shape {shape!r} at offset {pos}")
        if not isinstance(data, tuple):
            raise CheckpointError(f"array without raw data at offset {pos}")
        if math.prod(shape) * itemsize(dtype) != data[1]:
            raise CheckpointError(f"array at offset {pos}: {shape} {dtype} does not fit its data")
        return ArrayRecord(tuple(shape), dtype, (data,))

    def parse_npscalar(self, pos: int, end: int) -> ArrayRecord:
        fields, stop = _Walker(self.buf, end).parse(pos, MAX_DEPTH - 2)
        if not (isinstance(fields, list) and len(fields) == 2 and stop == end):
            raise CheckpointError(f"malformed scalar record at offset {pos}")
        dtype = self.text(fields[0])
        data = fields[1]
        if not isinstance(data, tuple) or data[1] != itemsize(dtype):
            raise CheckpointError(f"malformed scalar record at offset {pos}")
        return ArrayRecord((), dtype, (data,))

    def text(self, value: Any) -> str:
        """dtype names come as str (use_bin_type=True) or as bin in older writers."""
        if isinstance(value, str):
            return value
        if isinstance(value, tuple):
            start, length = value
            return bytes(self.buf[start : start + length]).decode("ascii", "replace")
        raise CheckpointError(f"malformed dtype name {value!r}")


def index_msgpack(buf: ByteSource) -> Any:
    """Parse the whole buffer as exactly one msgpack object, arrays as `ArrayRecord`s."""
    walker = _Walker(buf)
    try:
        value, end = walker.parse(0)
    except RecursionError as exc:
        raise CheckpointError("nesting too deep to be a checkpoint") from exc
    if end != len(buf):
        raise CheckpointError(
            "not a Flax msgpack checkpoint: it should be one msgpack map, but the first value "
            f"ends at byte {end} of {len(buf)}"
        )
    return _merge_chunked(value)


def _merge_chunked(value: Any) -> Any:
    """Flax splits arrays over 2^30 bytes into a dict of chunks; put them back together."""
    if not isinstance(value, dict):
        return value
    if value.get(CHUNKED_MARKER) is True:
        return _chunked_record(value)
    return {key: _merge_chunked(item) for key, item in value.items()}


def _chunked_record(value: dict[str, Any]) -> ArrayRecord:
    try:
        shape_map, chunk_map = value["shape"], value["chunks"]
        shape = tuple(int(shape_map[str(i)]) for i in range(len(shape_map)))
        chunks = [chunk_map[str(i)] for i in range(len(chunk_map))]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError("malformed chunked array") from exc
    if not chunks or not all(isinstance(c, ArrayRecord) for c in chunks):
        raise CheckpointError("malformed chunked array")
    dtype = chunks[0].dtype_name
    segments = tuple(seg for chunk in chunks for seg in chunk.segments)
    record = ArrayRecord(shape, dtype, segments)
    if record.nbytes != math.prod(shape) * itemsize(dtype):
        raise CheckpointError("chunked array's chunks do not add up to its shape")
    return record
