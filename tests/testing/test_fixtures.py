"""The test fixtures themselves: every documented way of calling them works, and a failed
save leaves nothing behind for the next test to trip over."""

from __future__ import annotations

from pathlib import Path

import pytest

from owlvit_cli.model.spec import VARIANTS
from owlvit_cli.testing.fixtures import build_checkpoint, write_orbax_checkpoint


@pytest.mark.parametrize("writer", ["flax", "orbax"])
def test_orbax_checkpoint_at_a_relative_path(tmp_path: Path, monkeypatch, writer: str):
    monkeypatch.chdir(tmp_path)
    written = build_checkpoint("run", VARIANTS["v1-tiny"], orbax={"writer": writer})
    assert written.is_absolute() and written.is_dir()
    assert written == (tmp_path / "run" / "checkpoint_0" if writer == "flax" else tmp_path / "run")
    assert not [p for p in tmp_path.rglob("*") if "orbax-checkpoint-tmp" in p.name]


@pytest.mark.parametrize("writer", ["flax", "orbax"])
def test_a_failed_save_leaves_no_temporary_directory(tmp_path: Path, writer: str):
    with pytest.raises(Exception):  # noqa: B017 - whatever the library raises
        write_orbax_checkpoint(tmp_path / "run", {"params": {"x": object()}}, writer=writer)
    assert list(tmp_path.iterdir()) == []
