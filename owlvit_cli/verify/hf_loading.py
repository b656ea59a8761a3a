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

from pathlib import Path
from typing import Any

from owlvit_cli.runtime.background import BackgroundLoads


def hf_loading(hf_dir: Path, stored_dtype: str) -> BackgroundLoads:
    """The float32 model for the mapping check (`model`), the model as users load it
    (`stock`: transformers' default dtype is the stored one) and the saved processor
    (`processor`, whose errors count only for a caller that asks for it); not yet started."""
    from owlvit_cli.runtime.hf_model import load_hf_model, load_processor

    def stock(loaded: dict[str, Any]) -> Any:
        if stored_dtype == "float32":
            return loaded["model"]
        return load_hf_model(hf_dir, dtype=None, checked=True)

    return BackgroundLoads(
        [
            ("model", lambda _: load_hf_model(hf_dir, checked=True)),
            ("stock", stock),
            ("processor", lambda _: load_processor(hf_dir)),
        ]
    )
