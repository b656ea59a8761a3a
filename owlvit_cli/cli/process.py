"""How a console-script process ends.

Tearing jax and torch down at interpreter exit takes about a second after a verify (thread
pools, the XLA client, compiled programs and gigabytes of weights freed one object at a time)
and achieves nothing the OS does not do for free when the process ends. So once a heavy
runtime is loaded, the console script flushes what the user should see and ends the process
directly; objects handed to `hold_until_exit` are never freed one by one. Every output file is
complete by then: commands write them atomically before returning.

In-process callers (tests through typer's CliRunner, the library API) never take this path:
only `cli.main` switches it on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

HEAVY_RUNTIMES = ("jax", "torch")
_held: list[object] = []
_ends_after_command = False


def end_after_command() -> None:
    """Called by the console script before it runs the command."""
    global _ends_after_command
    _ends_after_command = True


def hold_until_exit(value: object) -> None:
    """Keep `value` alive to the end of a console-script process that will not free it;
    anywhere else, do nothing (it is freed as usual)."""
    if _ends_after_command:
        _held.append(value)


def should_exit_now() -> bool:
    return _ends_after_command and any(name in sys.modules for name in HEAVY_RUNTIMES)


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
