"""jax's persistent compilation cache under owlvit's cache directory: a second verify loads
the Flax model's programs instead of compiling them, and nothing about the directory (missing,
deleted while in use, unusable) can fail a command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from owlvit_cli.scenic.compilation_cache import SUBDIRECTORY, private_directory
from tests.helpers import held_console_script, problem_lines, run_console_script

HIT = "Persistent compilation cache hit for 'jit_run'"
COMPILED = "Finished XLA compilation of jit(run)"  # logged for a compilation and a hit alike


def verify(
    ckpt: Path, hf_dir: Path, cache: Path, log: bool = True
) -> subprocess.CompletedProcess[str]:
    """One verify in a fresh process; with `log`, jax logs each compilation and cache hit."""
    env = {"OWLVIT_CACHE": str(cache), **({"JAX_LOG_COMPILES": "1"} if log else {})}
    proc = run_console_script("verify", ckpt, hf_dir, "--json", "--no-record", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["passed"] is True
    return proc


def entries(cache: Path) -> dict[str, tuple[int, int]]:
    """Each cached program's file: (size, mtime_ns)."""
    found = (cache / SUBDIRECTORY).glob("*-cache")
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in found}


def test_a_second_verify_loads_every_program_from_the_first(tmp_path, tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("v2-tiny")
    hf_dir = converted(ckpt)
    first = verify(ckpt, hf_dir, tmp_path / "cache")
    written = entries(tmp_path / "cache")
    assert written and all(name.startswith("jit_run-") for name in written)
    assert HIT not in first.stderr

    second = verify(ckpt, hf_dir, tmp_path / "cache")
    hits, programs = second.stderr.count(HIT), second.stderr.count(COMPILED)
    assert hits == programs == len(written)  # every program the run needed, none compiled
    assert entries(tmp_path / "cache") == written  # read, not rewritten


def test_the_directory_deleted_while_verify_runs_costs_nothing(
    tmp_path, tiny_checkpoint, converted
):
    """Deleted after the model's program was written and before the image-query program is:
    that write fails inside jax, which says nothing; the next run fills the cache again."""
    ckpt = tiny_checkpoint("v2-tiny")
    hf_dir = converted(ckpt)
    cache, hold = tmp_path / "cache", tmp_path / "hold"
    args = ["verify", ckpt, hf_dir, "--json", "--no-record"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OWLVIT_CACHE", str(cache))
        proc = held_console_script(args, "verify-hf-forward", hold)
        assert entries(cache)  # the Flax model's program, compiled and kept
        shutil.rmtree(cache / SUBDIRECTORY)
        hold.unlink()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out)["passed"] is True
    assert problem_lines(err) == [], err
    assert not (cache / SUBDIRECTORY).exists()
    verify(ckpt, hf_dir, cache)
    assert entries(cache)


def test_an_unusable_cache_directory_only_means_compiling(tmp_path, tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("v2-tiny")
    hf_dir = converted(ckpt)
    blocked = tmp_path / "a-file"  # nothing can be made under it, not even by root
    blocked.write_text("")
    proc = verify(ckpt, hf_dir, blocked, log=False)
    assert problem_lines(proc.stderr) == [], proc.stderr  # no warning, no error


def test_only_a_private_directory_is_used(tmp_path: Path):
    """jax runs what it reads there: a directory others can write to is refused."""
    made = private_directory(tmp_path / "new" / "jax")
    assert made == tmp_path / "new" / "jax" and made.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert private_directory(shared) is None
    link = tmp_path / "link"
    link.symlink_to(made)
    assert private_directory(link) is None
    (tmp_path / "file").write_text("")
    assert private_directory(tmp_path / "file") is None


# What importing the Flax model leaves jax configured with, in a fresh interpreter.
PROBE = """
import json, jax
import owlvit_cli.scenic.flax_model
print(json.dumps([jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache]))
"""


def probe(env: dict[str, str]) -> list:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_users_own_jax_setting_wins(tmp_path: Path):
    assert probe({"OWLVIT_CACHE": str(tmp_path / "a")}) == [
        str(tmp_path / "a" / SUBDIRECTORY),
        True,
    ]
    own = {"OWLVIT_CACHE": str(tmp_path / "b"), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "own")}
    assert probe(own) == [str(tmp_path / "own"), True]
    off = {"OWLVIT_CACHE": str(tmp_path / "c"), "JAX_ENABLE_COMPILATION_CACHE": "false"}
    assert probe(off) == [None, False]
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


# A fresh process compiles (or loads) the tiny model's program and runs it once, listening.
LAYERS_PROBE = """
import json
from owlvit_cli.model.tree import nest
from owlvit_cli.model.spec import VARIANTS
from owlvit_cli.scenic.flax_model import FlaxRunner, dummy_inputs, layer_progress
from owlvit_cli.testing import fixtures
spec = VARIANTS["v2-tiny"]
runner = FlaxRunner(spec, nest(fixtures.random_params(spec, seed=1)))
images, ids = dummy_inputs(spec)
runner.compile(images, ids)
heard = []
with layer_progress(lambda: heard.append(1)):
    runner.detect(images, ids, image_only=True)
print(json.dumps([len(heard), runner.layers_per_pass]))
"""


def test_a_program_loaded_from_the_cache_still_reports_every_layer(tmp_path: Path):
    env = {**os.environ, "OWLVIT_CACHE": str(tmp_path), "JAX_LOG_COMPILES": "1"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", LAYERS_PROBE], capture_output=True, text=True, env=env
        )
        for _ in range(2)
    ]
    assert [HIT in run.stderr for run in runs] == [False, True], runs[1].stderr
    for run in runs:
        heard, layers = json.loads(run.stdout.splitlines()[-1])
        assert heard == layers == 4
