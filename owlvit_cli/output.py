"""The one output layer every command uses.

Results go to stdout (human tables, or exactly one JSON object with --json); progress, logs
and errors go to stderr. Colour and progress bars appear only when the stream is a terminal.
Known errors become one line and their exit code here, and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
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

INTERNAL_ERROR_EXIT = 70


def _json_default(value: Any) -> Any:
    """Let numpy scalars and paths appear in JSON results without each caller converting."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@dataclass
class Output:
    """Where a command's results, progress and problems go."""

    json_mode: bool = False
    debug: bool = False
    stdout: Console = field(default_factory=lambda: Console(file=sys.stdout, highlight=False))
    stderr: Console = field(
        default_factory=lambda: Console(file=sys.stderr, stderr=True, highlight=False)
    )

    def result(self, payload: dict[str, Any], render: Callable[[Console], None]) -> None:
        """Print the command's result: the JSON object, or the human rendering of it."""
        if self.json_mode:
            sys.stdout.write(json.dumps(payload, indent=2, default=_json_default) + "\n")
            sys.stdout.flush()
        else:
            render(self.stdout)

    def info(self, message: str) -> None:
        self.stderr.print(message, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.stderr.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[ProgressTask]:
        """A progress bar on stderr when it is a terminal; otherwise a silent counter."""
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        bar = Progress(*columns, console=self.stderr, disable=not self.stderr.is_terminal)
        with bar:
            task_id = bar.add_task(description, total=total)
            yield ProgressTask(bar, task_id)

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        """A spinner for one slow step (loading, compiling, a forward pass)."""
        with self.progress(description):
            yield


@dataclass
class ProgressTask:
    """A handle the core can advance without knowing whether a bar is shown."""

    bar: Progress
    task_id: Any

    def advance(self, amount: float = 1, description: str | None = None) -> None:
        if description is None:
            self.bar.advance(self.task_id, amount)
        else:
            self.bar.update(self.task_id, advance=amount, description=description)


def fail(out: Output, message: str, code: int) -> NoReturn:
    """Print one error line on stderr and exit with `code`."""
    out.stderr.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True, markup=True)
    raise SystemExit(code)


def run_guarded(out: Output, action: Callable[[], int | None]) -> NoReturn:
    """Run a command body; map every failure to one line and its documented exit code."""
    try:
        code = action() or ExitCode.OK
    except OwlvitError as exc:
        if out.debug:
            traceback.print_exc()
        fail(out, _escape(str(exc)), int(exc.exit_code))
    except KeyboardInterrupt:
        fail(out, "interrupted", int(ExitCode.INTERRUPTED))
    except Exception as exc:
        if out.debug:
            traceback.print_exc()
        detail = _escape(f"{type(exc).__name__}: {exc}".splitlines()[0])
        fail(out, f"internal error ({detail}); rerun with --debug for a traceback", 70)
    raise SystemExit(int(code))


def _escape(text: str) -> str:
    """Keep file names like `[foo]` from being read as rich markup."""
    from rich.markup import escape

    return escape(text)
