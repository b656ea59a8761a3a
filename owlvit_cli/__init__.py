"""owlvit: convert scenic OWL-ViT / OWLv2 checkpoints to transformers, verify, publish.

The Python API (docs/python-api.md): `inspect_checkpoint`, `convert_checkpoint`,
`verify_conversion`, `push_to_hub`, `detect_objects`, `embed_image_query`. (Not `verify` or
`detect`: those names are the subpackages.) Importing the package is cheap; each function
loads what it needs.
"""

from typing import TYPE_CHECKING, Any

from owlvit_cli import api
from owlvit_cli.errors import (
    BadInputError,
    CheckFailedError,
    CheckpointError,
    ExitCode,
    HubError,
    OwlvitError,
)
from owlvit_cli.progress import NO_PROGRESS, Progress, Step
from owlvit_cli.version import __version__

if TYPE_CHECKING:
    from owlvit_cli.api import (
        CheckpointInfo,
        convert_checkpoint,
        detect_objects,
        embed_image_query,
        inspect_checkpoint,
        plan_conversion,
        push_to_hub,
        verify_conversion,
    )

__all__ = [
    "NO_PROGRESS",
    "BadInputError",
    "CheckFailedError",
    "CheckpointError",
    "CheckpointInfo",
    "ExitCode",
    "HubError",
    "OwlvitError",
    "Progress",
    "Step",
    "__version__",
    "convert_checkpoint",
    "detect_objects",
    "embed_image_query",
    "inspect_checkpoint",
    "plan_conversion",
    "push_to_hub",
    "verify_conversion",
]


def __getattr__(name: str) -> Any:
    """The API's functions, imported on first use (see `owlvit_cli.api`)."""
    if name in api.EXPORTS:
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *api.EXPORTS])
