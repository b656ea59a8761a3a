"""The non-weight files of a converted model: config, processor and tokenizer, as plain JSON.

They depend only on the model's spec and the weights dtype, so they are written directly,
never through transformers: importing it (and torch) costs seconds, for a few kilobytes of
JSON. Each file is what transformers' own classes save for the same numbers
(`OwlViTConfig`/`Owlv2Config`, `Owlv2ImageProcessor`, `OwlViTProcessor`/`Owlv2Processor`,
`CLIPTokenizer`); tests/convert/test_hf_files.py holds every file to that, field for field,
and builds a transformers model on the meta device for every variant to check that the
mapping fills exactly its tensors. `verify` and `detect` load strictly, so a transformers
release that reads these files differently fails loudly there (runtime/hf_model.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from owlvit_cli.model.model_dir import (
    CONFIG_FILE,
    FLAVORS,
    IMAGE_PROCESSOR_FILE,
    MERGES_FILE,
    PROCESSOR_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    VOCAB_FILE,
)
from owlvit_cli.model.spec import ModelSpec
from owlvit_cli.scenic.semantics import CLIP_LAYERNORM_EPSILON, CLIP_MEAN, CLIP_STD

# transformers' defaults for what the checkpoint does not determine (CLIP's values).
INITIALIZER = {"initializer_factor": 1.0, "initializer_range": 0.02}
TOWER_DEFAULTS = {
    "attention_dropout": 0.0,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": CLIP_LAYERNORM_EPSILON,
    **INITIALIZER,
}
LOGIT_SCALE_INIT = 2.6592
BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, as transformers stores `resample`
FORMAT_VERSION = "5.24.0"  # the transformers whose files these match, if none is installed


def transformers_version() -> str:
    """The installed transformers' version (from its metadata: no import)."""
    from importlib import metadata  # 40 ms of imports: paid in convert's side thread

    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return FORMAT_VERSION


def dtype_key(version: str) -> str:
    """transformers 4.56 renamed the config's `torch_dtype` to `dtype`."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def config_dict(spec: ModelSpec, dtype: str = "float32") -> dict[str, Any]:
    """config.json: every number from the derived spec (never from a hub config)."""
    flavor = FLAVORS[spec.version]
    v, t = spec.vision, spec.text
    version = transformers_version()
    text = {
        **TOWER_DEFAULTS,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 0,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "max_position_embeddings": t.max_position_embeddings,
        "model_type": f"{flavor.model_type}_text_model",
        "num_attention_heads": t.num_attention_heads,
        "num_hidden_layers": t.num_hidden_layers,
        "vocab_size": t.vocab_size,
    }
    vision = {
        **TOWER_DEFAULTS,
        "hidden_size": v.hidden_size,
        "image_size": v.image_size,
        "intermediate_size": v.intermediate_size,
        "model_type": f"{flavor.model_type}_vision_model",
        "num_attention_heads": v.num_attention_heads,
        "num_channels": 3,
        "num_hidden_layers": v.num_hidden_layers,
        "patch_size": v.patch_size,
    }
    return {
        "architectures": [flavor.model_class],
        dtype_key(version): dtype,
        "initializer_factor": INITIALIZER["initializer_factor"],
        "logit_scale_init_value": LOGIT_SCALE_INIT,
        "model_type": flavor.model_type,
        "projection_dim": spec.projection_dim,
        "text_config": text,
        "transformers_version": version,
        "vision_config": vision,
    }


def image_processor_dict(spec: ModelSpec) -> dict[str, Any]:
    """`Owlv2ImageProcessor` for both versions: it pads bottom/right to a square and resizes
    with anti-aliasing, as scenic does; the stock v1 processor stretches instead (it pads
    with 0.0 where scenic pads with 0.5: docs/scenic-differences.md)."""
    size = spec.vision.image_size
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(CLIP_MEAN),
        "image_processor_type": "Owlv2ImageProcessor",
        "image_std": list(CLIP_STD),
        "resample": BILINEAR,
        "rescale_factor": 1 / 255,
        "size": {"height": size, "width": size},
    }


def processor_dict(spec: ModelSpec) -> dict[str, Any]:
    processor_class = FLAVORS[spec.version].processor_class
    return {"image_processor": image_processor_dict(spec), "processor_class": processor_class}


def legacy_image_processor_dict(spec: ModelSpec) -> dict[str, Any]:
    """preprocessor_config.json, where transformers 4.x reads the image processor from."""
    processor_class = FLAVORS[spec.version].processor_class
    return {**image_processor_dict(spec), "processor_class": processor_class}


def model_file_writers(spec: ModelSpec, dtype: str) -> dict[str, Callable[[], str]]:
    """{file name: what makes its text}; the tokenizer's are the slow ones (~0.2 s)."""
    from owlvit_cli.convert import tokenizer_files as tok  # imported in the thread that uses it

    processor_class = FLAVORS[spec.version].processor_class
    return {
        CONFIG_FILE: lambda: _json(config_dict(spec, dtype)),
        PROCESSOR_FILE: lambda: _json(processor_dict(spec)),
        IMAGE_PROCESSOR_FILE: lambda: _json(legacy_image_processor_dict(spec)),
        TOKENIZER_CONFIG_FILE: lambda: _json(tok.tokenizer_config(processor_class)),
        VOCAB_FILE: lambda: tok.vocab_json(tok.clip_vocabulary()),
        MERGES_FILE: lambda: tok.merges_txt(tok.clip_vocabulary()),
        TOKENIZER_FILE: lambda: tok.tokenizer_json(tok.clip_vocabulary()),
    }


def write_hf_files(directory: Path, spec: ModelSpec, dtype: str) -> list[str]:
    """Write config, processor and tokenizer files into `directory`; their names."""
    writers = model_file_writers(spec, dtype)
    for name, text in writers.items():
        (directory / name).write_text(text(), encoding="utf-8")
    return list(writers)


def _json(data: dict[str, Any]) -> str:
    """As transformers' `to_json_string` formats its files."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
