"""The interface every checkpoint reader implements (`Checkpoint`, `TensorEntry`), and what
all formats share: finding the params in a state tree, naming its layout, and indexing every
tensor under current scenic names.

Three layouts exist in the wild and the layout is read from the tree, never from a file name:
released v1 (`optimizer/target`, `resblocks.N`, `ln_1`/`ln_2`), released v2 (`params`,
`resblocks.N`, `ln_0`/`ln_1`) and what scenic's current trainer writes (`params`,
`resblocks_N`, `ln_0`/`ln_1`). Every consumer sees the current names.

A reader for a new format subclasses `Checkpoint` (`read`, and `close` if it holds anything)
and builds its fields with `index_params`; `reader.open_checkpoint` picks the reader.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from owlvit_cli.errors import CheckpointError
from owlvit_cli.model.tree import flatten, nest

if TYPE_CHECKING:
    import numpy as np

LAYOUTS = ("v1", "v2", "current")
BLOCK_RE = re.compile(r"(?<=/)resblocks([._])(\d+)(?=/)")
TOWERS = ("backbone/clip/visual/transformer", "backbone/clip/text/transformer")
# Released v1 used OpenAI's numbering for the two block LayerNorms.
V1_LAYERNORM_RENAMES = {"ln_1": "ln_0", "ln_2": "ln_1"}


class ArrayInfo(Protocol):
    """What either format knows about an array before reading it (`ArrayRecord` for msgpack)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype_name(self) -> str: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def dtype(self) -> np.dtype: ...


@dataclass(frozen=True)
class TensorEntry:
    """One parameter: its current-scenic name, its name in the file, and where its bytes are."""

    path: str
    source_path: str
    record: ArrayInfo

    @property
    def shape(self) -> tuple[int, ...]:
        return self.record.shape

    @property
    def dtype(self) -> np.dtype:
        return self.record.dtype

    @property
    def dtype_name(self) -> str:
        return self.record.dtype_name

    @property
    def size(self) -> int:
        return self.record.size


@dataclass
class Checkpoint:
    """An open checkpoint of either format: its params under current scenic names.

    `path` is the file or directory read (a workdir resolves to one of its checkpoints) and
    `file_size` its size on disk (for a directory, all its files together)."""

    path: Path
    file_size: int
    layout: str
    root: str
    tensors: dict[str, TensorEntry]
    other_top_level: list[str] = field(default_factory=list)
    format: str = "msgpack"

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free what reading holds; the tensor index stays usable."""

    def __getitem__(self, path: str) -> TensorEntry:
        return self.tensors[path]

    def __iter__(self) -> Iterator[TensorEntry]:
        return iter(self.tensors.values())

    @property
    def num_parameters(self) -> int:
        return sum(entry.size for entry in self)

    def read(self, path: str, dtype: np.dtype | str | None = None) -> np.ndarray:
        """The tensor's values, cast to `dtype` when given."""
        raise NotImplementedError

    def stream(self) -> None:
        """About to read every tensor once, in order (convert): a hint, never required."""

    def check_unchanged(self) -> None:
        """Refuse a result made from a checkpoint that was modified while it was read."""

    def params_tree(self, dtype: np.dtype | str | None = "float32") -> dict[str, Any]:
        """Nested dict of arrays under current scenic names, ready for the Flax model."""
        return nest({entry.path: self.read(entry.path, dtype) for entry in self})


def index_params(
    path: Path,
    tree: Any,
    leaf_type: type,
    describe: Callable[[dict[str, Any]], dict[str, ArrayInfo]] | None = None,
) -> dict[str, Any]:
    """Find the params in a state tree, name its layout and index every tensor under current
    names: the `Checkpoint` fields every format shares. Leaves are `leaf_type`; `describe`
    turns the params' leaves into `ArrayInfo` where the tree alone does not say shape and
    dtype (Orbax keeps them beside each array), so only the params' metadata is read."""
    if not isinstance(tree, dict):
        raise CheckpointError(
            f"{path}: expected a map of parameters at the top, found {type(tree).__name__}"
        )
    root, params = _find_params(path, tree)
    flat = dict(_flatten(params, "", leaf_type))
    layout = detect_layout(path, flat)
    records = describe(flat) if describe is not None else flat
    tensors: dict[str, TensorEntry] = {}
    for source, record in records.items():
        canonical = canonical_name(source, layout)
        full_source = f"{root}/{source}" if root else source
        tensors[canonical] = TensorEntry(canonical, full_source, record)
    others = sorted(k for k in tree if k not in ("optimizer", "params"))
    return {"layout": layout, "root": root, "tensors": tensors, "other_top_level": others}


def _find_params(path: Path, tree: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Pre-Optax train states keep params at optimizer/target; newer ones at params."""
    if "optimizer" in tree:
        target = tree["optimizer"].get("target") if isinstance(tree["optimizer"], dict) else None
        if not isinstance(target, dict):
            raise CheckpointError(f"{path}: has 'optimizer' but no 'optimizer/target' params")
        return "optimizer/target", target
    if isinstance(tree.get("params"), dict):
        return "params", tree["params"]
    if isinstance(tree.get("backbone"), dict):
        return "", tree
    found = ", ".join(sorted(tree)[:8]) or "nothing"
    raise CheckpointError(
        f"{path}: not a scenic OWL-ViT checkpoint: expected top-level 'params' or "
        f"'optimizer/target', found {found}"
    )


def _flatten(node: Any, prefix: str, leaf_type: type) -> Iterator[tuple[str, Any]]:
    for path, value in flatten(node, prefix):
        if not isinstance(value, leaf_type):
            raise CheckpointError(f"parameter {path!r} is a {type(value).__name__}, not an array")
        yield path, value


def detect_layout(path: Path, flat: dict[str, Any]) -> str:
    """Name the layout from block spelling and LayerNorm numbering."""
    blocks = [p for p in flat if any(p.startswith(t + "/") for t in TOWERS)]
    if not blocks:
        raise CheckpointError(
            f"{path}: not an OWL-ViT checkpoint: no backbone/clip/visual|text/transformer "
            f"blocks among {len(flat)} parameters"
        )
    separators = {m.group(1) for p in blocks if (m := BLOCK_RE.search(p))}
    if separators == {"_"}:
        layout = "current"
    elif separators == {"."}:
        has_ln2 = any("/ln_2/" in p for p in blocks)
        layout = "v1" if has_ln2 else "v2"
    else:
        found = "both 'resblocks.N' and 'resblocks_N'" if separators else "no resblocks"
        raise CheckpointError(f"{path}: unknown block naming: found {found}")
    if layout != "v1" and any("/ln_2/" in p for p in blocks):
        raise CheckpointError(f"{path}: blocks named 'resblocks_N' but with 'ln_2' LayerNorms")
    return layout


def canonical_name(source: str, layout: str) -> str:
    """A file's parameter path under current scenic names."""
    name = BLOCK_RE.sub(lambda m: f"resblocks_{m.group(2)}", source)
    if layout == "v1" and "/resblocks_" in name:
        parts = name.split("/")
        parts = [V1_LAYERNORM_RENAMES.get(part, part) for part in parts]
        name = "/".join(parts)
    return name
