"""What a person sees: the console script in a pseudo-terminal, its bytes rendered by pyte.

Each test runs the real `owlvit` in a pty (pexpect), feeds everything it wrote to a pyte screen
and asserts on the final screen, as a user would read it once the command has ended. The
screen is taller than the output so nothing scrolls away. Off a terminal the same commands
run with pipes and the text itself is checked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from owlvit_cli.testing import terminal
from owlvit_cli.testing.terminal import Screen
from tests.helpers import problem_lines, run_console_script, step_lines
from tests.hub_server import HubServer

SPINNER = re.compile("[\u2800-\u28ff]")
DURATION = re.compile(r"\d+(\.\d)?s$|\d+:\d\d$")
AMOUNT = re.compile(r"(\d[\d.,]*(?: [KMG]?i?B)?)/(\d[\d.,]*(?: [KMG]?i?B)?)")
ANSI = re.compile(r"\x1b[\[\]()]")
TOKEN = "hf_test_token"
OFFLINE = {"HF_HUB_OFFLINE": "1"}


def run_in_terminal(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Screen:
    return terminal.run_in_terminal(*args, env={**OFFLINE, **(env or {})}, timeout=300)


def step(screen: Screen, name: str) -> str:
    matches = [line for line in screen.steps if line[2:].startswith(name)]
    assert matches, f"no step line {name!r} in:\n" + screen.text()
    return matches[0]


def assert_steps_ended(screen: Screen, *names: str) -> None:
    """Every step line is finished (✓ and a duration) and `names` appear in that order."""
    assert not SPINNER.search(screen.text()), screen.text()
    for line in screen.steps:
        assert line.startswith("✓ "), screen.text()
        assert DURATION.search(line), line
    labels = [line[2:] for line in screen.steps]
    positions = [next(i for i, label in enumerate(labels) if label.startswith(n)) for n in names]
    assert positions == sorted(positions), labels


def assert_bar_full(line: str) -> None:
    done, total = AMOUNT.search(line).groups()
    assert done == total, line
    assert "━" in line, line


def test_convert_then_verify_is_one_display_of_finished_steps(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    screen = run_in_terminal(
        "convert", tiny_checkpoint("v2-tiny", "v2"), tmp_path / "m", "--verify"
    )
    assert screen.exit_code == 0, screen.text()
    assert_steps_ended(
        screen,
        "converting tensors",
        "checking the source checkpoint",
        "reading the checkpoint",
        "compiling the Flax model",
        "running the Flax model",
        "loading the transformers model",
        "running the transformers model",
        "comparing",
    )
    for name in ("running the Flax model", "running the transformers model"):
        forward = step(screen, name)
        assert "4/4 layers" in forward and "━" in forward, forward
        assert screen.detail(forward) == "cpu, 1 image of 64×64, 16 patches, 4 queries"
    tensors = step(screen, "converting tensors")
    assert_bar_full(tensors)
    assert "MiB" in tensors or "KiB" in tensors, tensors  # bytes, shown as sizes
    # The results come below the display, after its last line.
    last_step = screen.lines.index(screen.steps[-1])
    result = next(i for i, line in enumerate(screen.lines) if line.startswith("wrote"))
    assert result > last_step
    assert screen.lines[-1].startswith("✓ converted")
    assert "green" in screen.colours


def test_an_error_comes_after_the_stopped_display(
    tiny_checkpoint: Callable[..., Path], converted: Callable[..., Path]
) -> None:
    """A v2 model directory checked against a v1 checkpoint fails inside the first step, before
    any model loads."""
    model = converted(tiny_checkpoint("v2-tiny", "v2"))
    screen = run_in_terminal("verify", tiny_checkpoint("v1-tiny", "v2"), model, "--ignore-source")
    assert screen.exit_code == 2, screen.text()
    assert not SPINNER.search(screen.text()), screen.text()
    assert "reading the checkpoint" not in screen.text()
    failed = step(screen, "checking the source checkpoint")
    assert failed.startswith("✗ ") and DURATION.search(failed), failed
    assert screen.steps[-1] == failed
    error = next(i for i, line in enumerate(screen.lines) if line.startswith("error:"))
    assert error > screen.lines.index(failed)
    # the terminal wraps the line wherever the width falls, mid-word included
    assert "notthesamearchitecture" in "".join(screen.lines[error:]).replace(" ", "")


def test_push_shows_bytes_per_file_and_overall(
    tiny_checkpoint: Callable[..., Path], converted: Callable[..., Path], tmp_path: Path
) -> None:
    model = converted(tiny_checkpoint("v1-tiny", "v2"))
    home = tmp_path / "hf_home"
    home.mkdir()
    env = {"HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env["HF_HUB_OFFLINE"] = "0"
    with HubServer() as hub:
        screen = run_in_terminal(
            "push", model, "tester/tiny", "--token", TOKEN, "--endpoint", hub.url, env=env
        )
    assert screen.exit_code == 0, screen.text()
    assert_steps_ended(screen, "hashing", "uploading", "committing")
    assert_bar_full(step(screen, "uploading"))
    assert_bar_full(step(screen, "uploading model.safetensors"))  # the large file's own line
    assert_bar_full(step(screen, "hashing"))
    # The card's "not verified" warning is printed before anything is hashed or uploaded.
    warning = next(i for i, line in enumerate(screen.lines) if line.startswith("warning:"))
    assert "not verified" in screen.lines[warning]
    assert warning < next(i for i, line in enumerate(screen.lines) if "hashing" in line)


def test_quiet_prints_the_result_only(tiny_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    screen = run_in_terminal("convert", tiny_checkpoint("v2-tiny", "v2"), tmp_path / "m", "-q")
    assert screen.exit_code == 0, screen.text()
    assert "converting tensors" not in screen.text()
    assert screen.lines[0].startswith("wrote")


def test_off_a_terminal_lines_are_plain_whole_and_unpadded(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / ("a-directory-name-long-enough-to-be-ellipsized-in-an-80-column-table" * 2)
    env = {"COLUMNS": "", "TERM": "xterm-256color"}
    result = run_console_script("convert", tiny_checkpoint("v2-tiny", "v2"), out, env=env)
    assert result.returncode == 0, result.stderr
    for text in (result.stdout, result.stderr):
        assert not ANSI.search(text), text
        assert not re.search(r" +$", text, re.M), text
    assert str(out) in result.stdout  # the path whole, on one line
    assert "…" not in result.stdout
    # no display: each step is one plain line when it ends
    assert step_lines(result.stderr) == result.stderr.splitlines(), result.stderr
    assert result.stderr.startswith("converting tensors: done, ") and "\r" not in result.stderr


def test_off_a_terminal_an_error_is_one_line(
    tiny_checkpoint: Callable[..., Path], converted: Callable[..., Path], tmp_path: Path
) -> None:
    model = converted(tiny_checkpoint("v2-tiny", "v2"))
    long_name = tmp_path / ("checkpoint-" + "x" * 150)
    long_name.write_bytes(tiny_checkpoint("v1-tiny", "v2").read_bytes())
    result = run_console_script("verify", long_name, model, "--ignore-source", env={"COLUMNS": ""})
    assert result.returncode == 2
    assert result.stdout == ""
    lines = problem_lines(result.stderr)  # the steps before it each said they were done
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not ANSI.search(result.stderr)


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}], ids=["NO_COLOR", "dumb"])
def test_no_colour_where_the_environment_says_so(
    env: dict[str, str], tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """As rich reads them: the steps are still shown, in the terminal's default colour."""
    screen = run_in_terminal("convert", tiny_checkpoint("v2-tiny", "v2"), tmp_path / "m", env=env)
    assert screen.exit_code == 0, screen.text()
    assert_steps_ended(screen, "converting tensors")
    assert screen.colours == {"default"}


def test_a_warning_waits_for_the_display_to_stop(tmp_path: Path) -> None:
    """convert warns about a dropped mask head once the tensors are written, while its display
    is still live: the warning is printed below the stopped display, not above or inside it."""
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.testing.fixtures import checkpoint_tree, random_params, write_checkpoint

    params = random_params(VARIANTS["v1-tiny"])
    params["obj_mask_head/Dense_0/kernel"] = np.zeros((4, 4), np.float32)
    ckpt = write_checkpoint(tmp_path / "masks.msgpack", checkpoint_tree(params, "current"))
    screen = run_in_terminal("convert", ckpt, tmp_path / "m")
    assert screen.exit_code == 0, screen.text()
    assert_steps_ended(screen, "converting tensors")
    warning = next(i for i, line in enumerate(screen.lines) if line.startswith("warning:"))
    assert "obj_mask_head" in screen.lines[warning]
    assert warning > screen.lines.index(screen.steps[-1])


@pytest.mark.parametrize("command", ["inspect", "convert", "verify", "push", "detect"])
def test_every_command_takes_quiet(command: str, cli: Callable[..., Any]) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert re.search(r"-q, --quiet\b", result.stdout), result.stdout


def test_a_signal_ends_the_display_with_the_running_step_failed(
    tiny_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM while the first step's line is live, the run held inside a native call: the
    line ends with ✗ (no spinner left), the error line comes below it, nothing is left."""
    import signal

    from owlvit_cli.hold import ENV as HOLD_ENV

    hold = tmp_path / "h"
    screen = terminal.run_in_terminal(
        "convert",
        tiny_checkpoint(),
        tmp_path / "out" / "m",
        env={**OFFLINE, HOLD_ENV: f"step-running@native:{hold}"},
        timeout=60,
        signal_when=(hold, signal.SIGTERM),
    )
    assert screen.exit_code == 143, screen.text()
    assert not SPINNER.search(screen.text()), screen.text()
    assert screen.steps and all(line.startswith("✗ ") for line in screen.steps), screen.text()
    error = next(i for i, line in enumerate(screen.lines) if line.startswith("error:"))
    assert screen.lines[error:] == ["error: interrupted (SIGTERM)"]
    assert error > screen.lines.index(screen.steps[-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h"]
