"""The one output layer every command uses.

Results go to stdout (human tables, or exactly one JSON object with --json); progress, logs
and errors go to stderr. Colour and progress bars appear only when the stream is a terminal.
Known errors become one line and their exit code here, and nowhere else; with --json they are
also the one JSON object on stdout, `{"error": {"code", "kind", "message"}}`, so that a CI
script can branch on `jq .error.code` whatever happened.
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

from owlvit_cli.errors import INTERNAL_KIND, INTERRUPTED_KIND, USAGE_KIND, ExitCode, OwlvitError
from owlvit_cli.progress import Step


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
    json_printed: bool = False  # one JSON object per process: an error after a result adds none

    def result(self, payload: dict[str, Any], render: Callable[[Console], None]) -> None:
        """Print the command's result: the JSON object, or the human rendering of it."""
        if self.json_mode:
            print_json(payload)
            self.json_printed = True
        else:
            render(self.stdout)

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


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def error_object(code: int, kind: str, message: str) -> dict[str, Any]:
    """The `--json` shape of a failure (README "Exit codes"); `message` is the stderr line."""
    return {"error": {"code": int(code), "kind": kind, "message": message}}


def fail(out: Output, message: str, code: int, kind: str) -> NoReturn:
    """Print one error line on stderr (and, with --json, the error object on stdout unless a
    result is already there), then exit with `code`. `message` is plain text, not markup."""
    out.error(message)
    if out.json_mode and not out.json_printed:
        print_json(error_object(code, kind, message))
        out.json_printed = True
    raise SystemExit(code)


def run_guarded(out: Output, action: Callable[[], int | None]) -> NoReturn:
    """Run a command body; map every failure to one line and its documented exit code."""
    try:
        code = action() or ExitCode.OK
    except OwlvitError as exc:
        if out.debug:
            traceback.print_exc()
        fail(out, str(exc), int(exc.exit_code), exc.kind)
    except KeyboardInterrupt:
        fail(out, "interrupted", int(ExitCode.INTERRUPTED), INTERRUPTED_KIND)
    except Exception as exc:
        if out.debug:
            traceback.print_exc()
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        message = f"internal error ({detail}); rerun with --debug for a traceback"
        fail(out, message, ExitCode.INTERNAL_ERROR, INTERNAL_KIND)
    raise SystemExit(int(code))


def _escape(text: str) -> str:
    """Keep file names like `[foo]` from being read as rich markup."""
    from rich.markup import escape

    return escape(text)


def usage_failure(exc: Any, json_mode: bool) -> NoReturn:
    """A command line click refused (a `click.ClickException`): click's own lines on stderr
    (usage, hint, error) and, with --json, the error object on stdout."""
    exc.show()
    if json_mode:
        print_json(error_object(exc.exit_code, USAGE_KIND, exc.format_message()))
    raise SystemExit(exc.exit_code)
