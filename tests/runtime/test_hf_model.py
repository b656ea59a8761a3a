"""Loading a converted model for verify and detect is strict: whatever transformers would
fill at random, drop, or read differently from config.json is an error naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from owlvit_cli.errors import ModelDirError
from owlvit_cli.model.model_dir import CONFIG_FILE, WEIGHTS_FILE
from owlvit_cli.runtime.hf_model import load_hf_model
from owlvit_cli.verify.inputs import sample_image_path
from tests.helpers import run_console_script

RENAMED = "owlv2.text_model.final_layer_norm.weight"


@pytest.fixture
def model_dir(converted, tiny_checkpoint, tmp_path: Path) -> Path:
    """A private copy of a converted v2 model, free to damage."""
    return Path(shutil.copytree(converted(tiny_checkpoint("v2-tiny")), tmp_path / "model"))


def rename_tensor(directory: Path, old: str, new: str) -> None:
    tensors = load_file(directory / WEIGHTS_FILE)
    tensors[new] = tensors.pop(old)
    save_file(tensors, directory / WEIGHTS_FILE, metadata={"format": "pt"})


def edit_config(directory: Path, part: str, key: str, value: object) -> None:
    config = json.loads((directory / CONFIG_FILE).read_text())
    (config[part] if part else config)[key] = value
    (directory / CONFIG_FILE).write_text(json.dumps(config))


def test_a_converted_model_loads_strictly(model_dir: Path):
    assert type(load_hf_model(model_dir)).__name__ == "Owlv2ForObjectDetection"


def test_renamed_tensor_is_named_missing_and_unexpected(model_dir: Path):
    """What a transformers release renaming a parameter looks like from the files' side."""
    rename_tensor(model_dir, RENAMED, "owlv2.text_model.final_norm.weight")
    with pytest.raises(ModelDirError) as error:
        load_hf_model(model_dir)
    message = str(error.value)
    assert "do not load strictly into Owlv2ForObjectDetection" in message
    assert f"weights lack (1): {RENAMED}" in message
    assert "model does not have (1): owlv2.text_model.final_norm.weight" in message


@pytest.mark.parametrize(
    ("part", "key", "value", "named"),
    [
        ("text_config", "model_type", "clip_text_model", "text_config.model_type"),
        ("", "model_type", "owlv2", None),  # unchanged: loads
    ],
)
def test_config_field_transformers_rewrites_is_named(
    model_dir: Path, part: str, key: str, value: object, named: str | None
):
    edit_config(model_dir, part, key, value)
    if named is None:
        load_hf_model(model_dir)
        return
    with pytest.raises(ModelDirError, match=rf"reads these fields differently.*{named}"):
        load_hf_model(model_dir)


def test_detect_refuses_a_model_that_does_not_load_strictly(model_dir: Path):
    rename_tensor(model_dir, RENAMED, "owlv2.text_model.final_norm.weight")
    proc = run_console_script("detect", model_dir, sample_image_path(), "--query", "a cat")
    assert proc.returncode == 2, proc.stderr
    assert RENAMED in proc.stderr and "Traceback" not in proc.stderr
