"""Where a terminating signal's state lives, so that the core can check it at safe points.

The console script's handlers (`owlvit_cli.cli.process`) raise `Interrupted` at once. Python
drops that exception when it lands inside a garbage-collection callback or a `__del__`; the
handlers then mark it `swallowed`, and `raise_if_interrupted`, called by the core before
anything becomes visible (an output renamed into place, a file written), raises it again, so
no output appears after a Ctrl-C whatever code was running when it came.
"""

from __future__ import annotations

import signal


class Interrupted(KeyboardInterrupt):
    """A terminating signal, raised like Ctrl-C so that the same cleanups run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalState:
    received: int | None = None  # the first terminating signal, if any
    swallowed = False  # its exception was dropped where Python cannot raise
    delivered = False  # it reached the command's error handling
    in_hook = False
    retrying = False
    count = 0  # real signals received


def raise_if_interrupted() -> None:
    """A safe point: raise a signal's exception that was swallowed on its first delivery."""
    if SignalState.received is not None and SignalState.swallowed:
        SignalState.swallowed = False
        raise Interrupted(SignalState.received)
