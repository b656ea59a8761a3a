"""Where verify keeps its report: by default in a directory owlvit wrote, never elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from owlvit_cli.model.model_dir import RECORD_FILE, VERIFICATION_FILE
from owlvit_cli.verify.record import plan_record
from tests.helpers import run_console_script


@pytest.fixture
def model(converted, tiny_checkpoint, tmp_path: Path) -> Path:
    hf_dir = tmp_path / "model"
    shutil.copytree(converted(tiny_checkpoint()), hf_dir)
    return hf_dir


def one_line_exit_2(*args: object) -> str:
    proc = run_console_script(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_record_refuses_a_directory_owlvit_did_not_write(model: Path, tiny_checkpoint) -> None:
    (model / RECORD_FILE).unlink()
    line = one_line_exit_2("verify", tiny_checkpoint(), model, "--record")
    assert "was not written by `owlvit convert`" in line and "drop --record" in line
    assert not (model / VERIFICATION_FILE).exists()
    plan = plan_record(model, None)  # the default: no record, and the reason to say
    assert plan.path is None and "not written by `owlvit convert`" in (plan.skipped or "")


def test_a_record_verify_did_not_write_is_never_replaced(model: Path, tiny_checkpoint) -> None:
    mine = model / VERIFICATION_FILE
    mine.write_text('{"my": "notes"}')
    for extra in ([], ["--record"]):
        line = one_line_exit_2("verify", tiny_checkpoint(), model, *extra)
        assert "was not written by `owlvit verify`" in line and "--no-record" in line
    assert mine.read_text() == '{"my": "notes"}'


def test_a_symlinked_record_is_refused_and_its_target_untouched(
    model: Path, tiny_checkpoint, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps({"passed": True, "tool_version": "x", "created": "y"}))
    (model / VERIFICATION_FILE).symlink_to(victim)
    line = one_line_exit_2("verify", tiny_checkpoint(), model)
    assert "is a symlink" in line
    assert json.loads(victim.read_text())["tool_version"] == "x"


def test_no_record_and_the_default(model: Path) -> None:
    assert plan_record(model, False).path is None
    assert plan_record(model, None).path == model / VERIFICATION_FILE
    assert plan_record(model, True).path == model / VERIFICATION_FILE


def test_a_comparison_with_another_checkpoint_keeps_the_valid_record(
    model: Path, tiny_checkpoint
) -> None:
    """--ignore-source on purpose: the report is shown, the directory's record stays."""
    record = model / VERIFICATION_FILE
    valid = {"passed": True, "tool_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00"}
    record.write_text(json.dumps(valid))
    other = tiny_checkpoint("v1-tiny", seed=1)
    proc = run_console_script("verify", other, model, "--ignore-source")
    assert proc.returncode in (0, 1), proc.stderr
    assert "report not recorded: CKPT is not the checkpoint HF_DIR was converted from" in (
        proc.stderr
    )
    assert json.loads(record.read_text()) == valid


def test_a_read_only_directory_is_verified_without_a_record(model: Path, tiny_checkpoint) -> None:
    """Not asked to record: a copy on a read-only mount still verifies, and says why no
    report was kept (asked, it is refused: tests/cli/test_robustness.py)."""
    import subprocess

    bind = subprocess.run(["mount", "--bind", "-o", "ro", str(model), str(model)],
                          capture_output=True, check=False)  # fmt: skip
    if bind.returncode != 0:
        pytest.skip("cannot bind-mount read-only here (needs root)")
    try:
        proc = run_console_script("verify", tiny_checkpoint(), model)
    finally:
        subprocess.run(["umount", str(model)], check=False)
    assert proc.returncode == 0, proc.stderr
    assert "report not recorded: " in proc.stderr and "cannot write here" in proc.stderr
    assert not (model / VERIFICATION_FILE).exists()
