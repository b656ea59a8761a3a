"""The Python API: paths may be str, errors are typed, progress is heard, messages name no flags.

docs/python-api.md's example is run as written by tests/test_docs.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import owlvit_cli


def test_paths_may_be_strings_and_errors_are_typed(tiny_checkpoint, tmp_path: Path):
    out = str(tmp_path / "model")
    result = owlvit_cli.convert_checkpoint(str(tiny_checkpoint("v1-tiny")), out)
    assert Path(out, "config.json").is_file() and result.output == Path(out)
    info = owlvit_cli.inspect_checkpoint(str(tiny_checkpoint("v1-tiny")))
    assert info.version == 1 and info.spec.vision.patch_size == 16
    with pytest.raises(owlvit_cli.OwlvitError) as caught:
        owlvit_cli.convert_checkpoint(str(tmp_path / "missing"), str(tmp_path / "x"))
    assert caught.value.exit_code == owlvit_cli.ExitCode.BAD_INPUT


def test_progress_protocol_hears_named_steps(tiny_checkpoint, tmp_path: Path):
    """A caller's own Progress sees each step open and close, with totals and advances."""
    import contextlib

    events: list[tuple[str, object]] = []

    class Recorder:
        @contextlib.contextmanager
        def step(self, name: str, total: float | None = None, unit: str = ""):
            events.append(("start", name))

            class Handle:
                def set_total(self, total: float, unit: str = "") -> None:
                    events.append(("total", total))

                def advance(self, amount: float = 1) -> None:
                    events.append(("advance", amount))

                def describe(self, name: str) -> None:
                    events.append(("describe", name))

            yield Handle()
            events.append(("end", name))

    owlvit_cli.convert_checkpoint(tiny_checkpoint("v2-tiny"), tmp_path / "m", progress=Recorder())
    starts = [name for kind, name in events if kind == "start"]
    ends = [name for kind, name in events if kind == "end"]
    assert starts and starts == ends
    assert sum(a for kind, a in events if kind == "advance") > 0


def test_library_messages_name_no_flags_and_the_cli_adds_the_hint(
    tiny_checkpoint, converted, tmp_path: Path
):
    """The same failure from the API reads without CLI flags; the CLI line adds what to pass."""

    from owlvit_cli.model.model_dir import RECORD_FILE, read_model_dir
    from tests.helpers import run_console_script

    hf_dir = tmp_path / "model"
    shutil.copytree(converted(tiny_checkpoint("v1-tiny")), hf_dir)
    (hf_dir / RECORD_FILE).unlink()
    with pytest.raises(owlvit_cli.OwlvitError) as caught:
        read_model_dir(hf_dir)
    assert "--" not in str(caught.value) and "--force" in caught.value.hint
    proc = run_console_script("push", hf_dir, "org/model", "--dry-run")
    assert proc.returncode == 2
    assert f"{caught.value}; {caught.value.hint}" in proc.stderr
