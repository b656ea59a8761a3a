"""A converted model directory: what it holds, whether it is one, and whether it is complete.

Reads the files `owlvit convert` writes (and `owlvit verify --record` adds) without loading
any model, so that a push can be planned, and refused, before the first request; any other
command can call `read_model_dir` or `check_complete` for the same answers.
"""

from __future__ import annotations

import os
import re
import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owlvit_cli.errors import ModelDirError, OwlvitError
from owlvit_cli.input_files import is_regular_file, open_regular, read_json_file
from owlvit_cli.json_text import parse_json

# --------------------------------------------------------------------------------------------
# The contract: every file name and every name that differs between OWL versions, once.

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = "5GB"  # weights above it are sharded, as transformers' save_pretrained
RECORD_FILE = "owlvit_conversion.json"
VERIFICATION_FILE = "owlvit_verification.json"
# What transformers' processor and tokenizer classes read (convert writes them directly; older
# transformers versions also wrote the last two tokenizer files).
PROCESSOR_FILE = "processor_config.json"
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"  # the image processor alone (transformers 4.x)
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
VOCAB_FILES = (VOCAB_FILE, MERGES_FILE)
TOKENIZER_FILES = (
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    *VOCAB_FILES,
    "special_tokens_map.json",
    "added_tokens.json",
)
PROCESSOR_FILES = (IMAGE_PROCESSOR_FILE, PROCESSOR_FILE)
TOOL_NAME = "owlvit"


@dataclass(frozen=True)
class Flavor:
    """The names transformers and the Hub use for one OWL version."""

    version: int
    display_name: str  # for people: "OWL-ViT", "OWLv2"
    model_type: str  # config.json's model_type, the Hub tag and the state-dict prefix
    config_class: str
    model_class: str
    processor_class: str


FLAVORS: dict[int, Flavor] = {
    1: Flavor(
        1, "OWL-ViT", "owlvit", "OwlViTConfig", "OwlViTForObjectDetection", "OwlViTProcessor"
    ),
    2: Flavor(2, "OWLv2", "owlv2", "Owlv2Config", "Owlv2ForObjectDetection", "Owlv2Processor"),
}
MODEL_TYPES = {flavor.model_type: version for version, flavor in FLAVORS.items()}
MODEL_NAMES = {version: flavor.display_name for version, flavor in FLAVORS.items()}

# The three checkpoint layouts found in the wild (docs/checkpoints.md lists them).
LAYOUT_DESCRIPTIONS = {
    "v1": "released v1 (optimizer/target, resblocks.N, ln_1/ln_2)",
    "v2": "released v2 (params, resblocks.N, ln_0/ln_1)",
    "current": "current scenic (params, resblocks_N, ln_0/ln_1)",
}

# --------------------------------------------------------------------------------------------
# The model directory


@dataclass
class ModelDir:
    """What `owlvit convert` left in a directory, read and checked once."""

    path: Path
    config: dict[str, Any]
    version: int
    weights: list[str]
    record: dict[str, Any] | None
    verification: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)


def read_model_dir(hf_dir: Path, *, force: bool = False) -> ModelDir:
    """Refuse anything that is not a converted model; `force` only waives the conversion record.

    The record is what lets the card name the source checkpoint and its sha256, which is the
    point of publishing through this tool; a directory without it may still be a valid
    transformers model (e.g. converted by hand), hence the escape hatch.
    """
    config, version, weights = check_model_dir(hf_dir)

    warnings_: list[str] = []
    record_path = hf_dir / RECORD_FILE
    record: dict[str, Any] | None = None
    if not is_regular_file(record_path, ModelDirError):
        if not force:
            raise ModelDirError(
                f"{hf_dir} has no {RECORD_FILE}, so it was not written by `owlvit convert`",
                hint="pass --force to push it anyway",
            )
        warnings_.append(f"no {RECORD_FILE}: the card cannot name the source checkpoint")
    else:
        try:
            record = read_json(record_path, ModelDirError)
            _check_record(record, record_path, version)
        except ModelDirError as exc:
            if not force:
                raise ModelDirError(str(exc), hint="pass --force to push anyway") from None
            warnings_.append(f"ignoring {RECORD_FILE}: {exc}")
            record = None

    verification: dict[str, Any] | None = None
    verification_path = hf_dir / VERIFICATION_FILE
    if is_regular_file(verification_path, ModelDirError):
        try:
            verification = read_json(verification_path, ModelDirError)
        except ModelDirError as exc:
            warnings_.append(f"ignoring {VERIFICATION_FILE}: {exc}")
    model_dir = ModelDir(hf_dir, config, version, weights, record, verification, warnings_)
    model_dir.warnings += verification_warnings(model_dir)
    return model_dir


def check_model_dir(hf_dir: Path) -> tuple[dict[str, Any], int, list[str]]:
    """(config, OWL version, weight files) of a directory transformers can load as an OWL
    model, or one line saying what is missing: every command's first look at HF_DIR."""
    if not hf_dir.exists():
        raise ModelDirError(f"{hf_dir}: no such directory")
    if not hf_dir.is_dir():
        raise ModelDirError(f"{hf_dir} is not a directory")
    config_path = hf_dir / CONFIG_FILE
    if not is_regular_file(config_path, ModelDirError):
        raise ModelDirError(
            f"{hf_dir} has no {CONFIG_FILE}; it is not a directory written by `owlvit convert`"
        )
    config = read_json(config_path, ModelDirError)
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ModelDirError(
            f"{config_path} has model_type {model_type!r}; expected one of {sorted(MODEL_TYPES)}"
        )
    weights = weight_files(hf_dir)
    check_complete(hf_dir, weights)
    return config, MODEL_TYPES[model_type], weights


def read_json(path: Path, error: type[OwlvitError]) -> dict[str, Any]:
    data = read_json_file(path, error=error)
    if not isinstance(data, dict):
        raise error(f"{path} does not hold a JSON object")
    return data


def weight_files(hf_dir: Path) -> list[str]:
    """The weight files, checked to exist (a sharded index must not point at missing shards)."""
    if is_regular_file(hf_dir / WEIGHTS_FILE, ModelDirError):
        return [WEIGHTS_FILE]
    index_path = hf_dir / WEIGHTS_INDEX_FILE
    if not is_regular_file(index_path, ModelDirError):
        raise ModelDirError(f"{hf_dir} has no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE}")
    index = read_json(index_path, ModelDirError)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelDirError(f"{index_path} has no weight_map")
    shards = sorted(set(map(str, weight_map.values())))
    outside = [shard for shard in shards if not _names_a_file_inside(shard)]
    if outside:
        raise ModelDirError(
            f"{index_path} lists shard(s) outside the model directory: "
            f"{', '.join(map(repr, outside))}; a shard must be a path inside it (a published "
            "copy would point at nothing)"
        )
    missing = [shard for shard in shards if not is_regular_file(hf_dir / shard, ModelDirError)]
    if missing:
        raise ModelDirError(f"{index_path} lists missing shard(s): {', '.join(missing)}")
    return [WEIGHTS_INDEX_FILE, *shards]


def _names_a_file_inside(name: str) -> bool:
    """A relative path that stays in the directory as written (transformers and the Hub join
    it to the model's own folder): no absolute path, no `..`, no backslash, no empty part."""
    parts = name.split("/")
    return (
        bool(name)
        and "\\" not in name
        and not name.startswith("/")
        and not ({"", ".", ".."} & set(parts))
    )


# --------------------------------------------------------------------------------------------
# Completeness: what transformers needs to load the model, checked without transformers

# The safetensors format: an 8-byte little-endian header length, a JSON header, the data.
# The library refuses headers over 100 MB; so do we, before reading one.
SAFETENSORS_MAX_HEADER = 100_000_000


def check_complete(hf_dir: Path, weights: list[str] | None = None) -> None:
    """Refuse a directory transformers could not load: empty or truncated weights, a config
    that does not parse, no tokenizer or no processor files.

    `weights` are the weight files `read_model_dir` found (found again when not given).
    """
    read_json(hf_dir / CONFIG_FILE, ModelDirError)
    for name in weights if weights is not None else weight_files(hf_dir):
        if name.endswith(".safetensors"):
            check_safetensors(hf_dir / name)
    missing_tokenizer = (
        [TOKENIZER_CONFIG_FILE] if not (hf_dir / TOKENIZER_CONFIG_FILE).is_file() else []
    )
    if not (hf_dir / TOKENIZER_FILE).is_file():
        missing_tokenizer += [name for name in VOCAB_FILES if not (hf_dir / name).is_file()]
    if missing_tokenizer:
        raise ModelDirError(
            f"{hf_dir} has no tokenizer: {', '.join(missing_tokenizer)} missing "
            f"(needs {TOKENIZER_CONFIG_FILE}, and {TOKENIZER_FILE} or "
            f"{' + '.join(VOCAB_FILES)})"
        )
    processor = [hf_dir / name for name in PROCESSOR_FILES if (hf_dir / name).is_file()]
    if not processor:
        raise ModelDirError(f"{hf_dir} has no image processor ({' or '.join(PROCESSOR_FILES)})")
    for path in [hf_dir / TOKENIZER_CONFIG_FILE, *processor]:
        read_json(path, ModelDirError)


def read_safetensors_header(path: Path) -> tuple[int, int, Any]:
    """(file size, header length, parsed header) of a safetensors file, the header length
    checked against the file and the format's limit before the header is read."""
    fd = open_regular(path, ModelDirError)
    try:
        with open(fd, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            prefix = file.read(8)
            header_size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            if header_size is None or not 0 < header_size <= min(SAFETENSORS_MAX_HEADER, size - 8):
                raise ModelDirError(
                    f"{path} is not a safetensors file ({size} bytes, no valid header)"
                )
            text = file.read(header_size)
    except OSError as exc:
        raise ModelDirError(f"cannot read {path}: {exc.strerror or exc}") from None
    return (
        size,
        header_size,
        parse_json(text, f"{path} has a corrupt safetensors header", ModelDirError),
    )


def check_safetensors(path: Path) -> None:
    """A non-empty file whose header parses and whose tensors fill the data exactly."""
    size, header_size, header = read_safetensors_header(path)
    tensors = (
        {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else {}
    )
    ends = [
        entry["data_offsets"][1]
        for entry in tensors.values()
        if isinstance(entry, dict)
        and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2
    ]
    if not tensors or len(ends) != len(tensors):
        raise ModelDirError(f"{path} holds no tensors (or a corrupt safetensors header)")
    if max(ends) != size - 8 - header_size:
        raise ModelDirError(
            f"{path} is truncated or padded: its header describes {max(ends)} bytes of data, "
            f"the file holds {size - 8 - header_size}"
        )


def model_files(model_dir: ModelDir) -> list[str]:
    """The files that make up the converted model, as present in its directory: what a
    `push` uploads by default (README.md last: it is the most likely to be rejected)."""
    names = [
        CONFIG_FILE,
        *model_dir.weights,
        *TOKENIZER_FILES,
        *PROCESSOR_FILES,
        RECORD_FILE,
        VERIFICATION_FILE,
    ]
    present = [name for name in dict.fromkeys(names) if (model_dir.path / name).is_file()]
    return [*present, CARD_FILE] if (model_dir.path / CARD_FILE).is_file() else present


def _check_record(record: dict[str, Any], path: Path, version: int) -> None:
    if record.get("tool") != TOOL_NAME:
        raise ModelDirError(f"{path} was not written by owlvit (tool={record.get('tool')!r})")
    source = record.get("source")
    if not isinstance(source, dict) or not source.get("sha256"):
        raise ModelDirError(f"{path} does not name the source checkpoint's sha256")
    if record.get("version") not in (None, version):
        raise ModelDirError(
            f"{path} says version {record.get('version')} but {CONFIG_FILE} is "
            f"{MODEL_NAMES[version]} (version {version})"
        )


def verification_state(model_dir: ModelDir) -> str:
    """ "passed", "failed", "missing" or "mismatch" (a record for another checkpoint)."""
    if model_dir.verification is None:
        return "missing"
    if verification_mismatch(model_dir):
        return "mismatch"
    return "passed" if model_dir.verification.get("passed") is True else "failed"


def verification_warnings(model_dir: ModelDir) -> list[str]:
    verification = model_dir.verification
    if verification is None:
        return [
            f"no {VERIFICATION_FILE}: the card will say 'not verified'; record one with "
            + verify_command(model_dir)
        ]
    out = []
    local = sorted(k for k, v in verification.items() if isinstance(v, str) and _is_abs_path(v))
    if local:  # `owlvit verify --record` stores where things were on this machine
        out.append(f"{VERIFICATION_FILE} holds local paths ({', '.join(local)}); they get uploaded")
    if verification_mismatch(model_dir):
        out.append(f"{VERIFICATION_FILE} is for a different checkpoint than {RECORD_FILE}")
    elif verification.get("passed") is not True:
        out.append(f"{VERIFICATION_FILE} records a FAILED verification")
    return out


def verify_command(model_dir: ModelDir) -> str:
    """The one command that verifies this directory and records the result, naming the
    checkpoint where the conversion record says it was (when it is still there)."""
    checkpoint = source_checkpoint(model_dir)
    command = f"`owlvit verify {shlex.quote(str(checkpoint or 'CKPT'))} "
    command += f"{shlex.quote(str(model_dir.path))}`"
    name = record_source(model_dir).get("file")
    if checkpoint is None and isinstance(name, str) and name.isprintable():
        command += f" (CKPT: the {name} it was converted from)"
    return command


def source_checkpoint(model_dir: ModelDir) -> Path | None:
    """The converted checkpoint, found from the record's path (relative to the directory)."""
    relative = record_source(model_dir).get("path")
    if not isinstance(relative, str) or not relative or not relative.isprintable():
        return None
    for base in (str(model_dir.path), os.path.realpath(model_dir.path)):
        candidate = Path(os.path.normpath(os.path.join(base, relative)))
        if candidate.exists():
            return candidate
    return None


def _is_abs_path(value: str) -> bool:
    return value.startswith(("/", "~")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))


def verification_mismatch(model_dir: ModelDir) -> bool:
    verified = (model_dir.verification or {}).get("checkpoint_sha256")
    source = record_source(model_dir).get("sha256")
    return bool(verified and source and verified != source)


def record_source(model_dir: ModelDir) -> dict[str, Any]:
    source = (model_dir.record or {}).get("source")
    return source if isinstance(source, dict) else {}
