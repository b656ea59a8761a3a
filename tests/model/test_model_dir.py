"""The one check of a model directory, as every command that reads one meets it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import SAMPLE, run_console_script


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
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "lists shard(s) outside the model directory" in lines[0]
        assert "x.safetensors" in lines[0], name
