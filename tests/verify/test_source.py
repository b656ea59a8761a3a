"""verify checks that CKPT is the file HF_DIR was converted from before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from owlvit_cli.hold import ENV as HOLD_ENV
from tests.helpers import held_console_script, problem_lines, run_console_script

# Runs verify in a fresh interpreter and reports which heavy libraries it imported: with no
# jax, torch or transformers in sys.modules, no model can have been loaded.
PROBE = """
import json, sys
from typer.testing import CliRunner
from owlvit_cli.cli.app import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted(m for m in ("jax", "torch", "transformers", "flax") if m in sys.modules)
print(json.dumps({"exit_code": result.exit_code, "stderr": result.stderr, "imported": heavy}))
"""


def test_size_mismatch_fails_before_any_model_loads(tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("v1-tiny", "v2")
    other = tiny_checkpoint("v2-tiny", "v2")  # another file, of another size
    hf_dir = converted(other)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, "verify", str(ckpt), str(hf_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["exit_code"] == 1
    assert seen["imported"] == []
    size = f"{other.stat().st_size:,} bytes"
    assert f"{hf_dir.name} was converted from {other.name} ({size})" in seen["stderr"]
    assert f"not this file {ckpt.name} ({ckpt.stat().st_size:,} bytes)" in seen["stderr"]


def test_source_mismatch_through_the_console_script(tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("v1-tiny", "v2")
    hf_dir = converted(tiny_checkpoint("v2-tiny", "v2"))
    result = run_console_script("verify", ckpt, hf_dir, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["passed"] is False and report["failed"] == ["source"]
    assert report["levels"] == {} and report["source"]["matches"] is False
    assert "--ignore-source" in result.stderr and len(problem_lines(result.stderr)) == 1
    human = run_console_script("verify", ckpt, hf_dir)
    assert human.returncode == 1
    # said once: the error line on stderr, no report on stdout repeating it
    assert human.stdout == ""
    assert (human.stdout + human.stderr).count("was converted from") == 1, human.stderr
    assert problem_lines(human.stderr)[0].startswith("error: verification failed: ")


def test_matching_source_is_reported(cli, tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("v1-tiny", "v2")
    result = cli("verify", ckpt, converted(ckpt), "--json")
    assert result.exit_code == 0, result.stderr
    source = json.loads(result.stdout)["source"]
    assert source["matches"] is True and "size and sha256 match" in source["message"]
    assert source["checkpoint"]["sha256"] == source["expected"]["sha256"]


def test_convert_verify_reads_the_checkpoint_once_for_its_sha256(tmp_path, tiny_checkpoint):
    """The conversion hashes the bytes it reads for the tensors anyway; verify's pairing check
    takes that digest instead of reading the file again. With nowhere on disk to keep it (the
    cache is a file), only the process's memory can save that second read."""
    ckpt = tiny_checkpoint("v2-tiny")
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("")
    hold = tmp_path / "hold"
    env = {**os.environ, "OWLVIT_CACHE": str(blocked), HOLD_ENV: f"checkpoint-hashing:{hold}"}
    command = [sys.executable, "-m", "owlvit_cli", "convert", str(ckpt), str(tmp_path / "out")]
    proc = subprocess.Popen([*command, "--verify", "--json"], env=env, stdout=subprocess.PIPE)
    while proc.poll() is None and not hold.exists():
        time.sleep(0.01)
    if hold.exists():
        hold.unlink()
        proc.communicate(timeout=300)
        pytest.fail("the checkpoint was read a second time, to hash it")
    out, _ = proc.communicate()
    assert proc.returncode == 0
    assert json.loads(out)["verification"]["source"]["matches"] is True

    # The hold point works: verify alone, in a new process, has to read the file to hash it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OWLVIT_CACHE", str(blocked))
        held = held_console_script(
            ["verify", ckpt, tmp_path / "out", "--no-record"], "checkpoint-hashing", hold
        )
    hold.unlink()
    held.communicate(timeout=300)
    assert held.returncode == 0
