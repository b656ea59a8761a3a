"""Plain helpers the tests share: where the reference data lies, how to run the console script.

Fixtures live in conftest.py; anything a test module imports by name lives here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from owlvit_cli.hold import ENV as HOLD_ENV

DATA = Path(__file__).parent / "data"
SAMPLE = Path(__file__).parents[1] / "owlvit_cli" / "assets" / "sample.png"
REFERENCE = DATA / "scenic_reference"
REFERENCE_NAMES = {
    "v1_release": ("ref_v1_release_checkpoint", "v1"),
    "v2_release": ("ref_v2_release_checkpoint", "v2"),
    "v1_current": ("ref_v1_current_checkpoint", "current"),
}
TINY_CASES = [(v, layout) for v in ("v1-tiny", "v2-tiny") for layout in ("v1", "v2", "current")]


def reference_checkpoint(name: str) -> Path:
    return REFERENCE / REFERENCE_NAMES[name][0]


def reference_io(name: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"ref_{name}_io.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files if data[key].dtype != object}


def run_console_script(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `owlvit` entry point in a subprocess (what a user or CI runs)."""
    return subprocess.run(
        [sys.executable, "-m", "owlvit_cli", *map(str, args)],
        capture_output=True,
        text=True,
        errors="surrogateescape",  # file names are bytes on Linux and are printed as they are
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        check=False,
    )


def held_console_script(
    args: list[object], point: str, hold: Path, shell: str = "", **popen: object
) -> subprocess.Popen:
    """Start the real console script (after the `shell` commands, if any) and wait until it
    is held at `point` (see owlvit_cli/hold.py): whatever the test does next happens
    at that point, however fast or slow the machine is. Deleting `hold` lets it go on."""
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", HOLD_ENV: f"{point}:{hold}"}
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    command = [sys.executable, "-m", "owlvit_cli", *map(str, args)]
    if shell:
        command = ["sh", "-c", f'{shell}; exec "$0" "$@"', *command]
    proc = subprocess.Popen(command, text=True, env=env, **popen)
    deadline = time.monotonic() + 300
    while not hold.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"never reached {point}: {proc.communicate()}")
        time.sleep(0.01)
    return proc


# A step's line in a log (owlvit_cli.cli.step_log): `NAME: done[, AMOUNT] in 1.2s[ (RATE/s)]`,
# `NAME: failed after 1.2s`, or a running step's `NAME: [DONE/TOTAL, ]1.2s so far[, eta 3.4s]`.
STEP_LINE = re.compile(
    r": (done(, .+)? in [\d:.]+s?( \(.+/s\))?|failed after [\d:.]+s?|.*[\d:.]+s? so far.*)$"
)


def problem_lines(stderr: str) -> list[str]:
    """stderr without the steps' progress lines: what a command said about its problems."""
    return [line for line in stderr.splitlines() if line.strip() and not STEP_LINE.search(line)]


def step_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if STEP_LINE.search(line)]


def sample_pixels() -> np.ndarray:
    """The built-in sample picture as uint8 RGB."""
    from PIL import Image

    return np.asarray(Image.open(SAMPLE).convert("RGB"))


def edited_model_dir(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of a converted directory with its weights edited in their stored dtype (torch
    tensors: numpy has no bfloat16), for the checks that must catch a changed tensor."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


# --------------------------------------------------------------------------------------------
# The output conventions every command keeps, asserted in one place.


def assert_one_line_error(result: Any, code: int = 2, *, stdout_empty: bool = True) -> str:
    """The exit code, exactly one `error:` line on stderr (after any `warning:` lines and the
    steps' progress lines), no traceback and no internal error; returns the line. Nothing on
    stdout unless the command showed what it found before refusing it (`stdout_empty=False`:
    inspect's tree). `result` is a `subprocess.CompletedProcess` or the `cli` result."""
    returncode = getattr(result, "returncode", None)
    assert (result.exit_code if returncode is None else returncode) == code, (
        result.stdout,
        result.stderr,
    )
    if stdout_empty:
        assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = [line for line in problem_lines(result.stderr) if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "internal error" not in lines[0]
    return lines[0]


def only_json_object(stdout: str) -> dict:
    """stdout holds exactly one JSON object and nothing else (json.loads refuses two)."""
    payload = json.loads(stdout)
    assert isinstance(payload, dict)
    return payload


def json_error(stdout: str, code: int) -> dict[str, Any]:
    """The `error` member of the one JSON object on stdout: exactly code, kind and message."""
    error = only_json_object(stdout)["error"]
    assert error == {"code": code, "kind": error["kind"], "message": error["message"]}
    return error
