"""Stream tensors into safetensors files one at a time.

`safetensors.numpy.save_file` wants every tensor in memory at once; for a 1.7 GB checkpoint
that is a second full copy. The format is a JSON header of shapes and byte offsets followed by
raw little-endian data, so knowing every shape up front lets us write the header first and
then each tensor as soon as it is transformed, holding one tensor at a time.
"""

from __future__ import annotations

import json
import re
import struct
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from owlvit_cli.errors import BadInputError

SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
SINGLE_FILE = "model.safetensors"
LOOKAHEAD = 3  # tensors being transformed while one is written (at most this many in memory)
INDEX_FILE = "model.safetensors.index.json"
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
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    produce: Callable[[], np.ndarray]

    def nbytes(self, dtype: str) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(NUMPY_DTYPES[dtype]).itemsize


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
    target = np.dtype(NUMPY_DTYPES[dtype])
    with path.open("wb") as handle, ThreadPoolExecutor(max_workers=LOOKAHEAD) as producers:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        # Transform the next tensors while this one is written: numpy copies and file writes
        # both release the GIL, so reshaping runs on every core and hides behind the writes.
        upcoming = deque(producers.submit(_produce, t, target) for t in tensors[:LOOKAHEAD])
        for index, tensor in enumerate(tensors):
            array = upcoming.popleft().result()
            if index + LOOKAHEAD < len(tensors):
                upcoming.append(producers.submit(_produce, tensors[index + LOOKAHEAD], target))
            handle.write(array.reshape(-1).view(np.uint8).data)
            del array
            on_tensor(tensor)


def _produce(tensor: PlannedTensor, dtype: np.dtype) -> np.ndarray:
    array = np.asarray(tensor.produce(), dtype=dtype)
    if not array.flags.c_contiguous:  # (ascontiguousarray would make 0-d arrays 1-d)
        array = array.copy(order="C")
    if array.shape != tensor.shape:
        raise ValueError(f"{tensor.name}: produced {array.shape}, planned {tensor.shape}")
    return array
