"""A test hook that holds a run at a named point, so that tests which interrupt or race real
work are deterministic instead of hoping the work is slow enough to be caught. It lives on the
ground floor because production code calls it; nothing here imports from `testing/`.

Set `OWLVIT_TEST_HOLD=POINT:FILE` in the environment of an owlvit process. When the process
reaches `hold_point(POINT)` it creates FILE (holding its pid) and waits until FILE is
removed; a test waits for FILE to appear, then signals the process or lets it go on by
deleting FILE. With `POINT@gc:FILE` the wait happens inside a garbage-collection callback,
where jax's own GC callback runs (how a Ctrl-C could once be swallowed). With
`POINT@native:FILE` the thread waits inside one native call that no Python signal handler can
cut short (`pthread_join` on a thread that waits for FILE), as it does inside a forward pass
or an image resize. Without the variable the hook costs one dictionary lookup. Not an
interface for users.

Points: `startup` (the console script's handlers are installed, the command line not yet
parsed), `command-start` (the command's output exists, its work not started), `step-running`
(a step's line is on the live display, which only a terminal has), `convert-read` (every
tensor read and written, the checkpoint not yet checked for changes), `checkpoint-hashing` (a
thread is about to read a checkpoint only to hash it, as a conversion of a msgpack file never
does), `convert-before-rename` (the temporary output directory is complete, not yet renamed
into place), `verify-paired` (HF_DIR's source checked, no model loaded yet), `verify-hf-forward`
(inside the step that runs the transformers model, before it runs), `verify-compared` (both
models ran, nothing written yet), `push-before-reading` (the repo exists, no file of the
model directory opened yet) and `finished` (the command is over and its output flushed, the
process not yet ended).
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
    elif point == f"{name}@native":
        _wait_inside_native_call(Path(path))


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


def _wait_inside_native_call(path: Path) -> None:
    """`pthread_join` returns only when the joined thread ends, whatever signal comes: while
    it waits, the calling thread runs no Python code (as in a long numpy, PIL or XLA call)."""
    import ctypes

    libc = ctypes.CDLL(None)
    start = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(lambda _: _wait(path))
    thread = ctypes.c_ulong()
    if libc.pthread_create(ctypes.byref(thread), None, start, None) != 0:
        raise OSError("pthread_create failed")
    libc.pthread_join(thread, None)
