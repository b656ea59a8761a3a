"""A training workdir as CKPT: the whole of it is an input, and a step it holds twice is
named rather than picked at random."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from owlvit_cli.model.spec import VARIANTS
from owlvit_cli.testing.fixtures import build_checkpoint, write_orbax_checkpoint
from tests.helpers import run_console_script


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """flax's `save_checkpoint` layout: checkpoint_100 an Orbax directory (flax since 0.7),
    checkpoint_200 a msgpack file (before)."""
    workdir = tmp_path / "wd"
    build_checkpoint(workdir, VARIANTS["v1-tiny"], orbax={"writer": "flax", "step": 100})
    build_checkpoint(workdir / "checkpoint_200", VARIANTS["v1-tiny"], seed=200)
    return workdir


def _contents(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
            if p.is_file()}  # fmt: skip


def _refused(*args: object) -> str:
    result = run_console_script(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and len([x for x in lines if "error" in x]) == 1
    return lines[-1]


def test_no_output_lands_in_the_workdir_read(workdir: Path, tmp_path: Path):
    from flax.training.checkpoints import latest_checkpoint

    before = _contents(workdir)
    step_100 = workdir / "checkpoint_100"
    # Replacing a training step (the whole workdir is the input, not just the step read).
    assert "input" in _refused("convert", workdir, step_100, "--force-overwrite")
    assert "input" in _refused("convert", workdir, workdir / "exported" / "hf")
    assert "input" in _refused("convert", workdir, workdir, "--force-overwrite")
    (workdir.parent / "link").symlink_to(workdir / "new")  # a symlink into the workdir
    assert "input" in _refused("convert", workdir, workdir.parent / "link")
    # A model directory that flax (and owlvit) would take for the newest step.
    assert "input" in _refused("convert", workdir, workdir / "checkpoint_999")
    assert "latest_checkpoint" in _refused("convert", step_100, workdir / "checkpoint_999")
    assert "named like a checkpoint step" in _refused("convert", step_100, workdir / "999")
    assert _contents(workdir) == before
    assert latest_checkpoint(workdir) == str(workdir / "checkpoint_200")

    # verify's file outputs: nothing inside the workdir either.
    hf_dir = tmp_path / "hf"
    assert run_console_script("convert", workdir, hf_dir, "-q").returncode == 0
    npz = workdir / "outputs.npz"
    assert "input" in _refused("verify", workdir, hf_dir, "--save-outputs", npz)
    assert _contents(workdir) == before

    # A step given as a path is the input alone: an output beside it is fine.
    beside = workdir.parent / "model"
    assert run_console_script("convert", step_100, beside, "-q").returncode == 0


def test_a_step_held_twice_is_named_and_refused_unless_a_path_picks_one(workdir: Path):
    shutil.copytree(workdir / "checkpoint_100", workdir / "checkpoint_0100")
    state = {"params": {"unused": __import__("numpy").zeros(2, "float32")}}
    write_orbax_checkpoint(workdir / "100", state)  # orbax's CheckpointManager spelling

    # The latest step (200) is held once: read, counting steps, not entries.
    latest = run_console_script("inspect", workdir, "--json")
    assert latest.returncode == 0, latest.stderr
    assert "step 200, the latest of 2" in latest.stderr

    line = _refused("inspect", workdir, "--step", "100")
    assert "3 checkpoints for step 100 (100, checkpoint_0100, checkpoint_100)" in line
    assert "pass the one to read as the checkpoint" in line
    (workdir / "checkpoint_200").unlink()
    assert "3 checkpoints for step 100" in _refused("convert", workdir, workdir.parent / "o")
    assert "3 checkpoints for step 100" in _refused("verify", workdir, workdir.parent / "o")

    picked = run_console_script("inspect", workdir / "checkpoint_0100", "--json")
    assert picked.returncode == 0, picked.stderr
    assert json.loads(picked.stdout)["file"].endswith("checkpoint_0100")
