"""Read an Orbax checkpoint directory (what flax and orbax write by default) lazily.

Orbax keeps the tree in `_METADATA` (JSON: every leaf's key path and value type) and each array
as a zarr array named by its key path joined with dots (`params.backbone.clip...kernel`): its
own folder, or, with OCDBT (orbax's default), a key in one database under `manifest.ocdbt`
and `d/`. Listing reads `_METADATA` and each param's zarr header only (shape, dtype), never
array data; a tensor's data is read by tensorstore when asked for, one array at a time.
tensorstore is imported here only, so commands on msgpack files never pay for it.

The whole tree is listed first (`file_tree`): what is not a regular file is refused before
tensorstore could open it, and the stat of every file is kept to refuse a result made from a
directory that was rewritten while it was read (`check_unchanged`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlvit_cli.checkpoint.file_tree import TreeFile, changed_files, scan_tree
from owlvit_cli.checkpoint.interface import Checkpoint, index_params
from owlvit_cli.checkpoint.msgpack_index import itemsize
from owlvit_cli.errors import CheckpointError, first_line
from owlvit_cli.input_files import JSON_LIMIT, METADATA_LIMIT, read_json_file, read_limited
from owlvit_cli.json_text import parse_json
from owlvit_cli.model.dtypes import numpy_dtype

if TYPE_CHECKING:
    import numpy as np
    import tensorstore as ts

METADATA_FILE = "_METADATA"
OCDBT_MANIFEST = "manifest.ocdbt"
ARRAY_VALUE_TYPES = ("np.ndarray", "jax.Array", "scalar")
# zarr v2 spells dtypes as numpy type strings; the ones a Flax checkpoint holds, by name.
ZARR2_DTYPES = {
    "<f4": "float32", "<f2": "float16", "bfloat16": "bfloat16", "<f8": "float64",
    "<i4": "int32", "<i8": "int64", "<i2": "int16", "|i1": "int8", "|u1": "uint8",
    "<u2": "uint16", "<u4": "uint32", "<u8": "uint64", "|b1": "bool",
}  # fmt: skip


@dataclass(frozen=True)
class OrbaxLeaf:
    """A leaf of `_METADATA`'s tree: the array's name in the store and orbax's value type."""

    name: str
    value_type: str


@dataclass(frozen=True)
class OrbaxArray:
    """One array's zarr header: enough to plan with, no data read."""

    name: str
    shape: tuple[int, ...]
    dtype_name: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * itemsize(self.dtype_name)

    @property
    def dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype_name)


@dataclass
class OrbaxCheckpoint(Checkpoint):
    """An Orbax checkpoint directory; each read opens one array with tensorstore."""

    format: str = "orbax"
    _store: _Store | None = None
    _files: list[TreeFile] = field(default_factory=list)

    def read(self, path: str, dtype: np.dtype | str | None = None) -> np.ndarray:
        if self._store is None:
            raise CheckpointError(f"{self.path} is closed")
        record = self.tensors[path].record
        assert isinstance(record, OrbaxArray)
        array = self._store.read_array(record)
        return array if dtype is None else array.astype(dtype, copy=False)

    def close(self) -> None:
        self._store = None

    def check_unchanged(self) -> None:
        """Refuse a result made from a directory whose files changed while it was read."""
        changed = changed_files(self._files, self.path)
        if changed:
            shown = ", ".join(changed[:3]) + (" …" if len(changed) > 3 else "")
            raise CheckpointError(f"{self.path} changed while being read ({shown}); run again")


def open_orbax(path: Path) -> OrbaxCheckpoint:
    """Index an Orbax checkpoint directory from its metadata, or say what is wrong with it."""
    files = scan_tree(path)
    names = {file.relative for file in files}
    metadata = _read_metadata(path, names)
    tree = _leaf_tree(path, metadata)
    store = _Store(path, metadata, names)
    fields = index_params(path, tree, OrbaxLeaf, store.describe)
    size = sum(file.size for file in files)
    return OrbaxCheckpoint(path, size, **fields, _store=store, _files=files)


def _read_metadata(path: Path, names: set[str]) -> dict[str, Any]:
    file = path / METADATA_FILE
    if METADATA_FILE not in names:
        raise CheckpointError(
            f"{path}: Orbax checkpoint without {METADATA_FILE} (unfinished save, or written "
            "by an orbax too old to record its tree)"
        )
    metadata = read_json_file(file, METADATA_LIMIT, CheckpointError)
    if not isinstance(metadata, dict) or not isinstance(metadata.get("tree_metadata"), dict):
        raise CheckpointError(f"{file}: corrupt metadata (no tree_metadata)")
    return metadata


def _leaf_tree(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """The nested state dict `_METADATA` describes, with `OrbaxLeaf`s for arrays."""
    tree: dict[str, Any] = {}
    for entry in metadata["tree_metadata"].values():
        try:
            keys = [str(k["key"]) for k in entry["key_metadata"]]
            value_type = str(entry["value_metadata"]["value_type"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{path / METADATA_FILE}: corrupt metadata ({exc!r})") from exc
        if not keys:
            continue
        if any(not k or "/" in k or "\\" in k or "\0" in k or k in (".", "..") for k in keys):
            raise CheckpointError(f"{path / METADATA_FILE}: refusing key path {keys!r}")
        node = tree
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise CheckpointError(f"{path / METADATA_FILE}: corrupt metadata (tree clash)")
            node = child
        leaf = OrbaxLeaf(".".join(keys), value_type) if value_type in ARRAY_VALUE_TYPES else None
        node[keys[-1]] = leaf if leaf is not None else value_type
    return tree


@dataclass
class _Store:
    """Where a checkpoint's arrays live (per-array zarr folders, or one OCDBT database) and
    how tensorstore opens them."""

    path: Path
    metadata: dict[str, Any]
    names: set[str]  # every file's path relative to `path` (`scan_tree`)
    zarr3: bool = False
    ocdbt: bool = False
    _context: Any = field(default=None, repr=False)
    _kvstore: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.zarr3 = bool(self.metadata.get("use_zarr3"))
        self.ocdbt = OCDBT_MANIFEST in self.names
        if self.metadata.get("use_ocdbt") and not self.ocdbt:
            raise CheckpointError(
                f"{self.path}: written with OCDBT but {OCDBT_MANIFEST} is missing"
            )

    @property
    def header_name(self) -> str:
        return "zarr.json" if self.zarr3 else ".zarray"

    def describe(self, leaves: dict[str, OrbaxLeaf]) -> dict[str, OrbaxArray]:
        """Each param's shape and dtype from its zarr header (OCDBT: all fetched at once)."""
        names = [leaf.name for leaf in leaves.values()]
        headers = self._ocdbt_headers(names) if self.ocdbt else map(self._file_header, names)
        return {
            source: self._array(name, header)
            for (source, name, header) in zip(leaves, names, headers, strict=True)
        }

    def _file_header(self, name: str) -> bytes:
        if f"{name}/{self.header_name}" not in self.names:
            raise CheckpointError(f"{self.path}: array {name!r} is missing")
        return read_limited(self.path / name / self.header_name, JSON_LIMIT, CheckpointError)

    def _ocdbt_headers(self, names: list[str]) -> list[bytes]:
        try:
            kvstore = self.kvstore()
            pending = [kvstore.read(f"{name}/{self.header_name}".encode()) for name in names]
            results = [future.result() for future in pending]
        except Exception as exc:  # tensorstore raises ValueError/OSError subclasses
            raise CheckpointError(
                f"{self.path}: OCDBT database unreadable: {first_line(exc)}"
            ) from exc
        for name, result in zip(names, results, strict=True):
            if result.state != "value":
                raise CheckpointError(f"{self.path}: array {name!r} is missing")
        return [bytes(result.value) for result in results]

    def _array(self, name: str, header: bytes) -> OrbaxArray:
        meta = parse_json(header, f"{self.path}: array {name!r} header", CheckpointError)
        try:
            shape = tuple(int(n) for n in meta["shape"])
            dtype = str(meta["data_type"]) if self.zarr3 else ZARR2_DTYPES.get(meta["dtype"], "")
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise CheckpointError(f"{self.path}: array {name!r} has a corrupt header") from exc
        if dtype not in ZARR2_DTYPES.values():
            raise CheckpointError(f"{self.path}: array {name!r} has an unsupported dtype")
        return OrbaxArray(name, shape, dtype)

    def context(self) -> ts.Context:
        import tensorstore as ts

        with self._lock:  # convert's writer workers read at once
            if self._context is None:  # no data cache: each array is read once
                self._context = ts.Context({"cache_pool": {"total_bytes_limit": 0}})
            return self._context

    def kvstore_spec(self, name: str | None = None) -> dict[str, Any]:
        """The whole store (`name` None) or one array's part of it, as a tensorstore spec."""
        root = str(self.path.resolve()) + "/"
        if not self.ocdbt:
            return {"driver": "file", "path": root + (f"{name}/" if name else "")}
        spec: dict[str, Any] = {"driver": "ocdbt", "base": {"driver": "file", "path": root}}
        return {**spec, "path": f"{name}/"} if name else spec

    def kvstore(self) -> ts.KvStore:
        import tensorstore as ts

        context = self.context()
        with self._lock:
            if self._kvstore is None:
                self._kvstore = ts.KvStore.open(self.kvstore_spec(), context=context).result()
            return self._kvstore

    def read_array(self, record: OrbaxArray) -> np.ndarray:
        """The array's values; a chunk missing from the store is an error, never zeros."""
        import tensorstore as ts

        spec = {
            "driver": "zarr3" if self.zarr3 else "zarr",
            "kvstore": self.kvstore_spec(record.name),
            "fill_missing_data_reads": False,
        }
        try:
            store = ts.open(spec, open=True, read=True, context=self.context()).result()
            array = store.read().result()
        except Exception as exc:  # tensorstore reports I/O and format errors as ValueError
            raise CheckpointError(
                f"{self.path}: cannot read array {record.name!r}: {first_line(exc)}"
            ) from exc
        if tuple(array.shape) != record.shape or array.dtype.name != record.dtype_name:
            raise CheckpointError(
                f"{self.path}: array {record.name!r} is {array.dtype.name}{list(array.shape)}, "
                f"its header said {record.dtype_name}{list(record.shape)}"
            )
        return array
