"""What transformers' own classes make for a model spec: the reference the converter's
directly written files and tensor plan are held to (tests only; convert never imports this).

Built the way convert built these files before it stopped importing transformers: the config
class from the spec's numbers, `Owlv2ImageProcessor` in the version's processor class, and a
`CLIPTokenizer` loaded from vocab.json + merges.txt + tokenizer_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from owlvit_cli.convert import tokenizer_files as tok
from owlvit_cli.model.model_dir import FLAVORS, MERGES_FILE, TOKENIZER_CONFIG_FILE, VOCAB_FILE
from owlvit_cli.model.spec import ModelSpec


def classes(spec: ModelSpec) -> tuple[Any, Any, Any]:
    """(config class, detection model class, processor class) for the spec's version."""
    import transformers

    flavor = FLAVORS[spec.version]
    names = (flavor.config_class, flavor.model_class, flavor.processor_class)
    return tuple(getattr(transformers, name) for name in names)  # type: ignore[return-value]


def hf_config(spec: ModelSpec, dtype: str = "float32") -> Any:
    config_cls, model_cls, _ = classes(spec)
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
    )
    config.architectures = [model_cls.__name__]
    config.dtype = dtype
    return config


def meta_state_dict(spec: ModelSpec, dtype: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, dtype)} of a detection model built on the meta device (no memory)."""
    import torch

    _, model_cls, _ = classes(spec)
    with torch.device("meta"):
        model = model_cls(hf_config(spec, dtype)).to(getattr(torch, dtype))
    return {
        name: (tuple(t.shape), str(t.dtype).removeprefix("torch."))
        for name, t in model.state_dict().items()
    }


def tokenizer(directory: Path, spec: ModelSpec) -> Any:
    """The CLIPTokenizer transformers builds from vocab.json + merges.txt + our settings."""
    from transformers import CLIPTokenizer

    vocab = tok.clip_vocabulary()
    (directory / VOCAB_FILE).write_text(tok.vocab_json(vocab), encoding="utf-8")
    (directory / MERGES_FILE).write_text(tok.merges_txt(vocab), encoding="utf-8")
    settings = tok.tokenizer_config(FLAVORS[spec.version].processor_class)
    del settings["processor_class"], settings["backend"]  # what save_pretrained adds
    (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(settings))
    return CLIPTokenizer.from_pretrained(str(directory))


def processor(directory: Path, spec: ModelSpec) -> Any:
    from transformers import Owlv2ImageProcessor

    _, _, processor_cls = classes(spec)
    size = spec.vision.image_size
    image_processor = Owlv2ImageProcessor(size={"height": size, "width": size})
    return processor_cls(image_processor=image_processor, tokenizer=tokenizer(directory, spec))


def save_files(directory: Path, spec: ModelSpec, dtype: str) -> Path:
    """config + processor + tokenizer files as transformers' classes save them."""
    directory.mkdir(parents=True, exist_ok=True)
    hf_config(spec, dtype).save_pretrained(str(directory))
    processor(directory, spec).save_pretrained(str(directory))
    return directory
