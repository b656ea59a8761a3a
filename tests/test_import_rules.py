"""Import boundaries that keep commands fast and layers honest, checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_console_script

HEAVY = ("numpy", "jax", "torch", "transformers")


def imported_after(statement: str) -> set[str]:
    """Top-level package names in sys.modules after running `statement` in a new process."""
    code = f"{statement}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_cli_imports_no_heavy_library_before_a_command_runs():
    modules = imported_after("import owlvit_cli.cli.app")
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)


def test_publish_needs_no_numpy_nor_the_conversion_side():
    modules = imported_after(
        "import owlvit_cli.publish.hub, owlvit_cli.publish.model_card, owlvit_cli.cli.commands.push"
    )
    assert "numpy" not in modules
    forbidden = ("owlvit_cli.convert", "owlvit_cli.scenic", "owlvit_cli.verify")
    assert not [m for m in modules if m.startswith(forbidden)]


@pytest.mark.parametrize("package", ["checkpoint", "model"])
def test_checkpoint_and_model_import_no_ml_framework(package: str):
    root = Path(__file__).parents[1] / "owlvit_cli" / package
    names = sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__")
    modules = imported_after("\n".join(f"import owlvit_cli.{package}.{name}" for name in names))
    assert not {m.split(".")[0] for m in modules} & {"jax", "torch", "transformers"}


def imported_by_command(*args: object) -> set[str]:
    """Every module a successful console-script run imported (from -X importtime's profile)."""
    proc = run_console_script(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}


def test_push_dry_run_imports_no_numpy(tiny_checkpoint, converted):
    hf_dir = converted(tiny_checkpoint("v1-tiny"))
    imported = imported_by_command("push", hf_dir, "org/model", "--dry-run", "--json")
    assert "owlvit_cli.publish.hub" in imported  # the profile did record the imports
    assert "numpy" not in imported


@pytest.mark.parametrize("extra", [[], ["--mapping"]])
def test_inspect_of_a_msgpack_file_imports_no_numpy(tiny_checkpoint, extra: list[str]):
    """Listing and planning need shapes, not arrays: numpy was a fifth of inspect's time."""
    imported = imported_by_command("inspect", tiny_checkpoint("v1-tiny"), "--json", *extra)
    assert "owlvit_cli.convert.mapping" in imported  # the profile did record the imports
    assert "numpy" not in imported
