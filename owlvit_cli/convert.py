"""Checkpoint → transformers model directory, tensor by tensor, with no model in between.

Tensors go from the checkpoint's memory map through the mapping's reshape straight into the
safetensors file, so conversion costs about one read and one write of the bytes and never
holds two full copies. The directory appears atomically (see `atomic`).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from owlvit_cli import __version__
from owlvit_cli.atomic import atomic_directory, check_output_dir
from owlvit_cli.checkpoint import Checkpoint, open_checkpoint
from owlvit_cli.errors import BadInputError, OutputError
from owlvit_cli.hashing import start_hashing
from owlvit_cli.inspection import checkpoint_spec
from owlvit_cli.mapping import (
    VISUAL_PROJECTION_NOTE,
    MappingPlan,
    check_against_model,
    plan_mapping,
)
from owlvit_cli.safetensors_writer import (
    NUMPY_DTYPES,
    PlannedTensor,
    parse_size,
    write_model_files,
)
from owlvit_cli.spec import ModelSpec

RECORD_FILE = "owlvit_conversion.json"
DTYPES = tuple(NUMPY_DTYPES)
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


def model_classes(spec: ModelSpec) -> tuple[Any, Any, Any]:
    """(config class, detection model class, processor class) for the checkpoint's version."""
    import transformers as tf

    if spec.version == 2:
        return tf.Owlv2Config, tf.Owlv2ForObjectDetection, tf.Owlv2Processor
    return tf.OwlViTConfig, tf.OwlViTForObjectDetection, tf.OwlViTProcessor


def hf_config(spec: ModelSpec, logit_scale: float = 2.6592, dtype: str = "float32") -> Any:
    """The transformers config, every number from the derived spec (never from a hub config)."""
    config_cls, model_cls, _ = model_classes(spec)
    v, t = spec.vision, spec.text
    config = config_cls(
        text_config={
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "pad_token_id": 0,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
        },
        vision_config={
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
        projection_dim=spec.projection_dim,
        logit_scale_init_value=float(logit_scale),
    )
    config.architectures = [model_cls.__name__]
    config.dtype = dtype
    return config


def model_tensor_shapes(spec: ModelSpec, config: Any) -> dict[str, tuple[int, ...]]:
    """The persistent tensors transformers expects, from a model built on the meta device
    (no memory, no random init)."""
    import torch

    _, model_cls, _ = model_classes(spec)
    with torch.device("meta"):
        model = model_cls(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def save_processor(directory: Path, spec: ModelSpec) -> None:
    """Tokenizer + image processor. Owlv2's processor pads bottom/right to a square and then
    resizes with anti-aliasing, as scenic does; the stock v1 processor stretches instead, so
    v1 models get it too (it pads with 0.0 where scenic pads with 0.5: README)."""
    from transformers import Owlv2ImageProcessor

    from owlvit_cli.hf_tokenizer import build_hf_tokenizer

    _, _, processor_cls = model_classes(spec)
    size = spec.vision.image_size
    image_processor = Owlv2ImageProcessor(size={"height": size, "width": size})
    processor = processor_cls(
        image_processor=image_processor, tokenizer=build_hf_tokenizer(directory)
    )
    processor.save_pretrained(str(directory))
    # transformers 4.x reads the image processor from preprocessor_config.json.
    legacy = {**image_processor.to_dict(), "processor_class": processor_cls.__name__}
    (directory / "preprocessor_config.json").write_text(json.dumps(legacy, indent=2) + "\n")


def planned_tensors(ckpt: Checkpoint, plan: MappingPlan) -> list[PlannedTensor]:
    def producer(index: int) -> Callable[[], Any]:
        tensor = plan.tensors[index]
        return lambda: tensor.build(ckpt.read)

    return [PlannedTensor(t.target, t.shape, producer(i)) for i, t in enumerate(plan.tensors)]


def library_versions() -> dict[str, str]:
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
        "tool": "owlvit",
        "tool_version": __version__,
        "source": {"file": ckpt.path.name, "size": ckpt.file_size, "sha256": sha256},
        "layout": ckpt.layout,
        "params_root": ckpt.root,
        "version": spec.version,
        "model_class": model_classes(spec)[1].__name__,
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


def convert_checkpoint(
    checkpoint: Path,
    output: Path,
    *,
    dtype: str = "float32",
    max_shard_size: str = "5GB",
    overwrite: bool = False,
    on_start: Callable[[int], None] = lambda total: None,
    on_tensor: Callable[[str], None] = lambda name: None,
) -> ConversionResult:
    """Convert `checkpoint` into the transformers model directory `output`."""
    started = time.perf_counter()
    if dtype not in DTYPES:
        raise BadInputError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    shard_bytes = parse_size(max_shard_size)
    check_output_dir(output, overwrite)
    with open_checkpoint(checkpoint) as ckpt:
        spec = checkpoint_spec(ckpt)
        plan = plan_mapping({e.path: e.shape for e in ckpt}, spec)
        config = hf_config(spec, float(ckpt.read("backbone/clip/logit_scale")), dtype)
        check_against_model(plan, model_tensor_shapes(spec, config))
        warnings = [f"dropped {i.source}: {i.reason}" for i in plan.ignored if i.warn]
        hasher = start_hashing(ckpt.path)
        on_start(len(plan.tensors))

        sources = {t.target: t.source for t in plan.tensors}

        def written(tensor: PlannedTensor) -> None:
            source = sources[tensor.name]
            if source:
                ckpt.release(source)
            on_tensor(tensor.name)

        try:
            with atomic_directory(output, overwrite) as tmp:
                files = write_model_files(
                    tmp, planned_tensors(ckpt, plan), dtype, shard_bytes, written
                )
                config.save_pretrained(str(tmp))
                save_processor(tmp, spec)
                record = conversion_record(ckpt, spec, plan, hasher.digest(), dtype)
                (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
                files = sorted(p.name for p in tmp.iterdir())
        except OSError as exc:  # disk full, quota, vanished directory: the user's to fix
            raise OutputError(f"{output}: cannot write ({exc.strerror or exc})") from exc
    return ConversionResult(output, files, record, time.perf_counter() - started, warnings)
