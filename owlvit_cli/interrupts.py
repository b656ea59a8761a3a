"""Where a terminating signal's state lives, so that the core can stop at safe points.

The console script (`owlvit_cli.cli.process`) runs a command in a worker thread while its
main thread waits; a signal's handler records the signal there and the main thread ends the
process at once (temporary outputs removed, see `owlvit_cli.atomic`), without waiting for a
native call the worker may be in. The worker, meanwhile, must make nothing more visible:
`raise_if_interrupted`, called by the core before an output is renamed into place or a file
written, stops it there. In-process callers (the library API, typer's test runner) install no
handler, so for them this state never changes.
"""

from __future__ import annotations

import signal
import threading


class Interrupted(KeyboardInterrupt):
    """A terminating signal, raised like Ctrl-C so that the same cleanups run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalState:
    received: int | None = None  # the first terminating signal, if any
    count = 0  # signals received


def raise_if_interrupted() -> None:
    """A safe point: after a terminating signal nothing more becomes visible. The main thread
    raises the signal's `Interrupted`; any other thread waits here for the main thread to
    end the process (raising would only race its cleanups with the worker's own)."""
    if SignalState.received is None:
        return
    if threading.current_thread() is threading.main_thread():
        raise Interrupted(SignalState.received)
    wait_for_the_end()


def wait_for_the_end() -> None:
    """Park the calling (non-main) thread for good: the process is being ended."""
    threading.Event().wait()
