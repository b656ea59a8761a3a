"""A test hook that holds a run at a named point, so that tests which interrupt or race real
work are deterministic instead of hoping the work is slow enough to be caught. It lives on the
ground floor because production code calls it; nothing here imports from `testing/`.

Set `OWLVIT_TEST_HOLD=POINT:FILE` in the environment of an owlvit process. When the process
reaches `hold_point(POINT)` it creates FILE (holding its pid) and waits until FILE is
removed; a test waits for FILE to appear, then signals the process or lets it go on by
deleting FILE. With `POINT@gc:FILE` the wait happens inside a garbage-collection callback,
where jax's own GC callback runs (how a Ctrl-C could once be swallowed). Without the variable
the hook costs one dictionary lookup. Not an interface for users.

Points: `convert-before-rename` (the temporary output directory is complete, not yet renamed
into place) and `verify-compared` (both models ran, nothing written yet).
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

ENV = "OWLVIT_TEST_HOLD"
POLL_SECONDS = 0.01


def hold_point(name: str) -> None:
    """Wait here while the test that named this point holds the run (see module doc)."""
    setting = os.environ.get(ENV)
    if not setting or ":" not in setting:
        return
    point, _, path = setting.partition(":")
    if point == name:
        _wait(Path(path))
    elif point == f"{name}@gc":
        _wait_inside_gc_callback(Path(path))


def _wait(path: Path) -> None:
    path.write_text(str(os.getpid()))
    while path.exists():
        time.sleep(POLL_SECONDS)


def _wait_inside_gc_callback(path: Path) -> None:
    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            gc.callbacks.remove(callback)
            _wait(path)

    gc.callbacks.append(callback)
    gc.collect()
