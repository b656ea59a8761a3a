"""The streaming safetensors writer: parallel writes at fixed offsets, kernel copies of bytes
that need no change, and the fallback when the kernel cannot copy."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from owlvit_cli.convert import safetensors_writer as writer
from owlvit_cli.convert.run import convert_checkpoint
from owlvit_cli.convert.safetensors_writer import PlannedTensor, RawBytes, write_model_files
from owlvit_cli.errors import OutputError


def planned(tmp_path: Path, count: int = 9) -> tuple[list[PlannedTensor], dict[str, np.ndarray]]:
    """Tensors of mixed kinds: every third is raw bytes in a source file, the rest computed."""
    rng = np.random.default_rng(0)
    source = tmp_path / "source.bin"
    tensors, expected = [], {}
    with source.open("wb") as handle:
        for i in range(count):
            value = rng.standard_normal((i + 1, 7 + i)).astype(np.float32)
            name = f"t{i}"
            expected[name] = value
            raw = None
            if i % 3 == 0:
                handle.write(b"pad" * i)  # unaligned offsets in the source
                offset = handle.tell()
                handle.write(value.tobytes())
                raw = RawBytes(source, ((offset, value.nbytes),), "float32")
            tensors.append(PlannedTensor(name, value.shape, lambda v=value: v.T.T, raw))
    return tensors, expected


def test_mixed_tensors_round_trip(tmp_path: Path):
    tensors, expected = planned(tmp_path)
    seen: list[str] = []
    files = write_model_files(tmp_path, tensors, "float32", 1 << 30, lambda t: seen.append(t.name))
    assert files == ["model.safetensors"] and seen == [t.name for t in tensors]  # in order
    loaded = load_file(tmp_path / "model.safetensors")
    assert set(loaded) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value)


def test_raw_bytes_are_cast_when_the_dtype_differs(tmp_path: Path):
    tensors, expected = planned(tmp_path)
    write_model_files(tmp_path, tensors, "float16", 1 << 30)
    loaded = load_file(tmp_path / "model.safetensors")
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value.astype(np.float16))


def test_shards_hold_the_same_tensors(tmp_path: Path):
    tensors, expected = planned(tmp_path)
    files = write_model_files(tmp_path, tensors, "float32", 300)
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 2
    loaded = {k: v for f in shards for k, v in load_file(tmp_path / f).items()}
    assert all(np.array_equal(loaded[k], v) for k, v in expected.items())


def test_falls_back_to_writing_when_the_kernel_cannot_copy(
    tmp_path: Path, tiny_checkpoint, monkeypatch
):
    """e.g. EXDEV across filesystems: the same bytes come out, written from memory."""
    reference = tmp_path / "kernel"
    convert_checkpoint(tiny_checkpoint(), reference)
    calls = []

    def refuse(*args: object) -> int:
        calls.append(args)
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    fallback = tmp_path / "fallback"
    convert_checkpoint(tiny_checkpoint(), fallback)
    assert calls  # the kernel copy was tried, refused, and not retried for every tensor
    assert len(calls) < 3
    name = "model.safetensors"
    assert (fallback / name).read_bytes() == (reference / name).read_bytes()


def test_a_real_write_error_in_the_kernel_copy_is_not_swallowed(
    tmp_path: Path, tiny_checkpoint, monkeypatch
):
    def disk_full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        convert_checkpoint(tiny_checkpoint(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_source_that_shrinks_mid_copy_is_an_error(tmp_path: Path):
    source = tmp_path / "short.bin"
    source.write_bytes(b"\0" * 8)
    raw = RawBytes(source, ((0, 64),), "float32")
    tensor = PlannedTensor("t", (16,), lambda: np.zeros(16, np.float32), raw)
    with pytest.raises(OSError, match="ended early"):
        writer.write_safetensors(tmp_path / "out.safetensors", [tensor], "float32")
