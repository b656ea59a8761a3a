"""Checkpoint → transformers model directory, tensor by tensor, with no model in between.

Tensors go from the checkpoint (read with pread) through the mapping's reshape straight into the
safetensors file, so conversion costs about one read and one write of the bytes and never
holds two full copies. The directory appears atomically (see `atomic`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from owlvit_cli.atomic import atomic_directory, check_output_dir
from owlvit_cli.checkpoint.hashing import (
    FileHasher,
    KnownDigest,
    OrderedHasher,
    start_hashing,
)
from owlvit_cli.checkpoint.inspection import has_non_finite
from owlvit_cli.checkpoint.reader import Checkpoint, MsgpackCheckpoint, open_checkpoint
from owlvit_cli.convert.hf_files import write_hf_files
from owlvit_cli.convert.mapping import (
    TRANSFORMS,
    VISUAL_PROJECTION_NOTE,
    MappingPlan,
    TensorMap,
    plan_checkpoint,
)
from owlvit_cli.convert.safetensors_writer import (
    FileBytes,
    PlannedTensor,
    ReadObserver,
    parse_size,
    write_model_files,
)
from owlvit_cli.errors import OutputError
from owlvit_cli.model.dtypes import DEFAULT_DTYPE, normalize_dtype
from owlvit_cli.model.model_dir import DEFAULT_MAX_SHARD_SIZE, FLAVORS, RECORD_FILE, TOOL_NAME
from owlvit_cli.model.spec import ModelSpec
from owlvit_cli.progress import NO_PROGRESS, Progress
from owlvit_cli.version import __version__

LIBRARIES = ("transformers", "torch", "safetensors", "numpy", "huggingface_hub", "jax", "flax")


@dataclass
class ConversionResult:
    output: Path
    files: list[str]
    record: dict[str, Any]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "files": self.files,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
            **self.record,
        }


def planned_tensors(
    ckpt: Checkpoint, plan: MappingPlan, non_finite: list[str] | None = None
) -> list[PlannedTensor]:
    """`non_finite` collects the sources of tensors that hold NaN or ±Inf."""
    return [_planned(ckpt, tensor, non_finite) for tensor in plan.tensors]


def _planned(ckpt: Checkpoint, tensor: TensorMap, non_finite: list[str] | None) -> PlannedTensor:
    if tensor.source is None:
        return PlannedTensor(tensor.target, tensor.shape, produce=lambda: tensor.build(ckpt.read))
    entry = ckpt[tensor.source]
    transform = TRANSFORMS[tensor.transform]

    def inspect(values: Any) -> None:
        if non_finite is not None and has_non_finite(values):
            non_finite.append(entry.source_path)  # list.append: safe from worker threads

    return PlannedTensor(
        tensor.target,
        tensor.shape,
        produce=lambda: ckpt.read(tensor.source),
        source=file_bytes(ckpt, tensor.source),
        layout=transform.apply,
        keeps_order=transform.keeps_bytes,
        inspect=inspect,
    )


def file_bytes(ckpt: Checkpoint, source: str) -> FileBytes | None:
    """Where the tensor's bytes lie as they are, for the writer to read itself (msgpack); None
    where only the checkpoint can decode them (Orbax's compressed chunks)."""
    if not isinstance(ckpt, MsgpackCheckpoint):
        return None
    entry = ckpt[source]
    return FileBytes(ckpt.segments(source), entry.dtype, entry.shape, ckpt.read_into)


def source_hasher(
    ckpt: Checkpoint, tensors: list[PlannedTensor]
) -> tuple[FileHasher | KnownDigest, ReadObserver | None]:
    """What computes the checkpoint's sha256, and the observer the writer feeds (if any).

    A digest remembered from an earlier run costs nothing. Otherwise a msgpack file is hashed
    from the buffers the writer reads anyway (`OrderedHasher`); an Orbax directory, whose
    files the writer never sees as bytes, is hashed by a thread reading them."""
    if not isinstance(ckpt, MsgpackCheckpoint):
        return start_hashing(ckpt.path), None
    spans = [span for t in tensors if t.source is not None for span in t.source.segments]
    hasher = start_hashing(
        ckpt.path,
        lambda identity: OrderedHasher(ckpt.path, ckpt.file_size, spans, ckpt.read_into, identity),
    )
    return hasher, hasher if isinstance(hasher, OrderedHasher) else None


def non_finite_warning(paths: list[str]) -> str:
    shown = ", ".join(paths[:6]) + (" …" if len(paths) > 6 else "")
    return (
        f"{len(paths)} tensor(s) hold NaN or infinite values, copied as they are; the "
        f"model's outputs will not be usable: {shown}"
    )


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def conversion_record(
    ckpt: Checkpoint, spec: ModelSpec, plan: MappingPlan, sha256: str, dtype: str
) -> dict[str, Any]:
    return {
        "tool": TOOL_NAME,
        "tool_version": __version__,
        "source": {
            "file": ckpt.path.name,
            "format": ckpt.format,
            "size": ckpt.file_size,
            "sha256": sha256,
        },
        "layout": ckpt.layout,
        "params_root": ckpt.root,
        "version": spec.version,
        "model_class": FLAVORS[spec.version].model_class,
        "config": spec.to_json(),
        "dtype": dtype,
        "num_parameters": sum(e.size for e in ckpt),
        "num_tensors": len(plan.tensors),
        "ignored": [{"path": i.source, "reason": i.reason} for i in plan.ignored],
        "ignored_top_level_keys": ckpt.other_top_level,
        "generated": {t.target: VISUAL_PROJECTION_NOTE for t in plan.tensors if t.source is None},
        "libraries": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while converting: the tokenizer files make ~10^5 small
    objects, each of them a reason for the collector to scan everything (0.2 s of a B/32
    conversion, freeing nothing); a conversion's memory is buffers, freed by reference
    counting. The collector is left as the caller had it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@collector_paused()
def convert_checkpoint(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    dtype: str = DEFAULT_DTYPE,
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    force_overwrite: bool = False,
    progress: Progress = NO_PROGRESS,
) -> ConversionResult:
    """Convert `checkpoint` into the transformers model directory `output`; `dtype` takes any
    spelling in `owlvit_cli.model.dtypes.DTYPE_ALIASES` (fp16, bf16, ...).

    `overwrite` replaces only an earlier owlvit output; `force_overwrite` any directory (see
    `owlvit_cli.atomic` for the rules that keep the user's files safe)."""
    started = time.perf_counter()
    checkpoint, output = Path(checkpoint), Path(output)
    dtype = normalize_dtype(dtype)
    shard_bytes = parse_size(max_shard_size)
    output_rules = {"force": force_overwrite, "inputs": [checkpoint]}
    check_output_dir(output, overwrite, **output_rules)
    with open_checkpoint(checkpoint) as ckpt:
        spec, plan = plan_checkpoint(ckpt)
        warnings = [f"dropped {i.source}: {i.reason}" for i in plan.ignored if i.warn]
        ckpt.stream()
        non_finite: list[str] = []
        tensors = planned_tensors(ckpt, plan, non_finite)
        hasher, observer = source_hasher(ckpt, tensors)
        try:
            with (
                atomic_directory(output, overwrite, **output_rules) as tmp,
                ThreadPoolExecutor(max_workers=1) as side,
            ):
                # A few kilobytes of JSON and the tokenizer, made while the weights stream.
                hf_files = side.submit(write_hf_files, tmp, spec, dtype)
                with progress.step("converting tensors") as step:
                    step.set_total(sum(t.nbytes(dtype) for t in tensors), "bytes")
                    write_model_files(tmp, tensors, dtype, shard_bytes, step.advance, observer)
                hf_files.result()
                ckpt.check_unchanged()
                digest = hasher.digest(progress)
                record = conversion_record(ckpt, spec, plan, digest, dtype)
                (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
                files_written = sorted(p.name for p in tmp.iterdir())
        except OSError as exc:  # disk full, quota, vanished directory: the user's to fix
            raise OutputError(f"{output}: cannot write ({exc.strerror or exc})") from exc
        finally:
            if observer is not None:
                observer.abort()  # a hasher still waiting for bytes nobody will read
    if non_finite:
        warnings.append(non_finite_warning(sorted(set(non_finite))))
    seconds = time.perf_counter() - started
    return ConversionResult(output, files_written, record, seconds, warnings)
