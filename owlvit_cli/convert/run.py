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
from owlvit_cli.checkpoint.workdir import ResolvedCheckpoint, as_resolved, check_not_a_step
from owlvit_cli.convert.hf_files import model_file_writers, write_hf_files
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
    shard,
    weight_file_names,
    write_model_files,
)
from owlvit_cli.errors import OutputError
from owlvit_cli.hold import hold_point
from owlvit_cli.model.dtypes import (
    DEFAULT_DTYPE,
    DtypeChoice,
    StoredTensor,
    choose_dtype,
    normalize_dtype,
)
from owlvit_cli.model.model_dir import (
    DEFAULT_MAX_SHARD_SIZE,
    FLAVORS,
    RECORD_FILE,
    TOOL_NAME,
    WEIGHTS_INDEX_FILE,
)
from owlvit_cli.model.spec import ModelSpec
from owlvit_cli.model.written_files import WRITTEN_KEY, describe_written, unproven_files
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
            **{key: value for key, value in self.record.items() if key != WRITTEN_KEY},
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
    ckpt: Checkpoint,
    spec: ModelSpec,
    plan: MappingPlan,
    sha256: str,
    dtype: DtypeChoice,
    output: Path | None = None,
) -> dict[str, Any]:
    return {
        "tool": TOOL_NAME,
        "tool_version": __version__,
        "source": {
            "file": ckpt.path.name,
            **({"path": source_path_from(output, ckpt.path)} if output is not None else {}),
            "format": ckpt.format,
            "size": ckpt.file_size,
            "sha256": sha256,
        },
        "layout": ckpt.layout,
        "params_root": ckpt.root,
        "version": spec.version,
        "model_class": FLAVORS[spec.version].model_class,
        "config": spec.to_json(),
        **_plan_fields(ckpt, plan, dtype),
        "libraries": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _plan_fields(ckpt: Checkpoint, plan: MappingPlan, dtype: DtypeChoice) -> dict[str, Any]:
    """What both the conversion record and a dry run's plan say about the tensors."""
    return {
        "dtype": dtype.dtype,
        "dtype_reason": dtype.reason,
        "num_parameters": sum(e.size for e in ckpt),
        "num_tensors": len(plan.tensors),
        "ignored": [{"path": i.source, "reason": i.reason} for i in plan.ignored],
        "ignored_top_level_keys": ckpt.other_top_level,
        "generated": {t.target: VISUAL_PROJECTION_NOTE for t in plan.tensors if t.source is None},
    }


def weights_dtype(ckpt: Checkpoint, requested: str) -> DtypeChoice:
    """The dtype to write: `requested`, or with `auto` the one the weights are stored in."""
    stored = (StoredTensor(e.source_path, e.dtype_name, e.size) for e in ckpt)
    return choose_dtype(requested, stored)


@dataclass(frozen=True)
class PreparedConversion:
    """What a conversion knows from the checkpoint's headers, before reading any weights."""

    spec: ModelSpec
    plan: MappingPlan
    dtype: DtypeChoice
    warnings: list[str]


def prepare(ckpt: Checkpoint, requested_dtype: str) -> PreparedConversion:
    """Everything a conversion and its dry run decide before the first weight is read."""
    spec, plan = plan_checkpoint(ckpt)
    warnings = [f"dropped {i.source}: {i.reason}" for i in plan.ignored if i.warn]
    return PreparedConversion(spec, plan, weights_dtype(ckpt, requested_dtype), warnings)


@dataclass
class ConversionPlan:
    """What `convert_checkpoint` would write, from the checkpoint's headers alone (a dry run:
    nothing is read beyond them and nothing is written)."""

    output: Path
    fields: dict[str, Any]
    shards: list[dict[str, Any]]
    files: list[str]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "output": str(self.output),
            **self.fields,
            "bytes": sum(s["bytes"] for s in self.shards),
            "shards": self.shards,
            "files": self.files,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class CheckedRequest:
    """What a conversion and its dry run have checked before any tensor is read."""

    resolved: ResolvedCheckpoint
    output: Path
    shard_bytes: int
    output_rules: dict[str, Any]  # what `atomic_directory` enforces again at the end


def checked_request(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    dtype: str,
    max_shard_size: str | int,
    overwrite: bool,
    force_overwrite: bool,
    step: int | None,
) -> CheckedRequest:
    """The argument and output checks `convert_checkpoint` and `plan_conversion` share: the
    workdir a step came from is an input too, and OUT replaces only files owlvit proves it
    wrote unless forced."""
    resolved = as_resolved(checkpoint, step)
    normalize_dtype(dtype, allow_auto=True)
    shard_bytes = parse_size(max_shard_size)
    rules = {"force": force_overwrite, "inputs": resolved.inputs, "replaceable": unproven_files}
    check_output_dir(Path(output), overwrite, **rules)
    check_not_a_step(Path(output))
    return CheckedRequest(resolved, Path(output), shard_bytes, rules)


def plan_conversion(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    dtype: str = DEFAULT_DTYPE,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    force_overwrite: bool = False,
    step: int | None = None,
) -> ConversionPlan:
    """The files, tensors, bytes, shards and dtype `convert_checkpoint` with the same
    arguments would write, and what it would ignore or generate; refused for the same
    reasons it would be, without writing anything (not even a temporary directory)."""
    request = checked_request(
        checkpoint, output, dtype, max_shard_size, overwrite, force_overwrite, step
    )
    output, shard_bytes = request.output, request.shard_bytes
    with open_checkpoint(request.resolved.path) as ckpt:
        ready = prepare(ckpt, dtype)
        tensors = planned_tensors(ckpt, ready.plan)
        fields = {
            "source": {"file": ckpt.path.name, "format": ckpt.format, "size": ckpt.file_size},
            "layout": ckpt.layout,
            "version": ready.spec.version,
            "model_class": FLAVORS[ready.spec.version].model_class,
            **_plan_fields(ckpt, ready.plan, ready.dtype),
        }
    written = ready.dtype.dtype
    parts = shard(tensors, written, shard_bytes)
    shards = [
        {"file": name, "tensors": len(part), "bytes": sum(t.nbytes(written) for t in part)}
        for name, part in zip(weight_file_names(len(parts)), parts, strict=True)
    ]
    files = [s["file"] for s in shards] + ([WEIGHTS_INDEX_FILE] if len(shards) > 1 else [])
    files += [*model_file_writers(ready.spec, written), RECORD_FILE]
    return ConversionPlan(output, fields, shards, sorted(files), ready.warnings)


def source_path_from(output: Path, checkpoint: Path) -> str:
    """Where the checkpoint lies, relative to the output directory: enough to name it in a
    later command (`owlvit verify`), without publishing where files live on this machine."""
    return Path(os.path.relpath(os.path.abspath(checkpoint), os.path.abspath(output))).as_posix()


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
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    force_overwrite: bool = False,
    step: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> ConversionResult:
    """Convert `checkpoint` (a file, an Orbax directory, or a workdir: its latest step, or
    `step`) into the transformers model directory `output`; `dtype` takes any spelling in
    `owlvit_cli.model.dtypes.DTYPE_ALIASES` (fp16, bf16, ...), or `auto` to keep the dtype the
    weights are stored in (see `owlvit_cli.model.dtypes.choose_dtype`); `max_shard_size` a
    size like "2GB" or a number of bytes.

    `overwrite` replaces only an earlier owlvit output; `force_overwrite` any directory (see
    `owlvit_cli.atomic` for the rules that keep the user's files safe)."""
    started = time.perf_counter()
    request = checked_request(
        checkpoint, output, dtype, max_shard_size, overwrite, force_overwrite, step
    )
    checkpoint, output, shard_bytes = request.resolved.path, request.output, request.shard_bytes
    with open_checkpoint(checkpoint) as ckpt:
        ready = prepare(ckpt, dtype)
        spec, plan, choice, warnings = ready.spec, ready.plan, ready.dtype, ready.warnings
        dtype = choice.dtype
        ckpt.stream()
        non_finite: list[str] = []
        tensors = planned_tensors(ckpt, plan, non_finite)
        hasher, observer = source_hasher(ckpt, tensors)
        try:
            with (
                atomic_directory(output, overwrite, **request.output_rules) as tmp,
                ThreadPoolExecutor(max_workers=1) as side,
            ):
                # A few kilobytes of JSON and the tokenizer, made while the weights stream.
                hf_files = side.submit(write_hf_files, tmp, spec, dtype)
                with progress.step("converting tensors") as step:
                    step.set_total(sum(t.nbytes(dtype) for t in tensors), "bytes")
                    write_model_files(tmp, tensors, dtype, shard_bytes, step.advance, observer)
                hf_files.result()
                hold_point("convert-read")
                try:
                    digest = hasher.digest(progress)
                finally:  # after the hash, which read the same files (and failed if they went)
                    ckpt.check_unchanged()
                record = conversion_record(ckpt, spec, plan, digest, choice, output)
                record[WRITTEN_KEY] = describe_written(tmp, os.listdir(tmp))
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
