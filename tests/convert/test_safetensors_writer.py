"""The streaming safetensors writer: pieces read into reused buffers, laid out as views,
written at fixed offsets in parallel, with every byte read shown to the source hasher."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from owlvit_cli.checkpoint.hashing import OrderedHasher
from owlvit_cli.convert import safetensors_writer as writer
from owlvit_cli.convert.safetensors_writer import FileBytes, PlannedTensor, write_model_files
from owlvit_cli.errors import CheckpointError


def pread_into(path: Path):
    def read_into(view: memoryview, offset: int) -> None:
        with path.open("rb") as handle:
            handle.seek(offset)
            if handle.readinto(view) != len(view):
                raise CheckpointError(f"{path} ended early")

    return read_into


def planned(
    tmp_path: Path, count: int = 9
) -> tuple[list[PlannedTensor], dict[str, np.ndarray], Path]:
    """Mixed tensors: two of three read from a source file (every other one transposed on
    the way, the rest split into pieces where large), the others produced in memory."""
    rng = np.random.default_rng(0)
    source = tmp_path / "source.bin"
    tensors, expected = [], {}
    with source.open("wb") as handle:
        for i in range(count):
            value = rng.standard_normal((i + 1, 7 + 3 * i)).astype(np.float32)
            name = f"t{i}"
            if i % 3 == 2:
                expected[name] = value
                tensors.append(PlannedTensor(name, value.shape, produce=lambda v=value: v))
                continue
            handle.write(b"pad" * i)  # unaligned offsets, and gaps for the hasher to read
            offset = handle.tell()
            handle.write(value.tobytes())
            file_bytes = FileBytes(((offset, value.nbytes),), value.dtype, value.shape,
                                   pread_into(source))  # fmt: skip
            if i % 2:
                expected[name] = value.T
                tensors.append(PlannedTensor(name, value.shape[::-1], source=file_bytes,
                                             layout=lambda a: a.T))  # fmt: skip
            else:
                expected[name] = value
                tensors.append(PlannedTensor(name, value.shape, source=file_bytes,
                                             keeps_order=True))  # fmt: skip
        handle.write(b"tail")
    return tensors, expected, source


def test_mixed_tensors_round_trip_and_every_byte_is_reported(tmp_path: Path):
    tensors, expected, _ = planned(tmp_path)
    reported: list[int] = []
    files = write_model_files(tmp_path, tensors, "float32", 1 << 30, reported.append)
    assert files == ["model.safetensors"]
    assert sum(reported) == sum(t.nbytes("float32") for t in tensors)
    loaded = load_file(tmp_path / "model.safetensors")
    assert set(loaded) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value)


def test_values_are_cast_when_the_dtype_differs(tmp_path: Path):
    tensors, expected, _ = planned(tmp_path)
    write_model_files(tmp_path, tensors, "float16", 1 << 30)
    loaded = load_file(tmp_path / "model.safetensors")
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value.astype(np.float16))


def test_shards_hold_the_same_tensors(tmp_path: Path):
    tensors, expected, _ = planned(tmp_path)
    files = write_model_files(tmp_path, tensors, "float32", 300)
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 2
    loaded = {k: v for f in shards for k, v in load_file(tmp_path / f).items()}
    assert all(np.array_equal(loaded[k], v) for k, v in expected.items())


@pytest.mark.parametrize("max_shard_bytes", [1 << 30, 300])
def test_the_hasher_sees_the_whole_source_in_order(tmp_path: Path, monkeypatch, max_shard_bytes):
    """Tensors are planned in reverse file order and split into pieces; with shards, a shard
    holds tensors from both ends of the file. The digest must still be the file's."""
    monkeypatch.setattr(writer, "PIECE_BYTES", 64)
    tensors, expected, source = planned(tmp_path)
    tensors.reverse()
    spans = [s for t in tensors if t.source is not None for s in t.source.segments]
    hasher = OrderedHasher(source, source.stat().st_size, spans, pread_into(source))
    hasher.start()
    files = write_model_files(tmp_path, tensors, "float32", max_shard_bytes, observer=hasher)
    assert hasher.digest() == hashlib.sha256(source.read_bytes()).hexdigest()
    shards = [load_file(tmp_path / f) for f in files if f.endswith(".safetensors")]
    loaded = {k: v for shard in shards for k, v in shard.items()}
    assert all(np.array_equal(loaded[k], v) for k, v in expected.items())


def test_large_tensors_go_in_pieces_across_segments(tmp_path: Path, monkeypatch):
    """A tensor stored in several segments (flax's chunked arrays) and cut into pieces that
    do not line up with them."""
    monkeypatch.setattr(writer, "PIECE_BYTES", 40)
    value = np.arange(60, dtype=np.float32).reshape(6, 10)
    raw = value.tobytes()
    source = tmp_path / "chunked.bin"
    source.write_bytes(b"x" * 5 + raw[:100] + b"yy" + raw[100:])
    segments = ((5, 100), (107, len(raw) - 100))
    file_bytes = FileBytes(segments, value.dtype, value.shape, pread_into(source))
    tensor = PlannedTensor("t", (60,), source=file_bytes, layout=lambda a: a.reshape(-1),
                           keeps_order=True)  # fmt: skip
    assert len(list(writer._pieces(tensor, 0, 0))) == 6
    writer.write_safetensors(tmp_path / "out.safetensors", [tensor], "float32")
    np.testing.assert_array_equal(load_file(tmp_path / "out.safetensors")["t"], value.reshape(-1))


@pytest.mark.parametrize("shape", [(1, 1), (3, 200), (130, 7), (64, 64), (129, 65)])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_transposed_views_are_copied_exactly(shape: tuple[int, int], dtype: str):
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    result = writer._as_written(array.T, np.dtype(dtype), writer._Buffers())
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, array.T.astype(dtype))


def test_a_source_that_ends_early_is_an_error_and_nothing_waits(tmp_path: Path):
    source = tmp_path / "short.bin"
    source.write_bytes(b"\0" * 8)
    file_bytes = FileBytes(((0, 64),), np.dtype(np.float32), (16,), pread_into(source))
    tensor = PlannedTensor("t", (16,), source=file_bytes)
    hasher = OrderedHasher(source, 64, [(0, 64)], pread_into(source))
    hasher.start()
    with pytest.raises(CheckpointError, match="ended early"):
        writer.write_safetensors(tmp_path / "out.safetensors", [tensor], "float32", observer=hasher)
    hasher.join(timeout=30)
    assert not hasher.is_alive()  # aborted, not left waiting for bytes nobody will read


def test_buffers_are_reused_across_pieces(tmp_path: Path):
    """Fresh memory costs a page fault per 4 KiB: a worker keeps its buffers."""
    buffers = writer._Buffers()
    first = buffers.get("read", 1000)
    again = buffers.get("read", 800)
    assert np.shares_memory(first, again)
    bigger = buffers.get("read", 2000)
    assert bigger.nbytes == 2000 and buffers.get("read", 10).base is bigger.base


def test_writes_land_at_their_offsets_from_several_threads(tmp_path: Path, monkeypatch):
    """More pieces than workers, each in its own place: the file is what one thread writes."""
    monkeypatch.setattr(writer, "PIECE_BYTES", 32)
    tensors, _, _ = planned(tmp_path, count=12)
    write_model_files(tmp_path, tensors, "float32", 1 << 30)
    parallel = (tmp_path / "model.safetensors").read_bytes()
    monkeypatch.setattr(writer, "WORKERS", 1)
    os.remove(tmp_path / "model.safetensors")
    write_model_files(tmp_path, tensors, "float32", 1 << 30)
    assert (tmp_path / "model.safetensors").read_bytes() == parallel
