"""What HF_DIR says about itself before any model loads: which file it was converted from,
and the dtype its weights are stored in.

Verifying a directory against a checkpoint it was not converted from can only end in numeric
failures that read like a mapping bug. The conversion record names the source's size and
sha256, so a wrong pairing is caught first, in a stat() for a size mismatch, and reported
as what it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from owlvit_cli.errors import ModelDirError
from owlvit_cli.input_files import is_regular_file
from owlvit_cli.model.dtypes import SAFETENSORS_DTYPES
from owlvit_cli.model.model_dir import (
    RECORD_FILE,
    read_json,
    read_safetensors_header,
    weight_files,
)

SHORT_SHA = 12


def read_record(hf_dir: Path) -> dict[str, Any] | None:
    """The conversion record, or None when HF_DIR has none (converted by other means)."""
    path = hf_dir / RECORD_FILE
    if not is_regular_file(path, ModelDirError):
        return None
    return read_json(path, ModelDirError)


def stored_dtype(
    hf_dir: Path, record: dict[str, Any] | None, weights: list[str] | None = None
) -> tuple[str, str]:
    """(dtype, where it was read): the record's `dtype`, else the first weights file's
    safetensors header. `weights` are the weight files `check_model_dir` found (found again
    when not given).

    The header is what transformers reads too, so a directory without a record (or with a
    record from an older tool) still gets the right tolerances."""
    if record is not None and record.get("dtype") in SAFETENSORS_DTYPES:
        return record["dtype"], RECORD_FILE
    names_found = weight_files(hf_dir) if weights is None else weights
    path = hf_dir / next(name for name in names_found if name.endswith(".safetensors"))
    _, _, header = read_safetensors_header(path)
    found = {
        entry.get("dtype")
        for name, entry in (header if isinstance(header, dict) else {}).items()
        if name != "__metadata__" and isinstance(entry, dict)
    }
    dtype_names = {code: name for name, code in SAFETENSORS_DTYPES.items()}
    names = sorted(dtype_names.get(str(code), str(code)) for code in found)
    if len(names) != 1 or names[0] not in SAFETENSORS_DTYPES:
        raise ModelDirError(f"{path}: expected one float dtype among the weights, found {names}")
    return names[0], f"{path.name} header"


def check_source(
    checkpoint: Path, hf_dir: Path, record: dict[str, Any] | None
) -> tuple[dict[str, Any], str | None]:
    """(the report's `source` block, the checkpoint's sha256 when it was computed).

    Size first (a stat), so a wrong file of another size is told apart at once; the sha256
    only when the sizes agree and the record has one (remembered per file identity, so a
    `convert --verify` that just hashed the file does not hash it again)."""
    from owlvit_cli.checkpoint.hashing import start_hashing, total_size

    # A directory (Orbax) counts as its files together, as convert recorded it.
    actual: dict[str, Any] = {"file": checkpoint.name, "size": total_size(checkpoint)}
    block: dict[str, Any] = {
        "record": RECORD_FILE if record is not None else None,
        "checkpoint": actual,
    }
    source = (record or {}).get("source")
    if not isinstance(source, dict):
        block["matches"] = None
        block["message"] = (
            f"{hf_dir.name} has no {RECORD_FILE}: cannot tell which file it was converted from"
            if record is None
            else f"{RECORD_FILE} does not name its source file"
        )
        return block, None
    expected = {key: source.get(key) for key in ("file", "size", "sha256")}
    block["expected"] = expected
    digest = None
    if expected["size"] is not None and expected["size"] != actual["size"]:
        block["matches"] = False
        block["message"] = mismatch_message(hf_dir, expected, actual, "size")
        return block, None
    if expected["sha256"]:
        digest = start_hashing(checkpoint).digest()
        actual["sha256"] = digest
        if digest != expected["sha256"]:
            block["matches"] = False
            block["message"] = mismatch_message(hf_dir, expected, actual, "sha256")
            return block, digest
    checked = "size and sha256" if expected["sha256"] else "size"
    block["matches"] = True
    block["message"] = f"{hf_dir.name} was converted from this file ({checked} match)"
    return block, digest


def mismatch_message(
    hf_dir: Path, expected: dict[str, Any], actual: dict[str, Any], what: str
) -> str:
    """'HF_DIR was converted from X (sha256 d7f5…), not this file (sha256 …)'."""

    def describe(side: dict[str, Any]) -> str:
        if what == "size":
            return f"{side['size']:,} bytes"
        return f"sha256 {str(side.get('sha256'))[:SHORT_SHA]}…"

    return (
        f"{hf_dir.name} was converted from {expected.get('file')} ({describe(expected)}), "
        f"not this file {actual['file']} ({describe(actual)}); "
        "pass --ignore-source to compare them anyway"
    )
