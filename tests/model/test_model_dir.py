"""The converted directory's contract: its weight files, and their safetensors headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from owlvit_cli.errors import ModelDirError
from owlvit_cli.model.model_dir import (
    SAFETENSORS_MAX_HEADER,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    check_safetensors,
    read_safetensors_header,
    weight_files,
)


def safetensors_file(path: Path, header: dict, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_header_is_read_with_its_length_and_the_file_size(tmp_path: Path):
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    path = safetensors_file(tmp_path / "a.safetensors", header, b"\0" * 4)
    assert read_safetensors_header(path) == (header, len(json.dumps(header)), path.stat().st_size)
    check_safetensors(path)


def test_a_header_longer_than_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import owlvit_cli.model.model_dir as model_dir

    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    path = safetensors_file(tmp_path / "a.safetensors", header, b"\0" * 4)
    monkeypatch.setattr(model_dir, "SAFETENSORS_MAX_HEADER", len(json.dumps(header)) - 1)
    with pytest.raises(ModelDirError, match="no valid header"):
        read_safetensors_header(path)
    assert SAFETENSORS_MAX_HEADER == 100_000_000  # the library's own limit


def test_weight_files_single_or_sharded_and_missing_shards_named(tmp_path: Path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"")
    assert weight_files(tmp_path) == [WEIGHTS_FILE]
    (tmp_path / WEIGHTS_FILE).unlink()
    shards = ["model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors"]
    index = {"weight_map": {"a": shards[0], "b": shards[1], "c": shards[0]}}
    (tmp_path / WEIGHTS_INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ModelDirError, match="missing shard"):
        weight_files(tmp_path)
    for shard in shards:
        (tmp_path / shard).write_bytes(b"")
    assert weight_files(tmp_path) == [WEIGHTS_INDEX_FILE, *sorted(shards)]
