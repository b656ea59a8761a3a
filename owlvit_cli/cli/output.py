"""The one output layer every command uses.

Results go to stdout (human tables, or exactly one JSON object with --json); progress, logs
and errors go to stderr. Known errors become one line and their exit code here, and nowhere
else; with --json they are also the one JSON object on stdout,
`{"error": {"code", "kind", "message"}}`, so that a CI script can branch on
`jq .error.code` whatever happened.

On a terminal, every step of a command is a line of one live display (`display.py`), and
warnings and errors wait until it has stopped so they are never drawn under or inside it. Off a
terminal (a CI log) there is no display and no colour, and nothing is laid out for a width nobody
sees: no padding, no ellipsis, no wrapping inside a message; each step is a plain line when it
ends, and a running one says how far it got every 30 s (`step_log.py`). `--quiet` shows no
steps anywhere. `NO_COLOR`, `FORCE_COLOR`, `TERM=dumb` and
`COLUMNS` act as rich reads them.

With --json the result is printed when the command has its exit code, so that a non-zero one
always comes with the `error` member. A stdout that takes no more bytes (a full disk,
`> /dev/full`) is an output error, exit 2; a closed pipe is not a failure (see `process`).

In the console script a signal is reported from the main thread while the command's thread
may still run (`interrupted`): from then on this output prints nothing for that thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn

from rich.console import Console
from rich.rule import Rule

from owlvit_cli.cli.display import StepDisplay
from owlvit_cli.cli.step_log import StepLog
from owlvit_cli.errors import (
    CHECK_FAILED_KIND,
    INTERNAL_KIND,
    INTERRUPTED_KIND,
    USAGE_KIND,
    ExitCode,
    HubError,
    OutputError,
    OwlvitError,
    error_object,
)
from owlvit_cli.json_text import strict_json_dumps
from owlvit_cli.progress import NO_PROGRESS, Step

# Off a terminal, lines are as long as their content: wide enough that no table ever has to
# squeeze a path into an ellipsis (trailing padding is trimmed by `_TrimmedLines`).
UNBOUNDED_WIDTH = 4096
RULE_WIDTH = 80
REPORT_WAIT_SECONDS = 1.0  # how long a signal's report waits for the command's own printing
# The `kind` of an error object added to a result that did not carry one, by exit code.
KIND_BY_CODE = {
    ExitCode.CHECK_FAILED: CHECK_FAILED_KIND,
    ExitCode.BAD_INPUT: OwlvitError.kind,
    ExitCode.HUB_ERROR: HubError.kind,
    ExitCode.INTERNAL_ERROR: INTERNAL_KIND,
}


def _json_default(value: Any) -> Any:
    """Let numpy scalars and paths appear in JSON results without each caller converting."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class _TrimmedLines:
    """A text stream that drops the spaces rich pads table cells with at the end of a line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.pending = ""

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        if lines:
            self.stream.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.pending:  # a print(end=""): the line may go on, so it is written as it is
            self.stream.write(self.pending)
            self.pending = ""
        self.stream.flush()


class _Console(Console):
    """rich ends the process with exit code 1 when stdout's reader goes away; a closed stdout
    (`| head -1`) is not a failed check, so the rest of the output just goes nowhere."""

    def on_broken_pipe(self) -> None:
        from owlvit_cli.cli.process import stdout_closed

        self.quiet = True
        if not self.stderr:
            stdout_closed()


class _PlainConsole(_Console):
    """The console off a terminal: unbounded lines, so a rule gets a width of its own."""

    def rule(self, *args: Any, **kwargs: Any) -> None:
        self.print(Rule(*args, **kwargs), width=min(self.width, RULE_WIDTH))


def make_console(stream: IO[str], stderr: bool = False) -> Console:
    """A console for `stream`: rich's own on a terminal or where COLUMNS sets a width, else one
    that lays lines out at their natural length."""
    console = _Console(file=stream, stderr=stderr, highlight=False)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return _PlainConsole(
        file=_TrimmedLines(stream), stderr=stderr, highlight=False, width=UNBOUNDED_WIDTH
    )


@dataclass
class Output:
    """Where a command's results, progress and problems go (also the CLI's `Progress`)."""

    json_mode: bool = False
    debug: bool = False
    quiet: bool = False
    stdout: Console = field(default_factory=lambda: make_console(sys.stdout))
    stderr: Console = field(default_factory=lambda: make_console(sys.stderr, stderr=True))
    _display: StepDisplay | None = field(default=None, init=False, repr=False)
    _log: StepLog | None = field(default=None, init=False, repr=False)
    _held: list[str] = field(default_factory=list, init=False, repr=False)
    json_printed: bool = False  # one JSON object per process: an error after a result adds none
    _pending: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _last_error: str = field(default="", init=False, repr=False)
    # The code of the JSON object once it is whole on stdout (a write can block on a pipe).
    _json_code: int | None = field(default=None, init=False, repr=False)
    # Held while anything is printed; `closed` once a signal's report has been printed.
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    closed: bool = field(default=False, init=False, repr=False)

    def result(self, payload: dict[str, Any], render: Callable[[Console], None]) -> None:
        """The command's result: with --json kept for `finish` (which knows the exit code),
        else rendered now. A closed stdout (`| head -1`) is not a failure of the command."""
        self.end_display()
        if self.json_mode:
            self._pending = payload
            return
        with self._lock:
            if self.closed:
                return
            with _writing_stdout():
                render(self.stdout)
                sys.stdout.flush()  # a full disk says so here, not at exit

    def finish(self, code: int) -> None:
        """Print the --json result kept by `result`, with an `error` member when `code` is not
        0 and the command did not add one (the message is the last error line)."""
        payload, self._pending = self._pending, None
        if payload is None or self.json_printed:
            return
        if code and "error" not in payload:
            kind = KIND_BY_CODE.get(code, OwlvitError.kind)
            payload = {**payload, **error_object(code, kind, self._last_error or f"exit {code}")}
        with self._lock:
            if not self.closed:
                self.emit_json(payload)

    def emit_json(self, payload: dict[str, Any]) -> None:
        """The run's one JSON object (a later one is dropped); its code is the run's."""
        with self._lock:
            self._emit_json(payload)

    def _emit_json(self, payload: dict[str, Any]) -> None:
        from owlvit_cli.cli.process import json_sent

        with _writing_stdout():
            if self.json_printed:
                return
            self.json_printed = True
            print_json(payload)
            self._json_code = int(payload.get("error", {}).get("code", 0))
            json_sent(self._json_code)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._print_after_display(message)

    def warn(self, message: str) -> None:
        """A warning, once the display has stopped (push says what the card will state before
        its first request, so no display is running then)."""
        if not self.quiet:
            self._print_after_display(f"[yellow]warning:[/yellow] {message}")

    def error(self, message: str) -> None:
        """One error line, after the display has stopped (so never above a live step line)."""
        self.end_display()
        with self._lock:
            if self.closed:
                return
            self._last_error = message
            self.stderr.print(f"[bold red]error:[/bold red] {_escape(message)}", soft_wrap=True)

    def _print_after_display(self, markup: str) -> None:
        with self._lock:
            if self.closed:
                return
            if self._display is not None:
                self._held.append(markup)
            else:
                self.stderr.print(markup, soft_wrap=True)

    def end_display(self) -> None:
        """Stop the live display (its last frame stays on screen), then print what waited."""
        with self._lock:
            if self._log is not None:
                self._log.stop()
            if self._display is not None:
                self._display.stop()
                self._display = None
            held, self._held = self._held, []
            for markup in held:
                self.stderr.print(markup, soft_wrap=True)

    def step(
        self, name: str, total: float | None = None, unit: str = ""
    ) -> contextlib.AbstractContextManager[Step]:
        """A line of the command's one live display (the `Progress` protocol); log lines when
        stderr is not a terminal; nothing with --quiet, or once a signal ended the run."""
        with self._lock:
            if self.quiet or self.closed:
                return NO_PROGRESS.step(name, total, unit)
            if not self.stderr.is_terminal:
                if self._log is None:
                    self._log = StepLog(self._log_line)
                return self._log.step(name, total, unit)
            if self._display is None:
                self._display = StepDisplay(self.stderr)
            return self._display.step(name, total, unit)

    def _log_line(self, line: str) -> None:
        """One plain line, whole, at once: a CI log shows it as it happens. Written to the
        stream itself (the timer's thread must not share the trimming wrapper's state)."""
        if self.closed:  # a signal ended the run: its report is the last line
            return
        stream = getattr(self.stderr.file, "stream", self.stderr.file)
        try:
            stream.write(line + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):  # stderr closed: the log has no reader left
            pass

    def interrupted(self, code: int, message: str) -> int:
        """Report a signal from the console script's main thread, whatever the command's
        thread is doing: running steps end as failed, the error line and with --json the error
        object are printed (unless a JSON object already is: its code stands), and nothing
        more is printed for the command. Returns the exit code."""
        acquired = self._lock.acquire(timeout=REPORT_WAIT_SECONDS)
        try:
            if self._json_code is not None:
                return self._json_code
            self.closed = True
            if self._log is not None:
                self._log.stop()
            if self._display is not None:
                self._display.fail_running()
            self._display, self._held = None, []
            self.stderr.print(f"[bold red]error:[/bold red] {_escape(message)}", soft_wrap=True)
            if self.json_mode:  # not after half a result (stdout took no more of it)
                self._emit_json(self._with_error(code, INTERRUPTED_KIND, message))
            return code
        finally:
            if acquired:
                self._lock.release()

    def _with_error(self, code: int, kind: str, message: str) -> dict[str, Any]:
        """The error object, added to the result when the command already had one."""
        return {**(self._pending or {}), **error_object(code, kind, message)}


@contextlib.contextmanager
def _writing_stdout() -> Iterator[None]:
    """A closed pipe sends the rest of the output nowhere; a stdout that refuses bytes (a full
    disk, /dev/full) is an output error (and takes no more: nothing is left to fail at exit)."""
    from owlvit_cli.cli.process import stdout_closed

    try:
        yield
    except BrokenPipeError:
        stdout_closed()
    except OSError as exc:
        stdout_closed()
        raise OutputError(_stdout_refused(exc)) from None


def _stdout_refused(exc: OSError) -> str:
    return f"cannot write to stdout ({exc.strerror or exc})"


def stdout_failure(exc: OSError) -> NoReturn:
    """stdout refused what click wrote itself (help, version): one line, exit 2."""
    from owlvit_cli.cli.process import stdout_closed

    stdout_closed()
    print(f"error: {_stdout_refused(exc)}", file=sys.stderr)
    raise SystemExit(ExitCode.BAD_INPUT)


def print_json(payload: dict[str, Any]) -> None:
    """Strict JSON (non-finite numbers as strings), so any parser reads it."""
    sys.stdout.write(strict_json_dumps(payload, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def fail(out: Output, message: str, code: int, kind: str) -> NoReturn:
    """Print one error line on stderr (and, with --json, the error object on stdout, with the
    result if the command had one, unless a JSON object is already there), then exit with
    `code`. `message` is plain text, not markup."""
    out.error(message)
    if out.json_mode:
        with contextlib.suppress(OutputError):  # stdout itself failed: the line says why
            out.emit_json(out._with_error(code, kind, message))
    raise SystemExit(code)


def run_guarded(out: Output, action: Callable[[], int | None]) -> NoReturn:
    """Run a command body; map every failure to one line and its documented exit code."""
    from owlvit_cli.cli.process import report_signals_with
    from owlvit_cli.hold import hold_point

    report_signals_with(out.interrupted)
    hold_point("command-start")
    try:
        code = action() or ExitCode.OK
        out.finish(code)
    except OwlvitError as exc:
        if out.debug:
            out.end_display()
            traceback.print_exc()
        message = f"{exc}; {exc.hint}" if exc.hint else str(exc)
        fail(out, message, int(exc.exit_code), exc.kind)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (see process.py)
        from owlvit_cli.cli.process import interrupt_exit_code, interrupt_message

        fail(out, interrupt_message(exc), interrupt_exit_code(exc), INTERRUPTED_KIND)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:  # a path no filesystem accepts: the user's to fix
            _internal_error(out, exc)
        if out.debug:
            out.end_display()
            traceback.print_exc()
        name = os.fsdecode(exc.filename or "")
        name = name if len(name) <= 60 else f"{name[:24]}…{name[-24:]}"
        message = f"{name}: file name too long for the filesystem"
        fail(out, message, ExitCode.BAD_INPUT, OwlvitError.kind)
    except Exception as exc:
        _internal_error(out, exc)
    finally:  # also for an exit raised inside the command (its display is not left running)
        out.end_display()
    raise SystemExit(int(code))


def _internal_error(out: Output, exc: Exception) -> NoReturn:
    if out.debug:
        out.end_display()
        traceback.print_exc()
    detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
    message = f"internal error ({detail}); rerun with --debug for a traceback"
    fail(out, message, ExitCode.INTERNAL_ERROR, INTERNAL_KIND)


def _escape(text: str) -> str:
    """Keep file names like `[foo]` from being read as rich markup."""
    from rich.markup import escape

    return escape(text)


def usage_failure(exc: Any, json_mode: bool) -> NoReturn:
    """A command line click refused (a `click.ClickException`): click's own lines on stderr
    (usage, hint, error) and, with --json, the error object on stdout."""
    exc.show()
    if json_mode:
        with contextlib.suppress(OutputError):  # stdout itself failed: click's lines say why
            Output(json_mode=True).emit_json(
                error_object(exc.exit_code, USAGE_KIND, exc.format_message())
            )
    raise SystemExit(exc.exit_code)
