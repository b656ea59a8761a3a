"""`owlvit env` is pasted into public bug reports: no credential of HF_ENDPOINT may show."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_console_script

PASSWORD = "pa55-w0rd-in-env"


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        (f"https://alice:{PASSWORD}@hub.example", "https://***@hub.example"),
        (f"https://hub.example/?token={PASSWORD}", None),
        (f"https:/alice:{PASSWORD}@hub.example", None),
        (f"https://alice:{PASSWORD}/x@hub.example", None),
        (f"http://[::1]:{PASSWORD}", None),
        (f"https://hub.example/hf_{PASSWORD.replace('-', '')}", "https://hub.example/hf_***"),
    ],
    ids=["userinfo", "query", "one-slash", "unencoded-slash", "bad-port", "token-in-path"],
)
def test_env_never_prints_endpoint_credentials(endpoint: str, shown: str | None) -> None:
    env = {"HF_ENDPOINT": endpoint}
    machine = run_console_script("env", "--json", env=env)
    human = run_console_script("env", env=env)
    assert machine.returncode == 0 and human.returncode == 0, machine.stderr + human.stderr
    reported = json.loads(machine.stdout)["hub"]["endpoint"]
    if shown is None:  # unusable: said so, with the endpoint shown redacted
        assert reported.startswith("unusable endpoint "), reported
    else:
        assert reported == shown
    assert "hub endpoint" in human.stdout
    for text in (machine.stdout, machine.stderr, human.stdout, human.stderr):
        assert PASSWORD not in text and PASSWORD.replace("-", "") not in text


def test_env_never_reads_a_token_file_that_is_a_device_or_a_pipe(tmp_path) -> None:
    """/dev/zero would be read until memory runs out; a pipe would wait for a writer."""
    import os

    pipe = tmp_path / "token-pipe"
    os.mkfifo(pipe)
    for path, says in (("/dev/zero", "not a regular file"), (str(pipe), "is a pipe")):
        env = {"HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": "", "HF_TOKEN_PATH": path}
        proc = run_console_script("env", "--json", env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        token = json.loads(proc.stdout)["hub"]["token"]
        assert token.startswith("unusable: ") and says in token
