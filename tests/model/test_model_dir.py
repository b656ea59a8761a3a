"""The one check of a model directory, as every command that reads one meets it: files a
hostile hand replaced (JSON nested past any parser's stack, pipes and devices where files
belong, files far larger than their kind) and an index pointing outside the directory. Each
is one line and exit 2, never a hang, an exhausted memory or an internal error. And the
contract itself: its weight files and their safetensors headers."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from owlvit_cli.errors import ModelDirError
from owlvit_cli.model.model_dir import (
    CONFIG_FILE,
    RECORD_FILE,
    SAFETENSORS_MAX_HEADER,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    check_safetensors,
    read_safetensors_header,
    weight_files,
)
from tests.helpers import SAMPLE, problem_lines, run_console_script


def safetensors_file(path: Path, header: dict, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_header_is_read_with_its_length_and_the_file_size(tmp_path: Path):
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    path = safetensors_file(tmp_path / "a.safetensors", header, b"\0" * 4)
    assert read_safetensors_header(path) == (path.stat().st_size, len(json.dumps(header)), header)
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


DEEP = "[" * 100_000 + "]" * 100_000


def _spoil(hf_dir: Path, name: str, how: str) -> None:
    path = hf_dir / name
    if name == WEIGHTS_FILE:  # the safetensors header: same length prefix, deep JSON after it
        data = path.read_bytes()
        (length,) = struct.unpack("<Q", data[:8])
        header = DEEP.encode()[: length - 1] + b"]"
        path.write_bytes(data[:8] + header.ljust(length) + data[8 + length :])
        return
    path.unlink()
    if how == "deep":
        path.write_text(DEEP)
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "dev_zero":
        path.symlink_to("/dev/zero")
    elif how == "huge":  # sparse: costs no disk
        with open(path, "wb") as handle:
            handle.truncate(64 << 20)


CASES = {
    (CONFIG_FILE, "deep"): "nested",
    (RECORD_FILE, "deep"): "nested",
    (WEIGHTS_FILE, "deep"): "safetensors",
    (CONFIG_FILE, "fifo"): "pipe (FIFO)",
    (RECORD_FILE, "dev_zero"): "character device",
    (CONFIG_FILE, "huge"): "larger than",
}


@pytest.mark.parametrize(("name", "how"), sorted(CASES))
def test_hostile_files_in_hf_dir_are_one_line_exit_2(
    name: str, how: str, tiny_checkpoint, converted, tmp_path: Path
):
    ckpt = tiny_checkpoint()
    hf_dir = tmp_path / "model"
    shutil.copytree(converted(ckpt), hf_dir)
    _spoil(hf_dir, name, how)
    result = run_console_script("verify", ckpt, hf_dir, "--json", timeout=300)
    assert result.returncode == 2, result.stderr
    lines = problem_lines(result.stderr)
    assert len(lines) == 1 and CASES[name, how] in lines[0], result.stderr
    assert "internal error" not in lines[0]
    assert json.loads(result.stdout)["error"]["code"] == 2


def test_push_dry_run_refuses_a_deep_config(tiny_checkpoint, converted, tmp_path: Path):
    hf_dir = tmp_path / "model"
    shutil.copytree(converted(tiny_checkpoint()), hf_dir)
    _spoil(hf_dir, CONFIG_FILE, "deep")
    result = run_console_script("push", hf_dir, "org/model", "--dry-run")
    assert result.returncode == 2, result.stderr
    assert len(problem_lines(result.stderr)) == 1 and "nested" in result.stderr


def sharded_outside(src: Path, root: Path, absolute: bool) -> Path:
    """A copy of `src` whose index sends every tensor to a real shard outside the directory."""
    from safetensors import safe_open

    hf_dir = root / "model"
    shutil.copytree(src, hf_dir)
    outside = root / "x.safetensors"
    (hf_dir / "model.safetensors").rename(outside)
    with safe_open(str(outside), "np") as weights:
        names = list(weights.keys())
    shard = str(outside) if absolute else "../x.safetensors"
    index = {"metadata": {}, "weight_map": dict.fromkeys(names, shard)}
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    return hf_dir


@pytest.mark.parametrize("absolute", [False, True], ids=["dotdot", "absolute"])
def test_a_shard_outside_the_directory_is_refused_by_every_command(
    tiny_checkpoint, converted, tmp_path: Path, absolute: bool
) -> None:
    checkpoint = tiny_checkpoint("v1-tiny")
    hf_dir = sharded_outside(converted(checkpoint), tmp_path, absolute)
    commands = {
        "push": ["push", hf_dir, "org/model", "--dry-run"],
        "verify": ["verify", checkpoint, hf_dir],
        "detect": ["detect", hf_dir, SAMPLE, "--query", "a cat"],
    }
    for name, args in commands.items():
        proc = run_console_script(*args)
        assert proc.returncode == 2, (name, proc.stderr)
        lines = problem_lines(proc.stderr)
        assert len(lines) == 1 and "lists shard(s) outside the model directory" in lines[0]
        assert "x.safetensors" in lines[0], name
