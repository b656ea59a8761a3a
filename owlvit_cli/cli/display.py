"""The live display of a command's steps on a terminal: one line per step, one display.

While a step runs its line shows a spinner, its name (a detail such as the device a forward pass
runs on goes on a dim line below) and the time so far, and, once the step
knows its total, a bar with amount/total, the rate and the time left (sizes and a byte rate
when the unit is bytes). When it ends the spinner becomes a green ✓ (a red ✗ if it raised) and
the time becomes its duration, so no spinner glyph is ever left on screen. Every column reads
the task as it is at each refresh, so a total set after the step started is drawn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.table import Column
from rich.text import Text

from owlvit_cli.cli.render import human_bytes
from owlvit_cli.hold import hold_point
from owlvit_cli.progress import split_step_name

RUNNING, DONE, FAILED = "running", "done", "failed"
BYTES = "bytes"
MAX_BAR_WIDTH, MIN_BAR_WIDTH = 24, 8
# What the figures of a line other than the bar take at most, each with the space after it:
# glyph, "999.9 MiB/999.9 MiB", "999.9 MiB/s", "eta 59.9s", "1:05:00".
FIGURES_WIDTH = 2 + 20 + 12 + 10 + 7
MIN_NAME_WIDTH = 16


def format_seconds(seconds: float | None) -> str:
    """`0.4s`, `12.3s`, `2:05`: short enough for a step line, precise where it matters."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return (
        f"{minutes}:{rest:02d}"
        if minutes < 60
        else f"{minutes // 60}:{minutes % 60:02d}:{rest:02d}"
    )


def format_amount(value: float, unit: str = "", rate: bool = False) -> str:
    """A size for bytes, else a count (a slow rate keeps a decimal: `0.4`, not `0`)."""
    if unit == BYTES:
        return human_bytes(value)
    return f"{value:,.1f}" if rate and value < 10 else f"{value:,.0f}"


def unit_suffix(unit: str) -> str:
    """What follows a count: ` layers`; nothing for bytes, whose sizes name their unit."""
    return f" {unit}" if unit and unit != BYTES else ""


def _running(task: Task) -> bool:
    return task.fields.get("state") == RUNNING


class StatusColumn(SpinnerColumn):
    """The spinner while a step runs; ✓ or ✗ once it has ended."""

    def render(self, task: Task) -> RenderableType:
        state = task.fields.get("state")
        if state == DONE:
            return Text("✓", style="green")
        if state == FAILED:
            return Text("✗", style="bold red")
        return super().render(task)


class KnownTotalBar(BarColumn):
    """The bar, only for a step that knows its total."""

    def render(self, task: Task) -> RenderableType:
        return Text("") if task.total is None else super().render(task)


class AmountColumn(ProgressColumn):
    """`12.0 MiB/585.0 MiB` or `12/24 layers`."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        unit = task.fields.get("unit", "")
        done, total = format_amount(task.completed, unit), format_amount(task.total, unit)
        return Text(f"{done}/{total}{unit_suffix(unit)}", style="progress.download")


class RateColumn(ProgressColumn):
    """The current rate while running; the average over the step once it has ended."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        rate = task.speed if _running(task) else task.completed / max(task.elapsed or 0, 1e-9)
        if not rate:
            return Text("")
        unit = task.fields.get("unit", "")
        text = f"{format_amount(rate, unit, rate=True)}{unit_suffix(unit)}/s"
        return Text(text, style="progress.data.speed")


class RemainingColumn(ProgressColumn):
    """The estimated time left, while running with a known total."""

    def render(self, task: Task) -> Text:
        if not _running(task) or task.total is None:
            return Text("")
        left = task.time_remaining
        return Text(
            "" if left is None else f"eta {format_seconds(left)}", style="progress.remaining"
        )


class TimeColumn(ProgressColumn):
    """Time so far while running; the step's duration once it has ended."""

    def render(self, task: Task) -> Text:
        style = "progress.elapsed" if _running(task) else "dim"
        return Text(format_seconds(task.elapsed), style=style)


FIGURES = (AmountColumn, RateColumn, RemainingColumn, TimeColumn)


class StepDisplay:
    """All of one command's steps in one rich live display on `console` (stderr)."""

    def __init__(self, console: Console) -> None:
        # Figures never wrap: on a narrow terminal the bar gets shorter, then a step name
        # longer than the room left is shortened.
        spare = console.width - FIGURES_WIDTH - MIN_NAME_WIDTH - 1
        bar_width = min(MAX_BAR_WIDTH, max(MIN_BAR_WIDTH, spare))
        room = max(MIN_NAME_WIDTH, console.width - FIGURES_WIDTH - bar_width - 1)
        name_column = Column(no_wrap=True, overflow="ellipsis", max_width=room)
        name = TextColumn("{task.description}", table_column=name_column)
        self.progress = Progress(
            StatusColumn(table_column=Column(no_wrap=True)),
            name,
            KnownTotalBar(bar_width=bar_width, table_column=Column(no_wrap=True)),
            *(kind(table_column=Column(no_wrap=True)) for kind in FIGURES),
            console=console,
            refresh_per_second=10,
        )
        self.progress.start()

    @contextlib.contextmanager
    def step(self, name: str, total: float | None = None, unit: str = "") -> Iterator[_RichStep]:
        task = self.progress.add_task(_markup(name), total=total, unit=unit, state=RUNNING)
        hold_point("step-running")
        try:
            yield _RichStep(self.progress, task)
        except BaseException:
            self._end(task, FAILED)
            raise
        self._end(task, DONE)

    def _end(self, task: TaskID, state: str) -> None:
        self.progress.stop_task(task)
        self.progress.update(task, state=state, refresh=True)

    def stop(self) -> None:
        """The last frame stays on screen; whatever is printed next goes below it."""
        self.progress.stop()

    def fail_running(self) -> None:
        """End every running step as failed, then stop: a signal ends the run from another
        thread, so no step's own exit will draw its ✗."""
        for task in self.progress.tasks:
            if _running(task):
                self._end(task.id, FAILED)
        self.stop()


@dataclass
class _RichStep:
    """A step as the core sees it (the `Step` protocol), drawn as a line of the display."""

    progress: Progress
    task: TaskID

    def set_total(self, total: float, unit: str = "") -> None:
        fields = {"unit": unit} if unit else {}
        self.progress.update(self.task, total=total, **fields)

    def advance(self, amount: float = 1) -> None:
        self.progress.advance(self.task, amount)

    def describe(self, name: str) -> None:
        self.progress.update(self.task, description=_markup(name))


def _markup(name: str) -> str:
    """The name, and its detail (what runs where) dimmed on a line of its own below it."""
    title, detail = split_step_name(name)
    return escape(title) + (f"\n[dim]{escape(detail)}[/dim]" if detail else "")
