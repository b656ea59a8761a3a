"""Steps as a CI log shows them: one plain line when a step ends, and a line about every
running step at a fixed interval, so a long step is never silent for long."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from owlvit_cli.cli.step_log import INTERVAL_ENV, StepLog
from owlvit_cli.hold import ENV as HOLD_ENV
from owlvit_cli.progress import LAYERS, step_name
from tests.helpers import STEP_LINE, problem_lines, run_console_script, step_lines

ANSI = re.compile("\x1b")
WAIT_SECONDS = 120  # the longest a test waits for an event before it fails


class Lines:
    """A writer that remembers every line and lets a test wait until some have come."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def __call__(self, line: str) -> None:
        with self.changed:
            self.lines.append(line)
            self.changed.notify_all()

    def wait_for(self, count: int, pattern: str) -> list[str]:
        def matching() -> list[str]:
            return [line for line in self.lines if re.search(pattern, line)]

        with self.changed:
            assert self.changed.wait_for(lambda: len(matching()) >= count, WAIT_SECONDS)
            return matching()


def test_a_step_is_one_line_when_it_ends() -> None:
    lines = Lines()
    log = StepLog(lines, interval=3600)
    with log.step("converting tensors") as step:
        step.set_total(3 * 2**20, "bytes")
        step.advance(3 * 2**20)
    with log.step(step_name("running the Flax model", "cpu, 1 image of 64×64, 16 patches")) as step:
        step.set_total(4, LAYERS)
        for _ in range(4):
            step.advance()
    with log.step("comparing"):
        pass
    with pytest.raises(ValueError), log.step("loading the model"):
        raise ValueError
    log.stop()
    assert re.fullmatch(r"converting tensors: done, 3\.0 MiB in \S+ \(\S+ \S+/s\)", lines.lines[0])
    assert re.fullmatch(
        r"running the Flax model \(cpu, 1 image of 64×64, 16 patches\): done, 4 layers in \S+"
        r" \(\S+ layers/s\)",
        lines.lines[1],
    )
    assert re.fullmatch(r"comparing: done in \d+\.\ds", lines.lines[2])
    assert re.fullmatch(r"loading the model: failed after \d+\.\ds", lines.lines[3])
    assert len(lines.lines) == 4  # nothing while running: the interval never came
    assert all(STEP_LINE.search(line) for line in lines.lines)


def test_a_running_step_says_how_far_it_got_at_every_interval() -> None:
    lines = Lines()
    log = StepLog(lines, interval=0.01)
    with log.step("uploading") as step:
        step.set_total(10, "files")
        step.advance(4)
        running = lines.wait_for(2, "so far")
    log.stop()
    for line in running:
        assert re.fullmatch(r"uploading: 4/10 files, \S+ so far, eta \S+", line), line
        assert STEP_LINE.search(line)
    assert lines.lines[-1].startswith("uploading: done, 4/10 files in")


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0.5")
    assert StepLog(print).interval == 0.5
    for wrong in ("0", "-1", "soon"):
        monkeypatch.setenv(INTERVAL_ENV, wrong)
        assert StepLog(print).interval == 30
    monkeypatch.delenv(INTERVAL_ENV)
    assert StepLog(print).interval == 30


def test_convert_verify_in_a_ci_log(tiny_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    """Through pipes, as a CI runner reads it: every step one plain line when it ends, the
    forward passes with what they ran on and their layers; -q keeps stderr empty."""
    ckpt = tiny_checkpoint("v2-tiny", "v2")
    result = run_console_script("convert", ckpt, tmp_path / "m", "--verify")
    assert result.returncode == 0, result.stderr
    said = problem_lines(result.stderr)  # besides the steps, only where the report went
    assert len(said) == 1 and said[0].startswith("recorded the report in "), said
    assert not ANSI.search(result.stderr) and "\r" not in result.stderr
    ended = [line for line in step_lines(result.stderr) if "so far" not in line]
    names = [line.split(":")[0].split(" (")[0] for line in ended]
    assert names[:2] == ["converting tensors", "checking the source checkpoint"]
    assert "running the Flax model" in names and names[-2:-1] == ["comparing"], names
    flax = next(line for line in ended if line.startswith("running the Flax model"))
    hf = next(line for line in ended if line.startswith("running the transformers model"))
    for line in (flax, hf):  # tiny: two vision and two text layers, each run once
        assert "(cpu, 1 image of 64×64, 16 patches, 4 queries): done, 4 layers in" in line
    quiet = run_console_script("convert", ckpt, tmp_path / "q", "--verify", "-q")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_a_long_step_shows_life_in_a_ci_log(
    tiny_checkpoint: Callable[..., Path], converted: Callable[..., Path], tmp_path: Path
) -> None:
    """verify held inside the transformers forward: while it waits there, the log gets a
    line about that step at every interval, with the layers it will run."""
    ckpt = tiny_checkpoint("v2-tiny", "v2")
    model = converted(ckpt)
    hold, log = tmp_path / "hold", tmp_path / "stderr.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", INTERVAL_ENV: "0.05"}
    env[HOLD_ENV] = f"verify-hf-forward:{hold}"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "owlvit_cli", "verify", ckpt, model],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
        try:
            running = _wait_for_lines(proc, hold, log, r"running the transformers model.* so far")
        finally:
            hold.unlink(missing_ok=True)
            proc.wait(timeout=WAIT_SECONDS)
    assert proc.returncode == 0, log.read_text()
    for line in running:
        assert re.fullmatch(
            r"running the transformers model \(cpu, 1 image of 64×64, 16 patches, 4 queries\): "
            r"0/4 layers, \S+ so far",
            line,
        ), line
    text = log.read_text()
    assert not ANSI.search(text) and "\r" not in text


def _wait_for_lines(proc: subprocess.Popen, hold: Path, log: Path, pattern: str) -> list[str]:
    """Two lines matching `pattern`, written while `proc` is held (it cannot end meanwhile)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        if hold.exists():
            found = [line for line in log.read_text().splitlines() if re.search(pattern, line)]
            if len(found) >= 2:
                return found
        time.sleep(0.01)
    pytest.fail(f"no two lines {pattern!r} while held:\n{log.read_text()}")
