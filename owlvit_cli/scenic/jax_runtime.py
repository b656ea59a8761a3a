"""Settings for jax's CPU backend, applied before it starts.

jaxlib 0.10's CPU backend hands parts of a program to YNNPACK and compiles those lazily, on
the program's first execution: ~0.5 s of compilation lands inside the first forward pass,
which is the only one `verify` runs (measured on B/32 at 768 px: 1.43 s first call, 0.90 s
after). Turning those fusions off leaves plain XLA fusions, compiled ahead of time with the
rest and as fast here (0.76–0.89 s steady, 0.88 s first call), and outputs still match
scenic's references to the same tolerances.

XLA aborts the process on a flag it does not know, so the flag is set only for the jaxlib
versions known to have it. A user's own XLA_FLAGS setting of it wins.
"""

from __future__ import annotations

import os
from importlib import metadata

LAZY_FUSIONS_OFF = "--xla_cpu_experimental_ynn_fusion_type="
JAXLIB_WITH_LAZY_FUSIONS = ((0, 10),)  # (major, minor) versions checked to have the flag


def jaxlib_version() -> tuple[int, int] | None:
    try:
        major, minor = metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def cpu_flags(existing: str, version: tuple[int, int] | None) -> str:
    """XLA_FLAGS with the lazy fusions turned off where that is safe and not already set."""
    name = LAZY_FUSIONS_OFF.split("=")[0]
    if version not in JAXLIB_WITH_LAZY_FUSIONS or name in existing:
        return existing
    return f"{existing} {LAZY_FUSIONS_OFF}".strip()


def configure_cpu_backend() -> None:
    """Call before the first jax computation (the backend reads XLA_FLAGS when it starts)."""
    flags = cpu_flags(os.environ.get("XLA_FLAGS", ""), jaxlib_version())
    if flags:
        os.environ["XLA_FLAGS"] = flags
