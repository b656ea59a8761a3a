"""jax's persistent compilation cache, kept in owlvit's cache directory.

Compiling the Flax model is seconds of XLA work that a second verify of the same pair would
repeat exactly. jax keeps compiled programs on disk under a key it derives itself (jax 0.10,
`jax/_src/cache_key.py`): the program's StableHLO without debug locations, the jaxlib version,
the backend's platform and platform version, XLA_FLAGS and any `--xla` argument, the
serialized compile options (XLA's debug options among them), the devices' topology fingerprint
(for a CPU, XLA's serialized target machine: CPU model and features) and the compression used.
Whatever changes what XLA would build changes the key, so an entry cannot go stale; an entry
nothing asks for any more only takes space.

Nothing here may fail a command: a directory that cannot be made, is not the user's own, or
vanishes while in use only means compiling again. jax turns its own read and write errors
into warnings (a partly written entry fails zlib's check on reading, and the program is
compiled); owlvit silences those for the directory it chose, since they only cost time.

A setting the user made wins: jax's `JAX_COMPILATION_CACHE_DIR` (or `jax_compilation_cache_dir`
set by a caller) keeps jax's own directory and thresholds, and
`JAX_ENABLE_COMPILATION_CACHE=false` turns the cache off.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from owlvit_cli.cache import cache_root

SUBDIRECTORY = "jax-compilation"
# Every program, however quick to compile: reading one back is milliseconds, and verify's
# small programs (the class head alone, dtype casts) each cost 0.1-0.3 s to compile.
MIN_COMPILE_SECONDS = 0.0
NO_MIN_ENTRY_SIZE = -1  # jax's "no size threshold" (0 would let jax pick one)
CACHE_FAILURE = r"Error (reading|writing) persistent compilation cache entry"


def compilation_cache_dir() -> Path:
    return cache_root() / SUBDIRECTORY


def enable_compilation_cache() -> Path | None:
    """Point jax at owlvit's directory, before the first compilation; the directory used,
    or None where the user's own jax setting stands or the directory is unusable."""
    import jax

    if jax.config.jax_compilation_cache_dir or not jax.config.jax_enable_compilation_cache:
        return None
    directory = private_directory(compilation_cache_dir())
    if directory is None:
        return None
    warnings.filterwarnings("ignore", message=CACHE_FAILURE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", NO_MIN_ENTRY_SIZE)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    return directory


def private_directory(path: Path) -> Path | None:
    """`path`, made if missing, if it is a directory this user owns, writes to, and no one
    else can write to; else None. jax trusts what it reads there (an entry is machine code it
    runs), so a directory others could write to would let them run code in this process."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    owner = os.getuid() if hasattr(os, "getuid") else info.st_uid
    if info.st_uid != owner or not os.access(path, os.W_OK | os.X_OK):
        return None
    return path
