"""How a console-script process ends.

Tearing jax and torch down at interpreter exit takes about a second after a verify (thread
pools, the XLA client, compiled programs and gigabytes of weights freed one object at a time)
and achieves nothing the OS does not do for free when the process ends. So once a heavy
runtime is loaded, the console script flushes what the user should see and ends the process
directly; objects handed to `hold_until_exit` are never freed one by one. Every output file is
complete by then: commands write them atomically before returning.

In-process callers (tests through typer's CliRunner, the library API) never take this path:
only `cli.main` switches it on.

Signals. SIGINT, SIGTERM and SIGHUP (Ctrl-C, CI cancellation and `docker stop`, a closed
terminal) all raise `Interrupted`, a KeyboardInterrupt, in the main thread, so every cleanup
that Ctrl-C runs (temporary outputs removed, threads stopped) runs for all three, and the
process exits 128 + the signal's number. Python delivers a signal's exception into whatever
code the main thread runs, which may be a garbage-collection callback (jax registers one) or a
`__del__`, where the exception is printed and dropped; such a swallowed interrupt is raised
again in the main thread (`_thread.interrupt_main`), and a run that still ends normally after
a signal exits with the signal's code anyway.

A closed stdout (`owlvit inspect CKPT | head -1`) is not a failure: the rest of the output
goes to /dev/null and the command ends with the code it would have had.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from owlvit_cli.interrupts import Interrupted
from owlvit_cli.interrupts import SignalState as _SignalState

HEAVY_RUNTIMES = ("jax", "torch")
_held: list[object] = []
_ends_after_command = False
_skip_teardown = False
TERMINATING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RETRY_SECONDS = 0.02
FORCE_QUIT_SIGNALS = 3  # the third signal ends the process at once, cleanups or not


def install_signal_handlers() -> None:
    """Called by the console script: every terminating signal ends the run like Ctrl-C."""
    for signum in TERMINATING_SIGNALS:
        with contextlib.suppress(OSError, ValueError):  # not the main thread, or not settable
            signal.signal(signum, _on_signal)
    previous = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt) and _SignalState.received is not None:
            _SignalState.in_hook = True
            try:
                _SignalState.swallowed = True
                _start_retrying()
            finally:
                _SignalState.in_hook = False
            return
        previous(info)

    sys.unraisablehook = unraisable


def _on_signal(signum: int, frame: object) -> None:
    if not _SignalState.swallowed:  # a signal sent, not a swallowed one delivered again
        _SignalState.count += 1
        if _SignalState.count >= FORCE_QUIT_SIGNALS:  # a hanging cleanup must not trap the user
            os._exit(128 + (_SignalState.received or signum))
    if _SignalState.in_hook or (_SignalState.received is not None and not _SignalState.swallowed):
        return  # already on its way out (let the cleanups finish), or not a place to raise
    _SignalState.received = _SignalState.received or signum
    _SignalState.swallowed = False
    raise Interrupted(_SignalState.received)


def _start_retrying() -> None:
    """Deliver a swallowed interrupt again, from outside the code that swallowed it, until it
    lands where it propagates (interrupt_main runs the handler at the main thread's next
    bytecode, which may again be a GC callback: hence a loop, not one try)."""
    if _SignalState.retrying:
        return
    _SignalState.retrying = True

    def retry() -> None:
        while not _SignalState.delivered:
            if _SignalState.swallowed:
                _thread.interrupt_main(_SignalState.received or signal.SIGINT)
            time.sleep(RETRY_SECONDS)

    threading.Thread(target=retry, name="owlvit-interrupt", daemon=True).start()


def received_signal() -> int | None:
    return _SignalState.received


def interrupt_exit_code(exc: BaseException | None = None) -> int:
    """128 + the signal's number (130 for Ctrl-C), as shells report a killed process."""
    _SignalState.delivered = True
    signum = getattr(exc, "signum", None) or _SignalState.received or signal.SIGINT
    return 128 + int(signum)


def interrupt_message(exc: BaseException | None = None) -> str:
    signum = getattr(exc, "signum", None) or _SignalState.received or signal.SIGINT
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


def should_exit_now() -> bool:
    heavy = any(name in sys.modules for name in HEAVY_RUNTIMES)
    return _ends_after_command and (_skip_teardown or heavy)


def exit_now(code: object) -> None:
    """Flush what the user should see, then end the process without interpreter teardown."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what SystemExit("message") would have printed
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: no reader is left
            stream.flush()
    os._exit(code or 0)
