"""The weight dtypes `convert` writes, and the spellings users bring from other tools.

Imported by the CLI for `--dtype`'s choices and completion, so it imports nothing heavy.
"""

from __future__ import annotations

from owlvit_cli.errors import BadInputError

DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "f32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def normalize_dtype(name: str) -> str:
    """The canonical name (`float32`, `float16`, `bfloat16`) of any accepted spelling."""
    canonical = DTYPE_ALIASES.get(name.strip().lower()) if isinstance(name, str) else None
    if canonical is None:
        accepted = ", ".join(DTYPE_ALIASES)
        raise BadInputError(f"the dtype must be one of {accepted}; got {name!r}")
    return canonical
