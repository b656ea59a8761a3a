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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owlvit_cli.runtime.background import BackgroundLoads


@dataclass
class Detector:
    """A loaded model and its saved processor, so several images can share one load."""

    model_dir: Path
    model: Any
    processor: Any


class DetectorLoading:
    """The stock model and its saved processor of a checked directory, loading in a thread
    (processor first, then the weights); a failed step is raised to whoever asks for either."""

    def __init__(self, hf_dir: Path, weights: Sequence[str] = ()) -> None:
        """`weights`: the directory's weight files, read ahead into the page cache."""
        from owlvit_cli.checkpoint.prefetch import start_prefetch
        from owlvit_cli.runtime.hf_model import load_hf_model, load_processor

        self.hf_dir = hf_dir
        paths = [hf_dir / name for name in weights if name.endswith(".safetensors")]
        readers: list[Any] = []

        def read_ahead(_: dict[str, Any]) -> None:
            readers.extend(start_prefetch(path) for path in paths)

        def stop_reading() -> None:
            for reader in readers:
                if reader is not None:
                    reader.stop()

        self._loads = BackgroundLoads(
            [
                ("read_ahead", read_ahead),
                ("processor", lambda _: load_processor(hf_dir)),
                ("model", lambda _: load_hf_model(hf_dir, checked=True)),
            ],
            finish=stop_reading,
        )
        self._loads.start()

    def processor(self) -> Any:
        """The saved processor, once loaded (torch and transformers are imported by then)."""
        return self._loads.get("processor")

    def detector(self) -> Detector:
        """The model and processor, once both are loaded."""
        model = self._loads.get("model")
        self._loads.join()  # the read-ahead stopped
        return Detector(self.hf_dir, model, self._loads.get("processor"))
