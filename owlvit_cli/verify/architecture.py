"""Is HF_DIR the same architecture as the checkpoint? Different architectures are bad input
(exit 2), not a numerical mismatch, and are said before any model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from owlvit_cli.errors import ModelDirError
from owlvit_cli.model.spec import ModelSpec


def check_same_architecture(
    spec: ModelSpec, hf_dir: Path, found: dict[str, Any] | None = None
) -> None:
    """Different architectures are bad input (exit 2), not a numerical mismatch. `found` is
    HF_DIR's config as `check_model_dir` read it (read again when not given)."""
    from owlvit_cli.convert.hf_files import config_dict
    from owlvit_cli.model.model_dir import check_model_dir

    if found is None:
        found, _, _ = check_model_dir(hf_dir)
    expected = config_dict(spec)
    keys = {
        "vision_config": (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "patch_size",
            "image_size",
        ),
        "text_config": (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "vocab_size",
        ),
    }
    diffs = [
        f"{part}.{key} {found.get(part, {}).get(key)} ≠ {expected[part][key]}"
        for part, names in keys.items()
        for key in names
        if found.get(part, {}).get(key) != expected[part][key]
    ]
    if found.get("model_type") != expected["model_type"]:
        diffs.insert(0, f"model_type {found.get('model_type')} ≠ {expected['model_type']}")
    if found.get("projection_dim") != expected["projection_dim"]:
        diffs.append(f"projection_dim {found.get('projection_dim')} ≠ {spec.projection_dim}")
    if diffs:
        raise ModelDirError(
            f"{hf_dir} is not the same architecture as the checkpoint (model vs checkpoint): "
            + ", ".join(diffs[:5])
        )
