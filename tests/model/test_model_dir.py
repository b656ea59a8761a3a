"""A converted directory whose files a hostile hand replaced: JSON nested past any parser's
stack, pipes and devices where files belong, files far larger than their kind. Each is one
line and exit 2, never a hang, an exhausted memory or an internal error."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from owlvit_cli.model.model_dir import CONFIG_FILE, RECORD_FILE, WEIGHTS_FILE
from tests.helpers import run_console_script

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
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and CASES[name, how] in lines[0], result.stderr
    assert "internal error" not in lines[0]
    assert json.loads(result.stdout)["error"]["code"] == 2


def test_push_dry_run_refuses_a_deep_config(tiny_checkpoint, converted, tmp_path: Path):
    hf_dir = tmp_path / "model"
    shutil.copytree(converted(tiny_checkpoint()), hf_dir)
    _spoil(hf_dir, CONFIG_FILE, "deep")
    result = run_console_script("push", hf_dir, "org/model", "--dry-run")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "nested" in result.stderr
