"""The weight dtypes `convert` writes, the spellings users bring from other tools, and what
`auto` (keep the checkpoint's own dtype) picks.

Imported by the CLI for `--dtype`'s choices and completion, so it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from owlvit_cli.errors import BadInputError

if TYPE_CHECKING:
    import numpy as np

DTYPES = ("float32", "float16", "bfloat16")
AUTO = "auto"
# What a dtype that cannot be written (float64) becomes, and what weights of mixed dtypes
# become: float32 holds float16 and bfloat16 values exactly.
WIDEST = "float32"
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")  # what a checkpoint may hold
DEFAULT_DTYPE = AUTO  # what convert writes unless told otherwise: the checkpoint's own
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


def normalize_dtype(name: str, *, allow_auto: bool = False) -> str:
    """The canonical name (`float32`, `float16`, `bfloat16`, or `auto` where allowed) of any
    accepted spelling."""
    key = name.strip().lower() if isinstance(name, str) else None
    if allow_auto and key == AUTO:
        return AUTO
    canonical = DTYPE_ALIASES.get(key) if key is not None else None
    if canonical is None:
        accepted = ", ".join(([AUTO] if allow_auto else []) + list(DTYPE_ALIASES))
        raise BadInputError(f"the dtype must be one of {accepted}; got {name!r}")
    return canonical


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a conversion writes, and why, in words for its summary."""

    dtype: str
    reason: str


@dataclass(frozen=True)
class StoredTensor:
    """What the choice needs to know of one checkpoint tensor."""

    name: str
    dtype: str
    size: int


def choose_dtype(requested: str, stored: Iterable[StoredTensor]) -> DtypeChoice:
    """`requested` (any spelling, or `auto`) as the dtype to write.

    `auto` keeps the dtype the weights are stored in. Scalars (a float32 `logit_scale`
    beside bfloat16 weights, as mixed-precision training leaves it) are not weights and do
    not widen the model; weights that really mix dtypes are written in float32, which holds
    each of them exactly."""
    dtype = normalize_dtype(requested, allow_auto=True)
    if dtype != AUTO:
        return DtypeChoice(dtype, "as requested")
    tensors = list(stored)
    weights = [t for t in tensors if t.size > 1] or tensors
    kinds = sorted({t.dtype for t in weights})
    scalars = [t for t in tensors if t.size <= 1 and t.dtype not in kinds]
    if len(kinds) > 1:
        return DtypeChoice(
            WIDEST, f"the weights mix {' and '.join(kinds)}; {WIDEST} holds each exactly"
        )
    kind = kinds[0] if kinds else WIDEST
    if kind not in DTYPES:
        return DtypeChoice(WIDEST, f"the weights are {kind}, which is not written; {WIDEST}")
    reason = f"the checkpoint's weights are {kind}"
    if scalars:
        names = ", ".join(t.name for t in scalars[:3]) + (" …" if len(scalars) > 3 else "")
        reason += f" (scalars in other dtypes do not count: {names})"
    return DtypeChoice(kind, reason)


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
