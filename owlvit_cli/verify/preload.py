"""verify's libraries, imported while the caller still has other work to do.

A verify spends seconds importing jax and flax (the reference model) and torch and
transformers (the converted one) before it can load either model. `convert --verify` knows
from the start that a verify follows, and a conversion leaves a core idle (it waits on reads,
writes and the hash); importing in a second thread meanwhile takes those seconds off the
verify. Python's import locks make the verify's own imports wait for a module the thread is
still importing, never import it twice.
"""

from __future__ import annotations

import contextlib
import importlib
import threading

# What the verify imports before loading anything: the Flax model's module (jax, flax, and
# the jax settings made before the backend starts) and what `runtime.hf_model` loads a
# directory with.
MODULES = ("owlvit_cli.scenic.flax_model", "torch", "transformers")
NAMES = {"transformers": ("AutoModelForZeroShotObjectDetection", "AutoProcessor")}


def import_in_background() -> threading.Thread:
    """Start importing verify's libraries in a daemon thread; the caller goes on at once."""
    thread = threading.Thread(target=_import_all, name="owlvit-verify-imports", daemon=True)
    thread.start()
    return thread


def _import_all() -> None:
    for name in MODULES:
        # A failure here repeats in the verify's own import, which reports it.
        with contextlib.suppress(Exception):
            module = importlib.import_module(name)
            for attribute in NAMES.get(name, ()):  # transformers' lazy names import on use
                getattr(module, attribute)
