"""End to end through the CLI: inspect and convert, success and failure, stdout/stderr split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import problem_lines, reference_checkpoint, run_console_script


def test_help_lists_commands_without_heavy_imports():
    proc = run_console_script("--help")
    assert proc.returncode == 0
    for command in ("inspect", "convert"):
        assert command in proc.stdout
    probe = run_console_script_python(
        "import sys; from owlvit_cli.cli.app import app; "
        "print(sorted(m for m in ('jax','torch','transformers','flax') if m in sys.modules))"
    )
    assert probe == "[]"


def run_console_script_python(code: str) -> str:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_inspect_json_through_console_script(tiny_checkpoint):
    proc = run_console_script("inspect", tiny_checkpoint("v2-tiny", "v1"), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # exactly one JSON object, nothing else
    assert report["layout"] == "v1" and report["version"] == 2
    assert report["config"]["vision"] == {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 512,
        "patch_size": 16,
        "image_size": 64,
    }
    assert report["config"]["objectness_head"] is True
    assert report["num_parameters"] == sum(
        int(__import__("math").prod(p["shape"])) for p in report["params"]
    )
    first = report["params"][0]
    assert set(first) >= {"path", "shape", "dtype"}
    assert first["path"].startswith("optimizer/target/")


def test_inspect_tree_depth_and_filter(cli, tiny_checkpoint):
    result = cli("inspect", tiny_checkpoint("v1-tiny", "v2"), "--depth", "3")
    assert result.exit_code == 0
    assert "tensors" in result.stdout and "released v2" in result.stdout
    assert "resblocks.0" not in result.stdout  # collapsed below depth 3
    result = cli("inspect", tiny_checkpoint("v1-tiny", "v2"), "--filter", "*class_head*", "--json")
    paths = [p["path"] for p in json.loads(result.stdout)["params"]]
    assert paths and all("class_head" in p for p in paths)


def test_inspect_mapping(cli):
    result = cli("inspect", reference_checkpoint("v1_release"), "--mapping", "--json")
    rows = json.loads(result.stdout)["mapping"]
    by_source = {r["source"]: r for r in rows}
    # The file's own name (a v1 file), with the current scenic name beside it.
    row = by_source["optimizer/target/backbone/clip/visual/transformer/resblocks.0/ln_1/scale"]
    assert row["name"] == "backbone/clip/visual/transformer/resblocks_0/ln_0/scale"
    assert row["target"] == "owlvit.vision_model.encoder.layers.0.layer_norm1.weight"
    assert by_source["(generated)"]["target"] == "owlvit.visual_projection.weight"


@pytest.mark.parametrize("debug", [False, True])
def test_inspect_bad_input_is_one_line_exit_2(cli, tmp_path: Path, debug: bool):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    args = ["inspect", bad] + (["--debug"] if debug else [])
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "zip archive" in result.stderr
    if debug:
        assert "Traceback" in result.stderr
    else:
        assert "Traceback" not in result.stderr
        assert len(problem_lines(result.stderr)) == 1


def test_usage_errors_exit_2(cli):
    assert cli("inspect").exit_code == 2
    assert cli("inspect", "x", "--depth", "0").exit_code == 2
    assert cli("no-such-command").exit_code == 2


def test_convert_json_then_load(cli, tiny_checkpoint, tmp_path: Path):
    out = tmp_path / "model"
    result = cli("convert", tiny_checkpoint("v2-tiny", "current"), out, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["output"] == str(out) and summary["version"] == 2
    assert "model.safetensors" in summary["files"]
    again = cli("convert", tiny_checkpoint("v2-tiny", "current"), out)
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_convert_through_console_script(tiny_checkpoint, tmp_path: Path):
    out = tmp_path / "model"
    proc = run_console_script("convert", tiny_checkpoint("v1-tiny", "v1"), out)
    assert proc.returncode == 0, proc.stderr
    assert "converted" in proc.stdout and (out / "config.json").exists()
    assert "\x1b[" not in proc.stdout + proc.stderr  # no colour codes off a terminal


def test_convert_bad_checkpoint_leaves_nothing(cli, tmp_path: Path):
    bad = tmp_path / "ckpt"
    bad.write_bytes(b"\x81\xa6params\x80")
    result = cli("convert", bad, tmp_path / "out")
    assert result.exit_code == 2 and "error:" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_fast_exit_flushes_output_and_keeps_the_code(tmp_path: Path):
    """`exit_now` skips interpreter teardown; buffered stdout to a pipe must not be lost."""
    code = (
        "import sys\n"
        "from owlvit_cli.cli.process import exit_now\n"
        "sys.stdout.write('x' * 100000)\n"
        "exit_now(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])\n"
    )
    for arg, expected in (("3", 3), ("0", 0), ("a message", 1)):
        proc = subprocess.run([sys.executable, "-c", code, arg], capture_output=True,
                              text=True, check=False, timeout=60)  # fmt: skip
        assert proc.returncode == expected and len(proc.stdout) == 100000
        if expected == 1:
            assert proc.stderr.strip() == "a message"


def test_only_the_console_script_holds_objects_until_exit():
    """In-process callers (this test run) free verification's models as usual."""
    from owlvit_cli.cli import process

    process.hold_until_exit(object())
    assert process._held == [] and not process.should_exit_now()


def test_convert_ends_its_console_script_without_teardown(
    cli, tiny_checkpoint, tmp_path, monkeypatch
):
    """The tokenizer's objects need no final collection: convert asks the console script to
    end directly, and its one JSON object must still arrive whole."""
    from owlvit_cli.cli import process

    monkeypatch.setattr(process, "_skip_teardown", False)
    assert cli("convert", tiny_checkpoint(), tmp_path / "out", "-q").exit_code == 0
    assert process._skip_teardown
    monkeypatch.setattr(process, "_ends_after_command", True)
    assert process.should_exit_now()
    proc = run_console_script("convert", tiny_checkpoint(), tmp_path / "again", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"] == str(tmp_path / "again")
