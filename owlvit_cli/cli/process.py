"""How a console-script process ends.

Tearing jax and torch down at interpreter exit takes about a second after a verify (thread
pools, the XLA client, compiled programs and gigabytes of weights freed one object at a time)
and achieves nothing the OS does not do for free when the process ends. So the console script
flushes what the user should see and ends the process directly; objects handed to
`hold_until_exit` are never freed one by one. Every output file is complete by then: commands
write them atomically before returning. A run that loaded no heavy runtime still runs its
`atexit` functions first (the heavy runtimes' own are the slow part, so theirs are skipped).

In-process callers (tests through typer's CliRunner, the library API) never take this path:
only `cli.main` switches it on.

Signals. The console script installs its handlers first, then runs everything else (imports,
the command line, the command) in a worker thread while the main thread only waits. SIGINT,
SIGTERM and SIGHUP (Ctrl-C, CI cancellation and `docker stop`, a closed terminal) are
recorded by the handler, and the main thread, within `WAIT_SECONDS`, ends the run itself,
wherever the worker is (a forward pass, a resize, a read): temporary outputs are removed
(`atomic.remove_temporaries`), the error line and under --json the error object are printed,
and the process exits 128 + the signal's number. CI sends SIGKILL some seconds after SIGTERM;
a run that waited for a native call to return would leave its temporary directory behind.
A signal that the caller set to be ignored (`nohup`, `trap '' HUP`) stays ignored. The third
signal ends the process at once, however far the ending got.

A closed stdout (`owlvit inspect CKPT | head -1`) is not a failure: the rest of the output
goes to /dev/null and the command ends with the code it would have had.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from owlvit_cli.errors import INTERRUPTED_KIND
from owlvit_cli.interrupts import SignalState

HEAVY_RUNTIMES = ("jax", "torch")
_held: list[object] = []
_ends_after_command = False
_skip_teardown = False
TERMINATING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WAIT_SECONDS = 0.05  # how often the main thread looks for a signal while the command runs
REPORT_SECONDS = 2.0  # the most an ending waits for a stream that takes no more lines
FORCE_QUIT_SIGNALS = 3  # the third signal ends the process at once, cleanups or not


class _Ending:
    """How the run reports a signal: the command's own output once it has one (`report`
    returns the exit code), and whether a JSON object is already on stdout (and its code)."""

    report: Callable[[int, str], int] | None = None
    json_code: int | None = None
    final_code: int | None = None  # the command is over, its output flushed


def install_signal_handlers() -> None:
    """Called first by the console script: every terminating signal ends the run like Ctrl-C,
    except one the caller chose to ignore (`nohup`, `trap '' HUP`)."""
    for signum in TERMINATING_SIGNALS:
        with contextlib.suppress(OSError, ValueError):  # not the main thread, or not settable
            if signal.getsignal(signum) != signal.SIG_IGN:
                signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: object) -> None:
    """Only record it: the main thread's wait loop acts on it (see `run_command`). Once the
    command is over, its code stands: the signal only cuts the interpreter's teardown short
    (whose default handlers would otherwise report 128+N after a JSON object saying 0)."""
    if _Ending.final_code is not None:
        os._exit(_Ending.final_code)
    SignalState.count += 1
    SignalState.received = SignalState.received or signum
    if SignalState.count >= FORCE_QUIT_SIGNALS:  # a hanging cleanup must not trap the user
        os._exit(128 + SignalState.received)


def run_command(command: Callable[[], object]) -> object:
    """Run `command` in a worker thread and return its exit code (what its SystemExit
    carried); end the process from the main thread as soon as a signal comes."""
    outcome: list[BaseException | None] = []

    def work() -> None:
        # The signals go to the main thread, never into a system call of this thread or of
        # the threads it starts (a native library may not retry one that a signal cut short).
        signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING_SIGNALS)
        try:
            command()
            outcome.append(None)
        except BaseException as exc:  # handed to the main thread as it is
            outcome.append(exc)

    worker = threading.Thread(target=work, name="owlvit-command", daemon=True)
    worker.start()
    while worker.is_alive() and SignalState.received is None:
        worker.join(WAIT_SECONDS)
    if SignalState.received is not None:
        end_by_signal()
    error = outcome[0] if outcome else None
    if error is not None and not isinstance(error, SystemExit):
        raise error
    code = error.code if isinstance(error, SystemExit) else 0
    if isinstance(code, int | None):
        _flush_output()
        _Ending.final_code = code or 0
    return code


def end_by_signal() -> NoReturn:
    """Undo the temporary outputs, report the signal, end the process: the main thread's way
    out, not waiting for the worker (which may be in a native call for minutes)."""
    from owlvit_cli.atomic import remove_temporaries

    signum = SignalState.received or signal.SIGINT
    remove_temporaries()
    code = 128 + int(signum)
    message = interrupt_message()
    reported: list[int] = []

    def report() -> None:  # a stream nobody reads must not keep the process alive
        reported.append((_Ending.report or _report_without_output)(code, message))
        _flush_streams()

    reporter = threading.Thread(target=report, name="owlvit-report", daemon=True)
    reporter.start()
    reporter.join(REPORT_SECONDS)
    os._exit(reported[0] if reported else code)


def _report_without_output(code: int, message: str) -> int:
    """Before the command has its output (imports, the command line): the same line, and the
    error object when --json was asked for. A JSON object already printed stands: its code is
    the exit code."""
    if _Ending.json_code is not None:
        return _Ending.json_code
    print(f"error: {message}", file=sys.stderr)
    if wants_json(sys.argv[1:]):
        from owlvit_cli.errors import error_object
        from owlvit_cli.json_text import strict_json_dumps

        print(strict_json_dumps(error_object(code, INTERRUPTED_KIND, message), indent=2))
    return code


def report_signals_with(report: Callable[[int, str], int]) -> None:
    """The command's output reports a signal from now on: `report(code, message)` prints the
    error line (and object) and returns the exit code (a JSON object already printed keeps
    its own)."""
    _Ending.report = report


def json_sent(code: int) -> None:
    """A JSON object with this code is on stdout: a signal after it changes neither."""
    _Ending.json_code = code


def wants_json(args: list[str]) -> bool:
    """--json or --format json anywhere before a `--`, even on a command line click refused
    to parse."""
    options = [a.lower() for a in (args[: args.index("--")] if "--" in args else args)]
    spelled = [f"{a} {b}" for a, b in itertools.pairwise(options)]
    return "--json" in options or "--format=json" in options or "--format json" in spelled


def _flush_streams() -> None:
    if "logging" in sys.modules:  # not imported up front: the handlers come first at start-up
        sys.modules["logging"].shutdown()
    _flush_output()


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: no reader is left
            stream.flush()


def interrupt_exit_code(exc: BaseException | None = None) -> int:
    """128 + the signal's number (130 for Ctrl-C), as shells report a killed process."""
    signum = getattr(exc, "signum", None) or SignalState.received or signal.SIGINT
    return 128 + int(signum)


def interrupt_message(exc: BaseException | None = None) -> str:
    signum = getattr(exc, "signum", None) or SignalState.received or signal.SIGINT
    if signum == signal.SIGINT:
        return "interrupted"
    return f"interrupted ({signal.Signals(signum).name})"


def stdout_closed() -> None:
    """The reader of stdout went away: send the rest of the output nowhere, quietly."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def end_after_command() -> None:
    """Called by the console script before it runs the command."""
    global _ends_after_command
    _ends_after_command = True


def hold_until_exit(value: object) -> None:
    """Keep `value` alive to the end of a console-script process that will not free it;
    anywhere else, do nothing (it is freed as usual)."""
    if _ends_after_command:
        _held.append(value)


def skip_teardown() -> None:
    """End this console-script process like one that loaded a heavy runtime. convert asks
    for it: the tokenizer's 10^5 objects made the collector's final pass 0.14 s of its run."""
    global _skip_teardown
    _skip_teardown = True


def run_exit_functions() -> None:
    """What a normal exit runs (`atexit`), with the signal handlers still in place: the
    interpreter's own teardown would put the default ones back first, so that a signal then
    killed a finished run (143 after a JSON object saying 0). The console script then ends
    with `exit_now`; the teardown it skips (a last collection, modules freed one by one)
    changes nothing outside the process."""
    import atexit

    atexit._run_exitfuncs()


def should_exit_now() -> bool:
    heavy = any(name in sys.modules for name in HEAVY_RUNTIMES)
    return _ends_after_command and (_skip_teardown or heavy)


def exit_now(code: object) -> None:
    """Flush what the user should see, then end the process without interpreter teardown."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what SystemExit("message") would have printed
        code = 1
    _flush_streams()
    os._exit(code or 0)
