"""Loading the converted model in the background, so the work that needs no model overlaps it.

Before its one forward pass a detection spends seconds importing torch and transformers, then
reads the processor and the weights, and turns the image into pixels. The pixels need only
the processor (or scenic's numpy pipelines): so one thread imports, loads the processor, then
the weights, while the caller makes the pixels, and reads the weight files into the page
cache meanwhile (a cold file is then read during the imports, not after them).

The caller imports nothing heavy before `processor()` returns: transformers imports scipy,
as scenic's pipelines do, and two threads importing one package's modules at once can each
meet the other's half-imported module.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Detector:
    """A loaded model and its saved processor, so several images can share one load."""

    model_dir: Path
    model: Any
    processor: Any


class DetectorLoading:
    """The stock model and its saved processor of a checked directory, loading in a thread."""

    def __init__(self, hf_dir: Path, weights: Sequence[str] = ()) -> None:
        """`weights`: the directory's weight files, read ahead into the page cache."""
        self.hf_dir = hf_dir
        self._weights = [hf_dir / name for name in weights if name.endswith(".safetensors")]
        self._processor: Any = None
        self._model: Any = None
        self._error: BaseException | None = None
        self._processor_loaded = threading.Event()
        # A daemon: a process ending on an error elsewhere must not wait for an import.
        self._thread = threading.Thread(target=self._load, name="owlvit-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        from owlvit_cli.checkpoint.prefetch import start_prefetch
        from owlvit_cli.runtime.hf_model import load_hf_model, load_processor

        readers = [start_prefetch(path) for path in self._weights]
        try:
            self._processor = load_processor(self.hf_dir)
            self._processor_loaded.set()
            self._model = load_hf_model(self.hf_dir, checked=True)
        except BaseException as exc:  # handed to whoever waits for the result
            self._error = exc
        finally:
            self._processor_loaded.set()
            for reader in readers:
                if reader is not None:
                    reader.stop()

    def processor(self) -> Any:
        """The saved processor, once loaded (torch and transformers are imported by then)."""
        self._processor_loaded.wait()
        self._raise_error()
        return self._processor

    def detector(self) -> Detector:
        """The model and processor, once both are loaded."""
        self._thread.join()
        self._raise_error()
        return Detector(self.hf_dir, self._model, self._processor)

    def _raise_error(self) -> None:
        """The loading's own error (a `ModelDirError` naming the directory, say), as it was."""
        if self._error is not None:
            raise self._error
