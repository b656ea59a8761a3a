"""The model card `push` uploads: metadata for the Hub, provenance, verification, usage."""

from __future__ import annotations

from typing import Any

from owlvit_cli.model.model_dir import (
    FLAVORS,
    LAYOUT_DESCRIPTIONS,
    MODEL_NAMES,
    RECORD_FILE,
    VERIFICATION_FILE,
    ModelDir,
    record_source,
    verification_mismatch,
)
from owlvit_cli.publish.card_usage import (
    PAPERS,
    PIPELINE_TAG,
    card_caveats,
    card_citations,
    card_usage,
)
from owlvit_cli.version import __version__

DEFAULT_LICENSE = "apache-2.0"


# --------------------------------------------------------------------------------------------
# The model card


def card_tags(version: int) -> list[str]:
    return [FLAVORS[version].model_type, "vision", "object-detection", PIPELINE_TAG]


def build_card(model_dir: ModelDir, repo_id: str, license_: str, *, forced: bool = False) -> str:
    """The README.md: Hub metadata plus provenance, config, verification, usage, the ways it
    differs from scenic, and citations. `forced`: a FAILED verification published on --force.

    Nothing time-dependent goes in (no push date), so pushing the same directory twice
    produces the same card and the second push is a no-op on the Hub.
    """
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        license=license_,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=card_tags(model_dir.version),
    )
    body = "\n".join(
        [
            *_card_intro(model_dir),
            *_card_source(model_dir),
            *_card_config(model_dir),
            *_card_verification(model_dir, forced),
            *card_usage(model_dir, repo_id),
            *card_caveats(model_dir),
            *card_citations(model_dir.version),
        ]
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _cell(value: Any) -> str:
    text = "—" if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _card_intro(model_dir: ModelDir) -> list[str]:
    name = MODEL_NAMES[model_dir.version]
    title, arxiv = PAPERS[model_dir.version][:2]
    source_file = record_source(model_dir).get("file")
    heading = f"# {name}" + (f": `{source_file}`" if source_file else "")
    return [
        heading,
        "",
        f"{name} ([{title}](https://arxiv.org/abs/{arxiv})) is an open-vocabulary object "
        "detector: give it an image and free-text queries, and it returns boxes for them.",
        "",
        "These weights were converted from a Google "
        "[scenic](https://github.com/google-research/scenic/tree/main/scenic/projects/owl_vit) "
        "Flax checkpoint to Hugging Face transformers with "
        f"[owlvit](https://pypi.org/project/owlvit-cli/) "
        f"{(model_dir.record or {}).get('tool_version', __version__)}.",
        "",
    ]


def _card_source(model_dir: ModelDir) -> list[str]:
    record = model_dir.record
    if record is None:
        return [
            "## Source checkpoint",
            "",
            f"Unknown: the directory had no `{RECORD_FILE}` conversion record.",
            "",
        ]
    source = record_source(model_dir)
    size = source.get("size")
    rows = [
        ("file", f"`{source.get('file')}`" if source.get("file") else None),
        ("size", f"{size:,} bytes" if isinstance(size, int) else size),
        ("sha256", f"`{source.get('sha256')}`"),
        ("layout", LAYOUT_DESCRIPTIONS.get(record.get("layout"), record.get("layout"))),
        ("dtype", record.get("dtype")),
        ("converted", record.get("created")),
    ]
    libraries = record.get("libraries")
    if isinstance(libraries, dict) and libraries:
        rows.append(("libraries", ", ".join(f"{k} {v}" for k, v in sorted(libraries.items()))))
    lines = ["## Source checkpoint", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows]
    ignored = record.get("ignored")
    if isinstance(ignored, list) and ignored:
        lines += ["", "Checkpoint entries not converted (not part of the transformers model):", ""]
        for item in ignored:
            if isinstance(item, dict):
                lines.append(f"- `{item.get('path')}`: {item.get('reason', '')}".rstrip(": "))
    return [*lines, ""]


def _config_summary(model_dir: ModelDir) -> dict[str, Any]:
    """The derived config: the record's (from tensor shapes), else config.json's."""
    derived = (model_dir.record or {}).get("config")
    if isinstance(derived, dict) and "vision" in derived:
        return derived
    config = model_dir.config
    return {
        "vision": config.get("vision_config") or {},
        "text": config.get("text_config") or {},
        "projection_dim": config.get("projection_dim"),
        "objectness_head": model_dir.version == 2,
    }


def _card_config(model_dir: ModelDir) -> list[str]:
    summary = _config_summary(model_dir)
    vision = summary.get("vision") if isinstance(summary.get("vision"), dict) else {}
    text = summary.get("text") if isinstance(summary.get("text"), dict) else {}
    rows = [
        ("width", "hidden_size", "hidden_size"),
        ("layers", "num_hidden_layers", "num_hidden_layers"),
        ("attention heads", "num_attention_heads", "num_attention_heads"),
        ("MLP size", "intermediate_size", "intermediate_size"),
        ("patch size", "patch_size", None),
        ("image size", "image_size", None),
        ("context length", None, "max_position_embeddings"),
        ("vocabulary", None, "vocab_size"),
    ]
    lines = ["## Configuration", "", "| | vision | text |", "|---|---|---|"]
    for label, vision_key, text_key in rows:
        v = vision.get(vision_key) if vision_key else None
        t = text.get(text_key) if text_key else None
        lines.append(f"| {label} | {_cell(v)} | {_cell(t)} |")
    objectness = "yes" if summary.get("objectness_head") else "no"
    lines += [
        "",
        f"Joint embedding size {_cell(summary.get('projection_dim'))}; "
        f"objectness head: {objectness}.",
        "",
    ]
    return lines


def _card_verification(model_dir: ModelDir, forced: bool) -> list[str]:
    verification = model_dir.verification
    lines = ["## Verification", ""]
    if verification is None:
        return [
            *lines,
            "**Not verified.** This conversion was not checked numerically against the "
            f"original scenic model (no `{VERIFICATION_FILE}` was published with it). "
            "Run `owlvit verify` on the source checkpoint before relying on these weights.",
            "",
        ]
    if verification_mismatch(model_dir):
        return [
            *lines,
            "**Not verified.** The verification record found next to the weights was made "
            f"for a different checkpoint (sha256 `{verification.get('checkpoint_sha256')}`), "
            "so it says nothing about these weights.",
            "",
        ]
    passed = verification.get("passed") is True
    verdict = "**Passed**" if passed else "**FAILED**"
    sha = verification.get("checkpoint_sha256")
    dtype = verification.get("dtype")
    lines += [
        f"{verdict}: outputs of these transformers weights were compared with the original "
        "scenic Flax model on the same inputs"
        + (f", in {dtype}" if isinstance(dtype, str) and dtype else "")
        + (f" (checkpoint sha256 `{sha}`)." if sha else "."),
        "",
    ]
    if forced and not passed:
        lines += [
            "**Published despite the failed verification** (`owlvit push --force`): the rows "
            "marked FAIL below exceeded their tolerance; do not rely on these weights for "
            "scenic-exact results.",
            "",
        ]
    lines += _verification_table(verification.get("outputs"))
    return lines


def _verification_table(outputs: Any) -> list[str]:
    """One row per compared output: "info" where no tolerance applied (informational rows
    are reported, not judged), pass/FAIL where one did."""
    rows = [row for row in outputs if isinstance(row, dict)] if isinstance(outputs, list) else []
    if not rows:
        return []
    lines = ["| output | level | max abs difference | tolerance | result |"]
    lines += ["|---|---|---|---|---|"]
    for row in rows:
        tolerance = row.get("tolerance")
        if not isinstance(tolerance, (int, float)):
            result = "info"
        else:
            result = "pass" if row.get("passed") is True else "FAIL"
        note = f" ({row['note']})" if row.get("note") else ""
        lines.append(
            f"| {_cell(row.get('name'))} | {_cell(row.get('level'))} "
            f"| {_cell(_number(row.get('max_abs')))} | {_cell(_number(tolerance))} "
            f"| {_cell(result + note)} |"
        )
    return [*lines, ""]


def _number(value: Any) -> Any:
    return f"{value:.3g}" if isinstance(value, float) else value
