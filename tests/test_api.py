"""The Python API as the README shows it: the example runs as written, paths may be str."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import owlvit_cli
from tests.helpers import SAMPLE

README = Path(__file__).parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python example"
    return match.group(1)


def test_readme_example_runs(tmp_path: Path):
    shutil.copy(SAMPLE, tmp_path / "street.jpg")
    proc = subprocess.run(
        [sys.executable, "-c", readme_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("v2 2 ")  # layout, version, parameters, image size
    assert "model.safetensors" in lines[1]
    assert lines[-1].startswith("2 ") and "no-such-checkpoint" in lines[-1]
    assert (tmp_path / "tiny-owlv2-hf" / "config.json").is_file()
    assert not (tmp_path / "out").exists()


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
    import shutil

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
