"""Shared fixtures: the scenic reference data, tiny random checkpoints, converted models.

Everything here runs offline: the Hub is never contacted (HF_HUB_OFFLINE) and telemetry is off.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# owlvit's cache (remembered checkpoint digests), private to this test session.
os.environ["OWLVIT_CACHE"] = __import__("tempfile").mkdtemp(prefix="owlvit-test-cache-")

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from owlvit_cli.model.spec import VARIANTS
from tests.helpers import REFERENCE


@pytest.fixture(scope="session")
def reference_manifest() -> dict:
    return json.loads((REFERENCE / "manifest.json").read_text())


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per session) a tiny random checkpoint for a variant/layout/dtype."""
    from owlvit_cli.testing.fixtures import build_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    cache: dict[tuple[str, str, str, int], Path] = {}

    def make(
        variant: str = "v1-tiny", layout: str = "current", dtype: str = "float32", seed: int = 0
    ) -> Path:
        key = (variant, layout, dtype, seed)
        if key not in cache:
            path = root / f"{variant}-{layout}-{dtype}-{seed}.msgpack"
            cache[key] = build_checkpoint(path, VARIANTS[variant], layout, dtype, seed)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Convert a checkpoint (once per session and options) and return the model directory."""
    from owlvit_cli.convert.run import convert_checkpoint

    root = tmp_path_factory.mktemp("converted")
    cache: dict[tuple[Path, str], Path] = {}

    def make(checkpoint: Path, dtype: str = "float32") -> Path:
        key = (checkpoint, dtype)
        if key not in cache:
            out = root / f"{checkpoint.name}-{dtype}"
            convert_checkpoint(checkpoint, out, dtype=dtype)
            cache[key] = out
        # verify records into a directory owlvit wrote: each test gets it as convert left it.
        (cache[key] / "owlvit_verification.json").unlink(missing_ok=True)
        return cache[key]

    return make


@pytest.fixture
def cli() -> Callable[..., object]:
    """Invoke the Typer app in-process, stdout and stderr kept apart."""
    from owlvit_cli.cli.app import app

    runner = CliRunner()

    def invoke(*args: str | os.PathLike[str]) -> object:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke
