"""The Python API: paths may be str, errors are typed, progress is heard, messages name no flags.

docs/python-api.md's example is run as written by tests/test_docs.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import owlvit_cli
from tests.helpers import SAMPLE


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


def test_one_string_is_one_query(tiny_checkpoint, converted):
    hf_dir = converted(tiny_checkpoint())
    one = owlvit_cli.detect_objects(hf_dir, SAMPLE, "a cat", threshold=0.0)
    assert one.queries == ["a cat"]
    assert {d.query for d in one.detections} == {"a cat"}


def test_step_picks_a_workdir_checkpoint(tmp_path: Path):
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.testing.fixtures import build_checkpoint

    workdir = tmp_path / "wd"
    for step, variant in ((1, "v1-tiny"), (2, "v2-tiny")):
        build_checkpoint(workdir / f"checkpoint_{step}", VARIANTS[variant])
    assert owlvit_cli.inspect_checkpoint(workdir).version == 2
    info = owlvit_cli.inspect_checkpoint(workdir, step=1)
    assert info.version == 1 and info.path == workdir / "checkpoint_1"
    result = owlvit_cli.convert_checkpoint(workdir, tmp_path / "m", step=1)
    assert result.record["source"]["file"] == "checkpoint_1"
    with pytest.raises(owlvit_cli.OwlvitError, match="no checkpoint for step 3"):
        owlvit_cli.convert_checkpoint(workdir, tmp_path / "x", step=3)
    report = owlvit_cli.verify_conversion(workdir, tmp_path / "m", step=1).report
    assert report["passed"] and report["checkpoint"] == "checkpoint_1"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c, o, h: owlvit_cli.convert_checkpoint(c, o, dtype=None), "dtype must be"),
        (lambda c, o, h: owlvit_cli.convert_checkpoint(c, o, max_shard_size=None), "size"),
        (lambda c, o, h: owlvit_cli.convert_checkpoint(c, o, max_shard_size=-1), "size"),
        (lambda c, o, h: owlvit_cli.detect_objects(h, SAMPLE, ["cat", 3]), "not text"),
        (lambda c, o, h: owlvit_cli.detect_objects(h, SAMPLE, "cat", "0.5"), "a number"),
        (
            lambda c, o, h: owlvit_cli.detect_objects(h, SAMPLE, "cat", max_detections=2.5),
            "whole number",
        ),
    ],
)
def test_wrong_argument_types_are_owlvit_errors(
    tiny_checkpoint, converted, tmp_path: Path, call, message
):
    hf_dir = converted(tiny_checkpoint())
    with pytest.raises(owlvit_cli.OwlvitError, match=message) as caught:
        call(tiny_checkpoint(), tmp_path / "out", hf_dir)
    assert len(str(caught.value).splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_shard_size_in_bytes(tiny_checkpoint, tmp_path: Path):
    result = owlvit_cli.convert_checkpoint(
        tiny_checkpoint(), tmp_path / "m", max_shard_size=1_000_000
    )
    assert "model.safetensors.index.json" in result.files


PUSH_SCRIPT = """
import json, sys
import owlvit_cli

try:
    result = owlvit_cli.push_to_hub(sys.argv[1], sys.argv[2], endpoint=sys.argv[3])
except owlvit_cli.OwlvitError as exc:
    print(json.dumps({"error": str(exc), "code": int(exc.exit_code)}))
else:
    print(json.dumps({"changed": result.changed, "commit_url": result.commit_url,
                      "repo_id": result.plan.repo_id}))
"""


def push_from_python(hf_dir: Path, repo_id: str, endpoint: str, token: str, home: Path) -> dict:
    """`push_to_hub` as a notebook calls it, in a fresh interpreter with only HF_TOKEN set."""
    import json
    import os

    keep = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env = {**keep, "HF_TOKEN": token, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", PUSH_SCRIPT, str(hf_dir), repo_id, endpoint],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(Path(__file__).parents[1])},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert token not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_push_to_hub_publishes_to_a_hub(tiny_checkpoint, converted, tmp_path: Path):
    from tests.hub_server import HubServer

    hf_dir = converted(tiny_checkpoint("v1-tiny"))
    with HubServer() as hub:
        pushed = push_from_python(hf_dir, "owl-api", hub.url, "hf_test_token", tmp_path)
        assert pushed["changed"] is True and pushed["repo_id"] == "tester/owl-api"
        head = hub.state.head("tester/owl-api")
        assert pushed["commit_url"].endswith(head.oid)
        assert {"model.safetensors", "config.json", "README.md"} <= set(head.files)
        refused = push_from_python(hf_dir, "owl-api", hub.url, "hf_wrong_token_0", tmp_path)
        assert refused["code"] == 3 and "HTTP 401" in refused["error"]
