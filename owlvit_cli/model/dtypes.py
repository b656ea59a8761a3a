"""The weight dtypes `convert` writes, and the spellings users bring from other tools.

Imported by the CLI for `--dtype`'s choices and completion, so it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from owlvit_cli.errors import BadInputError

if TYPE_CHECKING:
    import numpy as np

DTYPES = ("float32", "float16", "bfloat16")
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")  # what a checkpoint may hold
DEFAULT_DTYPE = "float32"  # what convert writes unless told otherwise
SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}  # header codes
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


def numpy_dtype(name: str) -> np.dtype:
    """numpy's dtype for a name; bfloat16 comes from ml_dtypes, imported only when asked for:
    0.25 s of CPU (0.6; 0.7 took over a second, hence the pin in pyproject.toml), a sixth of a
    B/32 conversion."""
    import numpy as np

    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def normalize_dtype(name: str) -> str:
    """The canonical name (`float32`, `float16`, `bfloat16`) of any accepted spelling."""
    canonical = DTYPE_ALIASES.get(name.strip().lower())
    if canonical is None:
        accepted = ", ".join(DTYPE_ALIASES)
        raise BadInputError(f"the dtype must be one of {accepted}; got {name!r}")
    return canonical


class NamedTensor(Protocol):
    """What the model layer needs of a checkpoint's tensor (readers' `TensorEntry` has it)."""

    @property
    def path(self) -> str: ...

    @property
    def source_path(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype_name(self) -> str: ...


def dtype_problems(tensors: Iterable[NamedTensor]) -> list[str]:
    bad = [f"{t.source_path} ({t.dtype_name})" for t in tensors if t.dtype_name not in FLOAT_DTYPES]
    if not bad:
        return []
    return [
        f"{len(bad)} tensor(s) are not floating point (expected {', '.join(FLOAT_DTYPES)}): "
        + ", ".join(bad[:6])
        + (" …" if len(bad) > 6 else "")
    ]
