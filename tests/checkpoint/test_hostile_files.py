"""Files that are not what they seem: pipes, devices, files cut short while being read,
names that are not UTF-8 or too long, tensors holding NaN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from owlvit_cli.model.spec import VARIANTS
from owlvit_cli.testing.fixtures import checkpoint_tree, random_params, write_checkpoint
from tests.helpers import problem_lines, run_console_script


def _one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = problem_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "internal error" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["inspect", "convert", "verify"])
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, converted, tiny_checkpoint, command):
    fifo = tmp_path / "ckpt"
    os.mkfifo(fifo)
    # Were owlvit to open the FIFO for reading it would wait for a writer: hold the write end
    # open in a thread so that the failure is a wrong answer, not a hang of the test.
    rescue = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
    rescue.start()
    extra = {"inspect": [], "convert": [tmp_path / "out"], "verify": [converted(tiny_checkpoint())]}
    line = _one_line(run_console_script(command, fifo, *extra[command], timeout=120))
    assert "pipe (FIFO)" in line
    assert not (tmp_path / "out").exists()
    if rescue.is_alive():
        with open(fifo, "rb"):
            pass


def test_dev_stdin_is_refused(tiny_checkpoint):
    with open(tiny_checkpoint(), "rb") as data:
        result = subprocess.run(
            [sys.executable, "-m", "owlvit_cli", "inspect", "/dev/stdin"],
            stdin=data, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    # A file on stdin is a regular file and reads fine; a pipe on stdin is refused.
    assert result.returncode == 0, result.stderr
    piped = subprocess.run(
        [sys.executable, "-m", "owlvit_cli", "inspect", "/dev/stdin"],
        input=b"", capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert piped.returncode == 2 and b"pipe (FIFO)" in piped.stderr, piped.stderr


def test_truncated_while_being_read_is_one_error_not_sigbus(tiny_checkpoint, tmp_path: Path):
    """Run in a child: with a memory map, reading past the new end kills it with SIGBUS."""
    ckpt = tmp_path / "ckpt"
    ckpt.write_bytes(tiny_checkpoint().read_bytes())
    script = (
        "import os, sys\n"
        "from owlvit_cli.checkpoint.reader import open_checkpoint\n"
        "from owlvit_cli.errors import CheckpointError\n"
        "ckpt = open_checkpoint(sys.argv[1])\n"
        "os.truncate(sys.argv[1], 4096)\n"
        "try:\n"
        "    [ckpt.read(e.path) for e in ckpt]\n"
        "except CheckpointError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run([sys.executable, "-c", script, str(ckpt)], env=env,
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "changed while being read" in result.stdout


def test_non_utf8_checkpoint_name_converts(tiny_checkpoint, tmp_path: Path):
    name = os.fsdecode(b"ckpt-\xff\xfe")
    ckpt = tmp_path / name
    ckpt.write_bytes(tiny_checkpoint().read_bytes())
    out = tmp_path / os.fsdecode(b"out-\xff")
    result = run_console_script("convert", ckpt, out)
    assert result.returncode == 0, result.stderr
    assert (out / "model.safetensors").exists()
    shown = subprocess.run([sys.executable, "-m", "owlvit_cli", "inspect", ckpt],
                           capture_output=True, timeout=120, check=False)  # fmt: skip
    assert shown.returncode == 0 and b"ckpt-\xff\xfe" in shown.stdout, shown.stderr


@pytest.mark.parametrize("command", ["inspect", "convert", "verify", "push", "detect"])
def test_names_over_255_bytes_are_one_line(tmp_path: Path, tiny_checkpoint, command: str):
    long = tmp_path / ("x" * 256)
    args = {
        "inspect": [long],
        "convert": [tiny_checkpoint(), long],
        "verify": [long, tmp_path],
        "push": [long, "user/repo", "--dry-run"],
        "detect": [long, tiny_checkpoint(), "--query", "a cat"],
    }[command]
    _one_line(run_console_script(command, *args, timeout=120))


def test_nan_weights_warn_at_convert_and_fail_verify_with_valid_json(cli, tmp_path: Path):
    params = random_params(VARIANTS["v1-tiny"])
    embedding = params["backbone/clip/text/token_embedding/embedding"].copy()
    embedding[40000] = np.nan  # a token no default query uses: the outputs stay finite
    params["backbone/clip/text/token_embedding/embedding"] = embedding
    kernel = params["class_head/Dense_0/kernel"].copy()
    kernel[0, 0] = np.inf
    params["class_head/Dense_0/kernel"] = kernel
    ckpt = write_checkpoint(tmp_path / "nan", checkpoint_tree(params))
    result = cli("convert", ckpt, tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert "NaN or infinite" in result.stderr
    assert "token_embedding/embedding" in result.stderr and "class_head/Dense_0" in result.stderr
    checked = cli("verify", ckpt, tmp_path / "out", "--json")
    assert checked.exit_code == 1, checked.stderr

    def reject(constant: str) -> None:
        raise AssertionError(f"bare {constant} in --json output")

    report = json.loads(checked.stdout, parse_constant=reject)
    assert "mapping/finite_weights" in report["failed"]
