"""Settings for jax's CPU backend, applied before it starts.

jaxlib 0.10's CPU backend hands parts of a program to YNNPACK by default. Those fusions are
turned off, for two reasons:

* They change the Flax model's outputs. YNNPACK sums in another order than XLA's own
  kernels, so outputs move by float32 rounding, 24 layers deep: measured on full-size random
  v2 models, up to 1.6e-6 relative (B/16 at 960 px) and 1.8e-6 (L/14 at 1008 px, objectness)
  with the default fusions, 0.9e-6 and 1.8e-6 with the reductions alone. The Flax model is the
  reference verify holds a conversion to, so its outputs stay those of XLA's own kernels.
* They compile lazily, inside the first execution (0.5 s of a B/32's first forward).

They are faster on the attention (its softmax reductions): the Flax forward of a v2 B/16 at
960 px took 8.0 s without them and about 6.5 s with them on 2 cores. A user who prefers that
sets the flag in XLA_FLAGS (docs/env.md); a user's own setting of it wins.

XLA aborts the process on a flag it does not know, so the flag is set only for the jaxlib
versions known to have it.
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
