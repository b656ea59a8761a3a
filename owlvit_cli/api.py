"""The Python API: what the five commands do, callable from a notebook or a pipeline.

Every function takes paths as `str` or `os.PathLike`, reports progress through an optional
`owlvit_cli.progress.Progress` (nothing is shown by default), returns a typed result and raises
the typed errors of `owlvit_cli.errors` (each carries the exit code the CLI would use). Nothing
here prints.

Each name is the core's own function, not a copy of its signature: the CLI calls the same
functions with the same defaults. They are looked up on first use, so importing the package
stays cheap and heavy libraries load only when a function that needs them is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from owlvit_cli.convert.inspection import CheckpointInfo, inspect_checkpoint
    from owlvit_cli.convert.run import convert_checkpoint, plan_conversion
    from owlvit_cli.detect.run import detect as detect_objects
    from owlvit_cli.detect.run import embed_query_box as embed_image_query
    from owlvit_cli.publish.hub import push_to_hub
    from owlvit_cli.verify.run import verify as verify_conversion

# name: (module, the name there)
EXPORTS = {
    "CheckpointInfo": ("owlvit_cli.convert.inspection", "CheckpointInfo"),
    "inspect_checkpoint": ("owlvit_cli.convert.inspection", "inspect_checkpoint"),
    "convert_checkpoint": ("owlvit_cli.convert.run", "convert_checkpoint"),
    "plan_conversion": ("owlvit_cli.convert.run", "plan_conversion"),
    "verify_conversion": ("owlvit_cli.verify.run", "verify"),
    "push_to_hub": ("owlvit_cli.publish.hub", "push_to_hub"),
    "detect_objects": ("owlvit_cli.detect.run", "detect"),
    "embed_image_query": ("owlvit_cli.detect.run", "embed_query_box"),
}

__all__ = [
    "CheckpointInfo",
    "convert_checkpoint",
    "detect_objects",
    "embed_image_query",
    "inspect_checkpoint",
    "plan_conversion",
    "push_to_hub",
    "verify_conversion",
]


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])
