"""verify's libraries, imported while the caller still has other work to do.

A verify spends seconds importing jax and flax (the reference model) and torch (the
converted one) before it can load either model. `convert --verify` knows from the start that
a verify follows, and a conversion leaves a core idle (it waits on reads, writes and the
hash); importing in a second thread meanwhile takes those seconds off the verify.

Only plain imports happen there, which Python's import locks keep whole (a module another
thread is importing is waited for, never imported twice). Names that a library resolves on
first use (transformers' lazy attributes) are left to the verify: two threads resolving one
at once can fail. The thread is joined before the verify starts, so the two never overlap.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator

# The Flax model's module (jax, flax, and the jax settings made before the backend starts),
# and torch, which `runtime.hf_model` loads a directory with.
MODULES = ("owlvit_cli.scenic.flax_model", "torch")


@contextlib.contextmanager
def importing_in_background(enabled: bool = True) -> Iterator[None]:
    """Import verify's libraries in a second thread while the block runs; wait for them
    after it, unless it failed (its error is not held up by imports nobody needs)."""
    if not enabled:
        yield
        return
    thread = threading.Thread(target=_import_all, name="owlvit-verify-imports", daemon=True)
    thread.start()
    yield
    thread.join()


def _import_all() -> None:
    for name in MODULES:
        with contextlib.suppress(Exception):  # a failure repeats in the verify, which reports it
            importlib.import_module(name)
