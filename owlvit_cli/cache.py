"""Where owlvit keeps what it can make again: `$OWLVIT_CACHE`, else `$XDG_CACHE_HOME/owlvit`,
else `~/.cache/owlvit`. Everything in it is optional; deleting it only costs time."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("OWLVIT_CACHE"):
        return Path(os.environ["OWLVIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "owlvit"
