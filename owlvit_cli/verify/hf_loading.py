"""Load the transformers side of verify in a thread, while the Flax side reads, compiles and runs.

Why: importing torch and transformers and building the model from its safetensors (3–8 s on
2 cores) is mostly one thread's work, and so is XLA's compilation; run one after the other
they add up, run together they share the machine. transformers maps the weights from the file
and leaves them in the page cache until the forward pass touches them, so the overlap costs
little resident memory while the Flax model holds its own weights.

HF_DIR's architecture is checked with the pairing, before this starts: a mismatch is bad
input, reported before seconds of Flax work rather than after them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any


class HfLoading:
    """The transformers model (float32 compute, and as users load it) and the saved processor,
    loading in a daemon thread: a run ended by a signal or an error does not wait for it."""

    def __init__(self, hf_dir: Path, stored_dtype: str) -> None:
        self._hf_dir = hf_dir
        self._stored_dtype = stored_dtype
        self._results: dict[str, Any] = {}
        self._errors: dict[str, BaseException] = {}
        self._done = threading.Event()
        self.seconds = 0.0  # the thread's own time, from start to the last object loaded
        self.cpu_seconds = 0.0  # its CPU time: the loading's work, whatever else ran beside it
        self._thread = threading.Thread(target=self._load, name="owlvit-hf-loading", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        from owlvit_cli.runtime.hf_model import load_hf_model, load_processor

        started, cpu = time.perf_counter(), time.thread_time()
        try:
            self._keep("model", lambda: load_hf_model(self._hf_dir, checked=True))
            if "model" in self._results:
                # As users load it: transformers' default dtype is the stored one.
                same = self._stored_dtype == "float32"
                self._keep(
                    "stock",
                    lambda: (
                        self._results["model"]
                        if same
                        else load_hf_model(self._hf_dir, dtype=None, checked=True)
                    ),
                )
            self._keep("processor", lambda: load_processor(self._hf_dir))
        finally:
            self.seconds = round(time.perf_counter() - started, 3)
            self.cpu_seconds = round(time.thread_time() - cpu, 3)
            self._done.set()

    def _keep(self, name: str, load: Any) -> None:
        try:
            self._results[name] = load()
        except BaseException as exc:  # re-raised in the caller's thread when it asks
            self._errors[name] = exc

    def _get(self, name: str) -> Any:
        self._done.wait()
        if name in self._errors:
            raise self._errors[name]
        return self._results[name]

    def models(self) -> tuple[Any, Any]:
        """(float32 model for the mapping check, the model as users load it); waits."""
        return self._get("model"), self._get("stock")

    def processor(self) -> Any:
        """The saved processor; waits. Its errors count only for a caller that needs it."""
        return self._get("processor")
