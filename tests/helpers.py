"""Plain helpers the tests share: where the reference data lies, how to run the console script.

Fixtures live in conftest.py; anything a test module imports by name lives here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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
    """The exit code, exactly one `error:` line on stderr (after any `warning:` lines), no
    traceback and no internal error; returns the line. Nothing on stdout unless the command
    showed what it found before refusing it (`stdout_empty=False`: inspect's tree). `result` is
    a `subprocess.CompletedProcess` or the `cli` fixture's result."""
    returncode = getattr(result, "returncode", None)
    assert (result.exit_code if returncode is None else returncode) == code, (
        result.stdout,
        result.stderr,
    )
    if stdout_empty:
        assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith("warning: ")
    ]
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
