"""Loads that run in one background thread while the caller does other work.

verify loads the transformers model while the Flax side runs; detect loads it while the
image's pixels are made. Both need the same things of the thread: named steps run in order,
each result (or its error) handed to whoever asks for it as soon as that step is done, the
error raised in the asking thread as it was, and a daemon thread, so that a run ended by a
signal or an error elsewhere never waits for an import.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

Step = tuple[str, Callable[[dict[str, Any]], Any]]  # a name, and a load given earlier results


class BackgroundLoads:
    """Run `steps` in order in a daemon thread. After a step fails, the later ones are not
    run and asking for any of them raises that failure. `finish` runs last, whatever
    happened."""

    def __init__(self, steps: Sequence[Step], finish: Callable[[], None] | None = None) -> None:
        self._steps = list(steps)
        self._finish = finish
        self._results: dict[str, Any] = {}
        self._errors: dict[str, BaseException] = {}
        self._ready = {name: threading.Event() for name, _ in self._steps}
        self.seconds = 0.0  # the thread's own time, from start to its last step
        self.cpu_seconds = 0.0  # its CPU time: the loading's work, whatever else ran beside it
        self._thread = threading.Thread(target=self._run, name="owlvit-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        failure: BaseException | None = None
        try:
            for name, load in self._steps:
                try:
                    if failure is None:
                        self._results[name] = load(self._results)
                except BaseException as exc:  # re-raised in the thread that asks for it
                    failure = exc
                if failure is not None:
                    self._errors[name] = failure
                self._ready[name].set()
        finally:
            if self._finish is not None:
                self._finish()
            self.seconds = round(time.perf_counter() - started, 3)
            self.cpu_seconds = round(time.thread_time() - cpu, 3)
            for ready in self._ready.values():  # an error in `finish` must not leave a waiter
                ready.set()

    def get(self, name: str) -> Any:
        """Step `name`'s result, once it is done; its error (or an earlier step's) raised."""
        self._ready[name].wait()
        if name in self._errors:
            raise self._errors[name]
        return self._results[name]

    def join(self) -> None:
        """Wait for the whole thread, `finish` included (its timings are final then)."""
        self._thread.join()
