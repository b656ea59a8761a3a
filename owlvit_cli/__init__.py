"""owlvit: convert scenic OWL-ViT / OWLv2 checkpoints to transformers, verify, publish.

The Python API (README "Python API"): `inspect_checkpoint`, `convert_checkpoint`,
`verify_conversion`, `push_to_hub`, `detect_objects`. (Not `verify` or `detect`: those names
are the subpackages.) Importing the package is cheap; each function loads what it needs.
"""

from owlvit_cli.api import (
    CheckpointInfo,
    convert_checkpoint,
    detect_objects,
    inspect_checkpoint,
    push_to_hub,
    verify_conversion,
)
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
    "inspect_checkpoint",
    "push_to_hub",
    "verify_conversion",
]
