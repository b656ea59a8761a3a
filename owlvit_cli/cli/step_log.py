"""A command's steps as plain lines for a log, where no terminal draws a live display.

A CI log cannot redraw a line, and some CI systems end a job that has been silent for ten
minutes, so off a terminal each step says what it did in one line when it ends (name, amount,
duration), and a timer thread says how far every running step has got at a fixed interval, so a
long step shows a sign of life at least that often. Lines are plain text: no colour, no cursor
moves, no carriage returns.

`OWLVIT_PROGRESS_INTERVAL` (seconds, default 30) sets that interval; it exists so that tests
need not wait 30 s, and is not an interface for users.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

from owlvit_cli.cli.display import format_amount, format_seconds, unit_suffix
from owlvit_cli.progress import split_step_name

INTERVAL_ENV = "OWLVIT_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0


def progress_interval() -> float:
    """The seconds between two lines about a running step (`OWLVIT_PROGRESS_INTERVAL`)."""
    try:
        seconds = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return seconds if seconds > 0 else DEFAULT_INTERVAL


class _LogStep:
    """One step's state, advanced by the work's thread and read by the timer's."""

    def __init__(self, name: str, total: float | None, unit: str) -> None:
        self.name, self.total, self.unit = _one_line(name), total, unit
        self.completed = 0.0
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def set_total(self, total: float, unit: str = "") -> None:
        with self.lock:
            self.total = total
            self.unit = unit or self.unit

    def advance(self, amount: float = 1) -> None:
        with self.lock:
            self.completed += amount

    def describe(self, name: str) -> None:
        with self.lock:
            self.name = _one_line(name)

    def running_line(self) -> str:
        """`running the Flax model: 12/24 layers, 30.0s so far, eta 30.0s`."""
        with self.lock:
            elapsed = time.monotonic() - self.started
            parts = [f"{self.name}:"]
            if self.total is not None:
                done, total = self._amount(self.completed), self._amount(self.total)
                parts.append(f"{done}/{total}{unit_suffix(self.unit)},")
            parts.append(f"{format_seconds(elapsed)} so far")
            if self.total and 0 < self.completed < self.total:
                left = elapsed / self.completed * (self.total - self.completed)
                parts[-1] += f", eta {format_seconds(left)}"
            return " ".join(parts)

    def ended_line(self, failed: bool) -> str:
        """`converting tensors: done, 585.0 MiB in 3.2s (182.8 MiB/s)`, or `...: failed
        after 0.3s`."""
        with self.lock:
            elapsed = time.monotonic() - self.started
            if failed:
                return f"{self.name}: failed after {format_seconds(elapsed)}"
            if self.total is None:
                return f"{self.name}: done in {format_seconds(elapsed)}"
            amount = self._amount(self.completed)
            if self.completed != self.total:
                amount += f"/{self._amount(self.total)}"
            amount += unit_suffix(self.unit)
            rate = format_amount(self.completed / max(elapsed, 1e-9), self.unit, rate=True)
            speed = f" ({rate}{unit_suffix(self.unit)}/s)" if self.completed else ""
            return f"{self.name}: done, {amount} in {format_seconds(elapsed)}{speed}"

    def _amount(self, value: float) -> str:
        return format_amount(value, self.unit)


def _one_line(name: str) -> str:
    """`running the Flax model (cpu, 1 image of 768×768, 576 patches, 4 queries)`."""
    title, detail = split_step_name(name)
    return f"{title} ({detail})" if detail else title


class StepLog:
    """Every step of one command as log lines, written by `write` (one call per line)."""

    def __init__(self, write: Callable[[str], None], interval: float | None = None) -> None:
        self.write = write
        self.interval = progress_interval() if interval is None else interval
        self.running: list[_LogStep] = []
        self.lock = threading.Lock()  # one line at a time, from either thread
        self.stopped = threading.Event()
        self.timer: threading.Thread | None = None

    @contextlib.contextmanager
    def step(self, name: str, total: float | None = None, unit: str = "") -> Iterator[_LogStep]:
        state = _LogStep(name, total, unit)
        with self.lock:
            self.running.append(state)
        self._start_timer()
        try:
            yield state
        except BaseException:
            self._end(state, failed=True)
            raise
        self._end(state, failed=False)

    def _end(self, state: _LogStep, failed: bool) -> None:
        with self.lock:
            self.running.remove(state)
            self.write(state.ended_line(failed))

    def _start_timer(self) -> None:
        if self.timer is None and not self.stopped.is_set():
            self.timer = threading.Thread(target=self._tick, name="owlvit-step-log", daemon=True)
            self.timer.start()

    def _tick(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                if self.stopped.is_set():
                    return
                for state in self.running:
                    self.write(state.running_line())

    def stop(self) -> None:
        """No more lines from the timer: the command is printing its result or its error,
        and once this returns no line of the timer's can come between."""
        self.stopped.set()
        with self.lock:
            pass
