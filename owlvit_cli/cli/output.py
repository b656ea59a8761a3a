"""The one output layer every command uses.

Results go to stdout (human tables, or exactly one JSON object with --json); progress, logs
and errors go to stderr. Colour and progress bars appear only when the stream is a terminal.
Known errors become one line and their exit code here, and nowhere else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from owlvit_cli.errors import ExitCode, OwlvitError
from owlvit_cli.json_text import strict_json_dumps
from owlvit_cli.progress import Step


def _json_default(value: Any) -> Any:
    """Let numpy scalars and paths appear in JSON results without each caller converting."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class _Stdout(Console):
    """rich ends the process with exit code 1 when stdout's reader goes away; a closed stdout
    (`| head -1`) is not a failed check, so the rest of the output just goes nowhere."""

    def on_broken_pipe(self) -> None:
        from owlvit_cli.cli.process import stdout_closed

        self.quiet = True
        stdout_closed()


@dataclass
class Output:
    """Where a command's results, progress and problems go."""

    json_mode: bool = False
    debug: bool = False
    stdout: Console = field(default_factory=lambda: _Stdout(file=sys.stdout, highlight=False))
    stderr: Console = field(
        default_factory=lambda: Console(file=sys.stderr, stderr=True, highlight=False)
    )

    def result(self, payload: dict[str, Any], render: Callable[[Console], None]) -> None:
        """Print the command's result: the JSON object, or the human rendering of it. A closed
        stdout (`| head -1`) is not a failure of the command."""
        try:
            if self.json_mode:
                text = strict_json_dumps(payload, indent=2, default=_json_default)
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            else:
                render(self.stdout)
        except BrokenPipeError:
            from owlvit_cli.cli.process import stdout_closed

            stdout_closed()

    def info(self, message: str) -> None:
        self.stderr.print(message, soft_wrap=True)

    def error(self, message: str) -> None:
        """A problem the command reports without ending (the one-line form `fail` uses)."""
        self.stderr.print(f"[bold red]error:[/bold red] {_escape(message)}", soft_wrap=True)

    def warn(self, message: str) -> None:
        self.stderr.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)

    @contextlib.contextmanager
    def step(self, name: str, total: float | None = None, unit: str = "") -> Iterator[Step]:
        """One line per step on stderr when it is a terminal (the `Progress` protocol)."""
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
        columns += [MofNCompleteColumn(), TimeElapsedColumn()]
        bar = Progress(*columns, console=self.stderr, disable=not self.stderr.is_terminal)
        with bar:
            task_id = bar.add_task(name, total=total)
            yield _RichStep(bar, task_id)


@dataclass
class _RichStep:
    """A step shown as a rich progress line (the core sees only the `Step` protocol)."""

    bar: Progress
    task_id: Any

    def set_total(self, total: float, unit: str = "") -> None:
        self.bar.update(self.task_id, total=total)

    def advance(self, amount: float = 1) -> None:
        self.bar.advance(self.task_id, amount)

    def describe(self, name: str) -> None:
        self.bar.update(self.task_id, description=_escape(name))


def fail(out: Output, message: str, code: int) -> NoReturn:
    """Print one error line on stderr and exit with `code`."""
    out.error(message)
    raise SystemExit(int(code))


def run_guarded(out: Output, action: Callable[[], int | None]) -> NoReturn:
    """Run a command body; map every failure to one line and its documented exit code."""
    try:
        code = action() or ExitCode.OK
    except OwlvitError as exc:
        if out.debug:
            traceback.print_exc()
        fail(out, str(exc), exc.exit_code)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (see process.py)
        from owlvit_cli.cli.process import interrupt_exit_code, interrupt_message

        fail(out, interrupt_message(exc), interrupt_exit_code(exc))
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:  # a path no filesystem accepts: the user's to fix
            _internal_error(out, exc)
        if out.debug:
            traceback.print_exc()
        name = os.fsdecode(exc.filename or "")
        name = name if len(name) <= 60 else f"{name[:24]}…{name[-24:]}"
        fail(out, f"{name}: file name too long for the filesystem", ExitCode.BAD_INPUT)
    except Exception as exc:
        _internal_error(out, exc)
    raise SystemExit(int(code))


def _internal_error(out: Output, exc: Exception) -> NoReturn:
    if out.debug:
        traceback.print_exc()
    detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
    fail(
        out,
        f"internal error ({detail}); rerun with --debug for a traceback",
        ExitCode.INTERNAL_ERROR,
    )


def _escape(text: str) -> str:
    """Keep file names like `[foo]` from being read as rich markup."""
    from rich.markup import escape

    return escape(text)
