"""A released checkpoint's name or a URL given as CKPT: one line with the command that
downloads it, the URL intact, exit 2, in every command that takes CKPT; a local file of that
name is read as usual."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from owlvit_cli.checkpoint.released import BUCKET_URL, RELEASED_NAMES
from tests.helpers import run_console_script

CHECKPOINTS_PAGE = Path(__file__).parents[2] / "docs" / "checkpoints.md"
NAME = "clip_vit_b32_b0203fc"
HTTPS = BUCKET_URL + NAME
GS = "gs://scenic-bucket/owl_vit/checkpoints/owl2-b16-960-st-ngrams_c7e1b9a"

# (CKPT as typed, the command the one line must end with)
CASES = [
    (NAME, f"curl -LO {HTTPS}"),
    (HTTPS, f"curl -LO {HTTPS}"),
    (GS, f"gsutil cp {GS} ."),
]


def command_line(command: str, ckpt: str, tmp_path: Path) -> list[str]:
    return {
        "inspect": ["inspect", ckpt],
        "convert": ["convert", ckpt, str(tmp_path / "out")],
        "verify": ["verify", ckpt, str(tmp_path / "hf")],
    }[command]


@pytest.mark.parametrize("command", ["inspect", "convert", "verify"])
@pytest.mark.parametrize(("ckpt", "download"), CASES, ids=["name", "https", "gs"])
def test_download_command_instead_of_no_such_file(
    command: str, ckpt: str, download: str, tmp_path: Path
):
    result = run_console_script(*command_line(command, ckpt, tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {ckpt}") and lines[0].endswith(
        f"download it first: {download}"
    )
    assert "https:/storage" not in result.stderr  # the URL is not folded like a path
    as_json = run_console_script(*command_line(command, ckpt, tmp_path), "--json")
    error = json.loads(as_json.stdout)["error"]
    assert as_json.returncode == 2 and error["message"] == lines[0].removeprefix("error: ")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_name_in_a_directory_downloads_there(tmp_path: Path):
    wanted = tmp_path / "ckpts" / NAME
    result = run_console_script("inspect", wanted)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"curl -L -o {wanted} {HTTPS}")


def test_a_local_file_of_a_released_name_is_read(tiny_checkpoint, tmp_path: Path):
    local = tmp_path / NAME
    shutil.copy(tiny_checkpoint(), local)
    result = run_console_script("inspect", local, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["file"] == str(local)


def test_other_missing_files_still_say_no_such_file(tmp_path: Path):
    result = run_console_script("inspect", tmp_path / "clip_vit_b32")
    assert result.returncode == 2 and "no such file" in result.stderr
    assert "download" not in result.stderr


def test_the_docs_table_names_the_released_checkpoints():
    """The docs' table of released checkpoints and the code's agree, name for name."""
    text = CHECKPOINTS_PAGE.read_text(encoding="utf-8")
    section = text.split("## Released checkpoints", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| OWL")]
    in_docs = {name for row in rows for name in re.findall(r"`([^`]+)`", row)}
    assert in_docs == RELEASED_NAMES


def test_the_python_api_says_the_same(tmp_path: Path):
    from owlvit_cli import api
    from owlvit_cli.errors import CheckpointError

    calls = {
        "inspect": lambda: api.inspect_checkpoint(HTTPS),
        "plan": lambda: api.plan_conversion(HTTPS, tmp_path / "out"),
        "convert": lambda: api.convert_checkpoint(HTTPS, tmp_path / "out"),
        "verify": lambda: api.verify_conversion(HTTPS, tmp_path / "hf"),
    }
    for name, call in calls.items():
        with pytest.raises(CheckpointError) as caught:
            call()
        assert str(caught.value).endswith(f"download it first: curl -LO {HTTPS}"), name
    assert list(tmp_path.iterdir()) == []
