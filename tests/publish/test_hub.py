"""`owlvit push`, end to end: the CLI runs as a subprocess against a local Hub-compatible server.

The subprocess gets an isolated HF_HOME, HF_HUB_DISABLE_XET=1 (the local server speaks the
plain LFS protocol), HF_HUB_DISABLE_TELEMETRY=1 and no HF_HUB_OFFLINE, all set before it
imports huggingface_hub. Files are read back with `hf_hub_download` from the same server.

The model directory is built here rather than by `owlvit convert`: push only reads files, and
a converted-looking directory (a transformers config, a small safetensors file and an
owlvit_conversion.json following the convert schema) keeps these tests fast and independent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.helpers import assert_one_line_error, problem_lines
from tests.hub_server import HubServer, unused_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_test_token"
WRONG_TOKEN = "hf_wrong_token_0123456789"
SOURCE_SHA = hashlib.sha256(b"the scenic checkpoint").hexdigest()
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    vocab_size=49408,
    max_position_embeddings=16,
)
TINY_VISION = dict(
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=16,
)
# Stripped from the subprocess environment so the developer's own setup cannot leak in.
HF_ENV_VARS = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN_PATH",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_OIDC_RESOURCE",
    "HF_DEBUG",
    "HUGGINGFACE_CO_STAGING",
)


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def configs() -> dict[int, str]:
    """Tiny transformers configs, made once (importing transformers takes seconds)."""
    from transformers import Owlv2Config, OwlViTConfig

    kwargs = dict(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=16)
    return {
        1: OwlViTConfig(**kwargs).to_json_string(),
        2: Owlv2Config(**kwargs).to_json_string(),
    }


def conversion_record(version: int) -> dict[str, Any]:
    return {
        "tool": "owlvit",
        "tool_version": "0.1.0",
        "source": {"file": f"owl{version}_tiny_checkpoint", "size": 123456, "sha256": SOURCE_SHA},
        "layout": "v2" if version == 2 else "v1",
        "version": version,
        "config": {
            "vision": dict(TINY_VISION),
            "text": dict(TINY_TEXT),
            "projection_dim": 16,
            "objectness_head": version == 2,
        },
        "dtype": "float32",
        "ignored": [
            {"path": "backbone/merged_class_token/scale", "reason": "unused by transformers"}
        ],
        "libraries": {"transformers": "5.24.0", "numpy": "2.4.6"},
        "created": "2025-01-01T00:00:00+00:00",
        "an_extra_key": {"tolerated": True},
    }


def verification_record(passed: bool = True, sha: str = SOURCE_SHA) -> dict[str, Any]:
    def row(name: str, level: str, max_abs: float, tolerance: float | None, ok: bool) -> dict:
        return {"name": name, "level": level, "max_abs": max_abs, "tolerance": tolerance,
                "passed": ok}  # fmt: skip

    return {
        "passed": passed,
        "checkpoint_sha256": sha,
        "outputs": [
            row("logits", "model", 3.1e-6, 1e-4, True),
            row("pred_boxes", "model", 2.2e-7, 1e-4, passed),
            row("image_embeds", "layer", 1.5e-6, None, True),
        ],
        "more": "extra keys are fine",
        "hf_dir": "/home/someone/models/owl",  # as `owlvit verify --record` writes it
    }


@pytest.fixture
def make_model_dir(tmp_path: Path, configs: dict[int, str]) -> Callable[..., Path]:
    """A directory shaped like `owlvit convert` output."""

    def make(
        name: str = "model",
        *,
        version: int = 1,
        record: bool = True,
        verification: dict[str, Any] | None = None,
        weights: str | None = "single",
        readme: str | None = None,
    ) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(configs[version])
        rng = np.random.default_rng(version)
        tensors = {
            "owlvit.logit_scale": np.array([2.6592], dtype=np.float32),
            "owlvit.text_projection.weight": rng.standard_normal((16, 32), dtype=np.float32),
            "owlvit.visual_projection.weight": rng.standard_normal((16, 48), dtype=np.float32),
            "class_head.dense0.weight": rng.standard_normal((96, 96), dtype=np.float32),
        }
        if weights == "single":
            save_file(tensors, str(path / "model.safetensors"))
        elif weights == "sharded":
            names = sorted(tensors)
            shards = {"model-00001-of-00002.safetensors": names[:2],
                      "model-00002-of-00002.safetensors": names[2:]}  # fmt: skip
            weight_map = {}
            for shard, keys in shards.items():
                save_file({k: tensors[k] for k in keys}, str(path / shard))
                weight_map.update(dict.fromkeys(keys, shard))
            index = {"metadata": {"total_size": 1}, "weight_map": weight_map}
            (path / "model.safetensors.index.json").write_text(json.dumps(index))
        processor = "Owlv2ImageProcessor" if version == 2 else "OwlViTImageProcessor"
        (path / "preprocessor_config.json").write_text(
            json.dumps({"image_processor_type": processor, "size": {"height": 32, "width": 32}})
        )
        (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16}))
        (path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "</w>": 2}))
        (path / "merges.txt").write_text("#version: 0.2\na b\n")
        (path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
        if record:
            record_json = json.dumps(conversion_record(version), indent=2)
            (path / "owlvit_conversion.json").write_text(record_json)
        if verification is not None:
            (path / "owlvit_verification.json").write_text(json.dumps(verification))
        if readme is not None:
            (path / "README.md").write_text(readme)
        return path

    return make


@pytest.fixture
def hub() -> Any:
    """A fresh in-memory Hub per test."""
    with HubServer() as server:
        yield server


@pytest.fixture
def hf_home(tmp_path: Path) -> Path:
    home = tmp_path / "hf_home"
    home.mkdir()
    return home


@pytest.fixture
def cli(hub: HubServer, hf_home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m owlvit_cli push ...` with a clean, isolated Hugging Face environment."""

    def run(
        *args: str | Path,
        token: str | None = TOKEN,
        endpoint: str | None = "server",
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k not in HF_ENV_VARS}
        environ.update(
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            PYTHONPATH=str(REPO_ROOT),
            COLUMNS="200",
        )
        environ.update(env or {})
        command = [sys.executable, "-m", "owlvit_cli", "push", *map(str, args)]
        if token is not None:
            command += ["--token", token]
        if endpoint == "server":
            command += ["--endpoint", hub.url]
        elif endpoint is not None:
            command += ["--endpoint", endpoint]
        return subprocess.run(
            command, capture_output=True, text=True, env=environ, cwd=REPO_ROOT, timeout=60
        )

    return run


@pytest.fixture
def download(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable:
    """Read a file back from the server with huggingface_hub itself."""
    from huggingface_hub import constants, hf_hub_download

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def fetch(
        repo_id: str, filename: str, revision: str | None = None, token: Any = TOKEN
    ) -> bytes:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            endpoint=hub.url,
            token=token,
            cache_dir=tmp_path / "download_cache",
        )
        return Path(path).read_bytes()

    return fetch


def assert_no_token(result: subprocess.CompletedProcess[str], *tokens: str) -> None:
    for secret in tokens or (TOKEN,):
        assert secret not in result.stdout + result.stderr


def load_card(text: str) -> Any:
    from huggingface_hub import ModelCard

    return ModelCard(text)


# --------------------------------------------------------------------------------------------
# Publishing


def test_round_trip_is_byte_identical_and_weights_go_through_lfs(
    cli: Callable, hub: HubServer, make_model_dir: Callable, download: Callable
) -> None:
    model = make_model_dir()
    before = sorted(p.name for p in model.iterdir())

    result = cli(model, "tester/owl")

    assert result.returncode == 0, result.stderr
    head = hub.state.head("tester/owl")
    assert head is not None
    assert (
        result.stdout.strip().splitlines()[-1] == f"commit: {hub.url}/tester/owl/commit/{head.oid}"
    )
    for name in before:
        assert download("tester/owl", name) == (model / name).read_bytes(), name
    weights = (model / "model.safetensors").read_bytes()
    assert hub.state.lfs_uploads == [hashlib.sha256(weights).hexdigest()]
    assert head.files["model.safetensors"].is_lfs
    assert not head.files["config.json"].is_lfs
    # The card is only uploaded: HF_DIR is left exactly as it was.
    assert sorted(p.name for p in model.iterdir()) == before
    assert "README.md" in head.files
    # Every request to the Hub API carried the token.
    api_requests = [r for r in hub.state.requests if r.route != "lfs_upload"]
    assert api_requests and all(r.authorization == f"Bearer {TOKEN}" for r in api_requests)
    # ... and none went to the storage address the LFS batch handed out.
    storage = [r for r in hub.state.requests if r.route == "lfs_upload"]
    assert storage and all(r.authorization is None for r in storage)
    assert_no_token(result)


def test_card_metadata_round_trips_and_says_not_verified(
    cli: Callable, make_model_dir: Callable, download: Callable
) -> None:
    from huggingface_hub import ModelCard

    model = make_model_dir(version=1)
    result = cli(model, "tester/owl")
    assert result.returncode == 0, result.stderr

    card_path = Path(model.parent / "downloaded_README.md")
    card_path.write_bytes(download("tester/owl", "README.md"))
    card = ModelCard.load(card_path)
    assert card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "zero-shot-object-detection"
    assert card.data.tags == ["owlvit", "vision", "object-detection", "zero-shot-object-detection"]
    assert "**Not verified.**" in card.text
    assert SOURCE_SHA in card.text
    assert "owl1_tiny_checkpoint" in card.text
    assert "OwlViTForObjectDetection" in card.text and "OwlViTProcessor" in card.text
    assert 'pipeline("zero-shot-object-detection", model="tester/owl")' in card.text
    assert "| layers | 2 | 2 |" in card.text  # the derived config
    assert "owlvit_verification.json" in result.stderr  # warned, on stderr


@pytest.mark.slow
def test_push_what_convert_wrote(
    cli: Callable,
    hub: HubServer,
    tiny_checkpoint: Callable,
    converted: Callable,
    download: Callable,
) -> None:
    """The real `owlvit convert` output (conftest's shared, session-cached fixtures) round-trips."""
    model = converted(tiny_checkpoint("v2-tiny", "v2"))
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    record = json.loads(before["owlvit_conversion.json"])

    result = cli(model, "tester/owl2")

    assert result.returncode == 0, result.stderr
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        assert download("tester/owl2", name) == before[name]
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before  # untouched
    card = load_card(download("tester/owl2", "README.md").decode())
    assert "owlv2" in card.data.tags
    assert record["source"]["sha256"] in card.text
    assert record["source"]["file"] in card.text
    width = record["config"]["vision"]["hidden_size"]
    assert f"| width | {width} | {record['config']['text']['hidden_size']} |" in card.text


def test_card_shows_verification_results(cli: Callable, make_model_dir: Callable) -> None:
    model = make_model_dir(version=2, verification=verification_record())
    result = cli(model, "tester/owl2", "--dry-run", "--json", "--license", "mit")
    assert result.returncode == 0, result.stderr

    card = load_card(json.loads(result.stdout)["card"]["content"])
    assert card.data.license == "mit"
    assert card.data.tags == ["owlv2", "vision", "object-detection", "zero-shot-object-detection"]
    assert "**Passed**" in card.text
    assert "Not verified" not in card.text
    assert "| pred_boxes | model | 2.2e-07 | 0.0001 | pass |" in card.text
    # No tolerance applied: reported, not judged.
    assert "| image_embeds | layer | 1.5e-06 | — | info |" in card.text
    assert "Owlv2ForObjectDetection" in card.text and "Owlv2Processor" in card.text
    assert "objectness head: yes" in card.text
    assert "holds local paths (hf_dir)" in result.stderr


def test_convert_verify_push_in_that_order_publish_a_verified_card(
    cli: Callable, hub: HubServer, tiny_checkpoint: Callable, tmp_path: Path, download: Callable
) -> None:
    """As a newcomer runs them: push names the one command that records the verification (with
    the checkpoint where convert found it), and after it the card shows the result."""
    import shlex

    from tests.helpers import run_console_script

    checkpoint = tmp_path / "checkpoints" / "clip_vit_tiny"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(tiny_checkpoint("v1-tiny").read_bytes())
    model = tmp_path / "owlvit-tiny"
    assert run_console_script("convert", checkpoint, model).returncode == 0

    dry = cli(model, "tester/owl", "--dry-run")
    warning = next(line for line in dry.stderr.splitlines() if "not verified" in line)
    command = re.search(r"record one with `([^`]*)`", warning)
    assert command, warning
    assert shlex.split(command.group(1)) == ["owlvit", "verify", str(checkpoint), str(model)]

    verify = run_console_script(*shlex.split(command.group(1))[1:])
    assert verify.returncode == 0, verify.stderr
    assert f"recorded the report in {model / 'owlvit_verification.json'}" in verify.stderr
    result = cli(model, "tester/owl")
    assert result.returncode == 0, result.stderr
    assert "not verified" not in result.stderr
    card = download("tester/owl", "README.md").decode()
    assert "**Passed**" in card and "Not verified" not in card


@pytest.mark.parametrize(
    ("verification", "expected"),
    [
        (verification_record(passed=False), "**FAILED**"),
        (verification_record(sha="0" * 64), "made for a different checkpoint"),
    ],
)
def test_card_reports_failed_or_mismatched_verification(
    make_model_dir: Callable, verification: dict, expected: str
) -> None:
    from owlvit_cli.publish.hub import plan_push

    # A FAILED one is published only on --force (tests below); a mismatched one is a warning.
    plan = plan_push(make_model_dir(verification=verification), "tester/owl", force=True)
    assert expected in plan.card_text
    assert "Not verified" in plan.card_text or "**FAILED**" in plan.card_text
    assert any("verification" in w or "checkpoint" in w for w in plan.warnings)


def test_existing_readme_is_kept_unless_overwrite_card(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    own_card = "---\nlicense: mit\n---\n# My own card\n"
    model = make_model_dir(readme=own_card)

    result = cli(model, "tester/owl", "--license", "bsd-3-clause")
    assert result.returncode == 0, result.stderr
    assert hub.state.file_bytes("tester/owl", "README.md") == own_card.encode()
    assert "--license ignored" in result.stderr

    result = cli(model, "tester/owl", "--overwrite-card")
    assert result.returncode == 0, result.stderr
    pushed = hub.state.file_bytes("tester/owl", "README.md")
    assert pushed is not None
    assert load_card(pushed.decode()).data.pipeline_tag == "zero-shot-object-detection"
    assert (model / "README.md").read_text() == own_card  # the directory is not touched


def test_save_card_writes_the_card_into_the_directory(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir()
    result = cli(model, "tester/owl", "--save-card")
    assert result.returncode == 0, result.stderr
    assert (model / "README.md").read_bytes() == hub.state.file_bytes("tester/owl", "README.md")


def test_save_card_replaces_a_readme_symlink_instead_of_writing_through_it(
    cli: Callable, make_model_dir: Callable
) -> None:
    model = make_model_dir()
    config = (model / "config.json").read_bytes()
    (model / "README.md").symlink_to("config.json")
    result = cli(model, "tester/owl", "--overwrite-card", "--save-card")
    assert result.returncode == 0, result.stderr
    assert (model / "config.json").read_bytes() == config
    assert not (model / "README.md").is_symlink()
    assert (model / "README.md").read_text().startswith("---")


def test_private_flag_reaches_the_server(
    cli: Callable, hub: HubServer, make_model_dir: Callable, download: Callable
) -> None:
    model = make_model_dir()
    result = cli(model, "tester/secret", "--private")
    assert result.returncode == 0, result.stderr
    assert hub.state.repos["tester/secret"].private is True
    assert download("tester/secret", "config.json") == (model / "config.json").read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - anonymous readers cannot see it
        download("tester/secret", "vocab.json", token=False)

    # An existing public repo is not silently used for a --private push, nor the reverse.
    assert cli(model, "tester/public").returncode == 0
    result = cli(model, "tester/public", "--private")
    line = assert_one_line_error(result, 2)
    assert "already exists and is public" in line
    line = assert_one_line_error(cli(model, "tester/secret", "--no-private"), 2)
    assert "already exists and is private" in line and "drop --no-private" in line
    assert cli(model, "tester/open", "--no-private").returncode == 0
    assert hub.state.repos["tester/open"].private is False


def test_revision_creates_and_reuses_a_branch(
    cli: Callable, hub: HubServer, make_model_dir: Callable, download: Callable
) -> None:
    model = make_model_dir()
    result = cli(model, "tester/owl", "--revision", "conversion")
    assert result.returncode == 0, result.stderr
    repo = hub.state.repos["tester/owl"]
    assert set(repo.refs) == {"main", "conversion"}
    assert set(repo.resolve("main").files) == {".gitattributes"}
    assert (
        download("tester/owl", "config.json", revision="conversion")
        == (model / "config.json").read_bytes()
    )

    (model / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    result = cli(model, "tester/owl", "--revision", "conversion", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["revision"] == "conversion" and payload["changed"] is True
    changed = [f["path"] for f in payload["files"] if f["status"] == "uploaded"]
    assert changed == ["tokenizer_config.json"]


def test_create_pr_gives_a_pr_url_and_leaves_main_alone(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir()
    result = cli(model, "tester/owl", "--create-pr", "--commit-message", "Add the conversion")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        f"pull request: {hub.url}/tester/owl/discussions/1"
    )
    repo = hub.state.repos["tester/owl"]
    assert set(repo.resolve("main").files) == {".gitattributes"}
    pr_head = repo.resolve("refs/pr/1")
    assert "model.safetensors" in pr_head.files
    assert pr_head.title == "Add the conversion"

    result = cli(model, "tester/owl", "--create-pr", "--revision", "dev")
    assert "pull request against main" in assert_one_line_error(result, 2)


def test_commit_description_and_the_repo_url(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir()
    text = "Converted for the lab's benchmark."
    result = cli(model, "tester/owl", "--commit-description", text, "--json")
    assert result.returncode == 0, result.stderr
    assert hub.state.head("tester/owl").description == text
    assert json.loads(result.stdout)["repo_url"] == f"{hub.url}/tester/owl"
    human = cli(make_model_dir("other"), "tester/owl2")
    assert f"repo: {hub.url}/tester/owl2" in human.stdout.splitlines()
    dry = cli(model, "owl", "--dry-run", "--json")  # the token's user is not known yet
    assert json.loads(dry.stdout)["repo_url"] is None


def test_an_unchanged_push_says_nothing_was_uploaded(
    hub: HubServer, make_model_dir: Callable, tmp_path: Path
) -> None:
    """On a terminal: no upload bar for bytes that were never sent."""
    from owlvit_cli.testing.terminal import run_in_terminal

    model = make_model_dir()
    home = tmp_path / "hf_home_terminal"
    home.mkdir()
    env = {"HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
    args = ["push", model, "tester/owl", "--token", TOKEN, "--endpoint", hub.url]
    first = run_in_terminal(*args, env=env)
    assert first.exit_code == 0, first.text()
    upload_bar = re.compile(r"^\W*uploading\b")  # `✓ uploading  ━━━ 47.7 KiB/47.7 KiB`
    assert any(upload_bar.match(line) for line in first.lines), first.text()
    again = run_in_terminal(*args, env=env)
    assert again.exit_code == 0, again.text()
    assert not any(upload_bar.match(line) for line in again.lines), again.text()
    assert "nothing uploaded: tester/owl@main" in again.text()
    assert "already has every file, with the same content" in again.text()


def test_second_identical_push_uploads_nothing(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir(verification=verification_record())
    assert cli(model, "tester/owl").returncode == 0
    first_head = hub.state.head("tester/owl")
    assert len(hub.state.lfs_uploads) == 1
    hub.state.requests.clear()

    result = cli(model, "tester/owl", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["changed"] is False
    assert {f["status"] for f in payload["files"]} == {"unchanged"}
    assert len(hub.state.lfs_uploads) == 1  # no new LFS object
    assert "lfs_upload" not in hub.state.routes_called()
    assert "commit" not in hub.state.routes_called()
    assert hub.state.head("tester/owl") is first_head
    assert payload["commit_url"].endswith(first_head.oid)


def test_sharded_weights_are_pushed(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir(weights="sharded")
    result = cli(model, "tester/owl")
    assert result.returncode == 0, result.stderr
    files = hub.state.head("tester/owl").files
    assert files["model-00002-of-00002.safetensors"].is_lfs
    assert "model.safetensors.index.json" in files
    assert len(hub.state.lfs_uploads) == 2


def test_stored_login_token_is_used(
    cli: Callable, hub: HubServer, hf_home: Path, make_model_dir: Callable
) -> None:
    (hf_home / "token").write_text(TOKEN)
    result = cli(make_model_dir(), "tester/owl", token=None)
    assert result.returncode == 0, result.stderr
    assert hub.state.requests[0].authorization == f"Bearer {TOKEN}"
    assert_no_token(result)


def test_hf_token_and_hf_endpoint_from_the_environment(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    result = cli(
        make_model_dir(),
        "tester/owl",
        token=None,
        endpoint=None,
        env={"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url},
    )
    assert result.returncode == 0, result.stderr
    assert "tester/owl" in hub.state.repos
    assert_no_token(result)


def test_a_dropped_lfs_upload_is_retried(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    """huggingface_hub retries the LFS PUT once the connection drops (after a 1 s back-off)."""
    hub.state.fail("lfs_upload", action="drop", times=1)
    result = cli(make_model_dir(), "tester/owl")
    assert result.returncode == 0, result.stderr
    assert hub.state.count("lfs_upload") == 2
    assert len(hub.state.lfs_uploads) == 1


# --------------------------------------------------------------------------------------------
# Dry run and JSON


def test_dry_run_makes_zero_requests_and_prints_files_and_card(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir()
    result = cli(model, "tester/owl", "--dry-run", token=None)
    assert result.returncode == 0, result.stderr
    assert hub.state.requests == []
    size = (model / "model.safetensors").stat().st_size
    assert "model.safetensors" in result.stdout
    assert f"{size / 1024:.1f} KiB" in result.stdout
    assert "vocab.json" in result.stdout
    assert "library_name: transformers" in result.stdout
    assert "pipeline_tag: zero-shot-object-detection" in result.stdout
    assert "would commit to tester/owl@main" in result.stdout
    assert not (model / "README.md").exists()


def test_dry_run_needs_no_reachable_hub(cli: Callable, make_model_dir: Callable) -> None:
    result = cli(
        make_model_dir(), "tester/owl", "--dry-run", endpoint=f"http://127.0.0.1:{unused_port()}"
    )
    assert result.returncode == 0, result.stderr


def test_json_prints_exactly_one_object(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir()
    for extra in (["--dry-run"], []):
        result = cli(model, "tester/owl", "--json", *extra)
        assert result.returncode == 0, result.stderr
        payload = json.loads(result.stdout)  # fails on anything besides one JSON document
        assert isinstance(payload, dict)
        assert result.stdout.lstrip().startswith("{") and result.stdout.rstrip().endswith("}")
        assert payload["repo_id"] == "tester/owl"
        assert payload["revision"] == "main"
        assert payload["dry_run"] is bool(extra)
        assert payload["pr_url"] is None
        paths = {f["path"]: f for f in payload["files"]}
        assert paths["model.safetensors"]["size"] == (model / "model.safetensors").stat().st_size
        assert paths["README.md"]["source"] == "generated"
    head = hub.state.head("tester/owl")
    assert payload["commit_url"] == f"{hub.url}/tester/owl/commit/{head.oid}"
    assert paths["model.safetensors"]["storage"] == "lfs"
    assert_no_token(result)


# --------------------------------------------------------------------------------------------
# Refusals (exit 2)


BREAKAGES = {
    "missing": "no such directory",
    "file": "is not a directory",
    "no_config": "has no config.json",
    "not_owl": "model_type 'bert'",
    "no_weights": "has no model.safetensors or model.safetensors.index.json",
    "missing_shard": "lists missing shard",
    "no_record": "has no owlvit_conversion.json",
    "bad_record": "not written by owlvit",
    "wrong_version": "says version 2 but config.json is OWL-ViT",
}


def broken_model_dir(make_model_dir: Callable, breakage: str) -> Path:
    model = make_model_dir(weights="sharded" if breakage == "missing_shard" else "single")
    if breakage == "missing":
        return model.parent / "nowhere"
    if breakage == "file":
        return model / "config.json"
    if breakage == "no_config":
        (model / "config.json").unlink()
    elif breakage == "not_owl":
        (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    elif breakage == "no_weights":
        (model / "model.safetensors").unlink()
    elif breakage == "missing_shard":
        (model / "model-00002-of-00002.safetensors").unlink()
    elif breakage == "no_record":
        (model / "owlvit_conversion.json").unlink()
    elif breakage == "bad_record":
        (model / "owlvit_conversion.json").write_text(json.dumps({"tool": "other"}))
    elif breakage == "wrong_version":
        (model / "owlvit_conversion.json").write_text(json.dumps(conversion_record(2)))
    return model


@pytest.mark.parametrize("breakage", ["missing", "no_config", "no_weights", "no_record"])
def test_not_a_converted_directory_is_refused(
    cli: Callable, hub: HubServer, make_model_dir: Callable, breakage: str
) -> None:
    result = cli(broken_model_dir(make_model_dir, breakage), "tester/owl")
    assert BREAKAGES[breakage] in assert_one_line_error(result, 2)
    assert hub.state.requests == []


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_every_directory_check_names_its_reason(make_model_dir: Callable, breakage: str) -> None:
    """The same checks in-process (the CLI path above is the same code and exit 2)."""
    from owlvit_cli.errors import ModelDirError
    from owlvit_cli.model.model_dir import read_model_dir

    with pytest.raises(ModelDirError, match=re.escape(BREAKAGES[breakage])):
        read_model_dir(broken_model_dir(make_model_dir, breakage))


def test_force_skips_only_the_conversion_record_check(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir(record=False)
    result = cli(model, "tester/owl", "--force")
    assert result.returncode == 0, result.stderr
    card = load_card(hub.state.file_bytes("tester/owl", "README.md").decode())
    assert "Unknown: the directory had no `owlvit_conversion.json`" in card.text
    assert "| width | 48 | 32 |" in card.text  # config from config.json instead

    (model / "model.safetensors").unlink()
    result = cli(model, "tester/owl", "--force")
    assert "has no model.safetensors" in assert_one_line_error(result, 2)


BAD_REPO_IDS = ["a/b/c", "tester/bad name", "tester/x..y", "tester/-x", "bad name", "x..y"]


def test_bad_repo_id_is_refused(cli: Callable, hub: HubServer, make_model_dir: Callable) -> None:
    line = assert_one_line_error(cli(make_model_dir(), "a/b/c", "--dry-run"), 2)
    assert "REPO_ID must be NAME or OWNER/NAME" in line


@pytest.mark.parametrize("repo_id", BAD_REPO_IDS)
def test_repo_ids_are_checked_locally(repo_id: str) -> None:
    from owlvit_cli.errors import BadInputError
    from owlvit_cli.publish.hub import validate_repo_id

    with pytest.raises(BadInputError):
        validate_repo_id(repo_id)


def test_token_with_unsendable_characters_is_refused_without_echoing_it(
    cli: Callable, make_model_dir: Callable
) -> None:
    token = "hf_has a space"
    result = cli(make_model_dir(), "tester/owl", token=token)
    assert "cannot be sent in an HTTP header" in assert_one_line_error(result, 2)
    assert_no_token(result, token)


# --------------------------------------------------------------------------------------------
# Hub failures (exit 3)


def test_a_token_file_that_is_a_device_is_refused_not_read(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    result = cli(make_model_dir(), "tester/owl", token=None, env={"HF_TOKEN_PATH": "/dev/zero"})
    line = assert_one_line_error(result, 2)
    assert "token file /dev/zero is not a regular file" in line
    assert not hub.state.requests


def test_missing_token_fails_before_any_request(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    result = cli(make_model_dir(), "tester/owl", token=None)
    assert "no Hugging Face token" in assert_one_line_error(result, 3)
    assert hub.state.requests == []


HUB_FAILURES = {
    "wrong_token": "authentication failed (HTTP 401)",
    "other_namespace": "permission denied (HTTP 403)",
    "injected_401": "authentication failed (HTTP 401)",
    "injected_403": "permission denied (HTTP 403)",
    "injected_404": "not found (HTTP 404)",
    "injected_409": "conflict (HTTP 409)",
    "injected_500_create": "the Hub failed (HTTP 500)",
    "injected_503_commit": "the Hub failed (HTTP 503)",
    "connection_refused": "cannot connect to 127.0.0.1",
    "stalls": "did not answer within 0.5 s",
    "drops_commit": "broke off mid-request",
}
# --debug prints tracebacks: rerun the cases where the token could surface in one.
DEBUG_CASES = ("wrong_token", "injected_403")


@pytest.mark.parametrize(
    ("setup", "debug"),
    [(setup, False) for setup in HUB_FAILURES] + [(setup, True) for setup in DEBUG_CASES],
    ids=[*HUB_FAILURES, *(f"{setup}-debug" for setup in DEBUG_CASES)],
)
def test_hub_errors_are_one_line_exit_3_and_never_show_the_token(
    cli: Callable, hub: HubServer, make_model_dir: Callable, setup: str, debug: bool
) -> None:
    expected = HUB_FAILURES[setup]
    token, repo_id, endpoint, args = TOKEN, "tester/owl", "server", ["--timeout", "0.5"]
    state = hub.state
    if setup == "wrong_token":
        token = WRONG_TOKEN
    elif setup == "other_namespace":
        repo_id = "someone-else/owl"
    elif setup == "injected_401":
        state.fail("create_repo", 401, message="token expired")
    elif setup == "injected_403":
        state.fail("create_repo", 403, message="no write access", echo_auth=True)
    elif setup == "injected_404":
        state.fail("preupload", 404, error_code="RepoNotFound", echo_auth=True)
    elif setup == "injected_409":
        state.fail("commit", 409, message="A commit has happened since", echo_auth=True)
    elif setup == "injected_500_create":
        state.fail("create_repo", 500, echo_auth=True)
    elif setup == "injected_503_commit":
        state.fail("commit", 503, echo_auth=True)
    elif setup == "connection_refused":
        endpoint = f"http://127.0.0.1:{unused_port()}"
    elif setup == "stalls":
        state.fail("commit", action="hang", delay=2.0)
    elif setup == "drops_commit":
        state.fail("commit", action="drop")

    result = cli(make_model_dir(), repo_id, *args, *(["--debug"] if debug else []),
                 token=token, endpoint=endpoint)  # fmt: skip

    assert_no_token(result, token, TOKEN)
    if debug:
        assert result.returncode == 3, result.stderr
        assert result.stdout == ""
        assert "Traceback" in result.stderr  # --debug shows the chain, redacted
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
        assert expected in result.stderr
    else:
        assert expected in assert_one_line_error(result, 3)
    if setup in ("injected_403", "injected_409"):
        assert "***" in result.stderr  # the echoed Authorization header was redacted


def test_a_rejected_card_is_bad_input(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir(readme="---\nlicense: [not, a, string]\n---\n# card\n")
    result = cli(model, "tester/owl")
    assert "rejected README.md's metadata" in assert_one_line_error(result, 2)
    assert "commit" not in hub.state.routes_called()


# --------------------------------------------------------------------------------------------
# What is uploaded: the model's own files, patterns as `hf upload`

MODEL_FILES = [  # what make_model_dir writes, in upload order, plus the generated card
    "config.json",
    "model.safetensors",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "owlvit_conversion.json",
    "README.md",
]
LITTER = {".env": "HF_TOKEN=hf_leaked_secret\n", ".ipynb_checkpoints/a": "{}", "outputs.npz": "x"}


def add_litter(model: Path) -> Path:
    for name, text in LITTER.items():
        (model / name).parent.mkdir(exist_ok=True)
        (model / name).write_text(text)
    return model


def test_dry_run_lists_exactly_the_model_files(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = add_litter(make_model_dir())
    result = cli(model, "tester/owl", "--dry-run", "--json", token=None)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [f["path"] for f in payload["files"]] == MODEL_FILES
    assert payload["left_out"] == [
        {"path": ".env", "reason": "hidden"},
        {"path": ".ipynb_checkpoints/a", "reason": "hidden"},
        {"path": "outputs.npz", "reason": "not a model file"},
    ]
    human = cli(model, "tester/owl", "--dry-run", token=None).stdout
    assert re.search(r"left out.*\.env.*hidden.*outputs\.npz.*not a model file", human, re.S)
    assert hub.state.requests == []


def test_env_never_leaves_the_machine(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = add_litter(make_model_dir())
    result = cli(model, "tester/owl", "--include", "*")  # '*' alone never names hidden files
    assert result.returncode == 0, result.stderr
    received = hub.state.head("tester/owl").files
    assert sorted(received) == sorted([*MODEL_FILES, ".gitattributes", "outputs.npz"])
    everything = b"".join(hub.state.lfs_objects.values()) + b"".join(
        entry.content or b"" for entry in received.values()
    )
    assert b"hf_leaked_secret" not in everything
    assert not any(".env" in r.path or "ipynb" in r.path for r in hub.state.requests)


SECRET = "TOP-SECRET-BYTES from outside the model directory"


def everything_on_the_hub(hub: HubServer, repo_id: str) -> bytes:
    files = hub.state.head(repo_id).files if repo_id in hub.state.repos else {}
    return b"".join(hub.state.lfs_objects.values()) + b"".join(
        entry.content or b"" for entry in files.values()
    )


@pytest.mark.parametrize(
    ("name", "link", "args"),
    [
        ("README.md", "secret", []),
        ("merges.txt", "secret", []),
        ("notes.md", "secret", ["--include", "*"]),
        ("notes.md", "chain", ["--include", "*"]),  # a link to a link that leads out
        ("notes.md", "secret", ["--include", "notes.md"]),
        ("README.md", "secret", ["--overwrite-card", "--save-card"]),
    ],
    ids=["readme", "merges", "include-star", "link-to-link", "include-name", "save-card"],
)
def test_a_symlink_leading_outside_is_refused_before_any_request(
    cli: Callable, hub: HubServer, make_model_dir: Callable, tmp_path: Path,
    name: str, link: str, args: list[str],
) -> None:  # fmt: skip
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    model = make_model_dir()
    (tmp_path / "chain").symlink_to(secret)
    (model / name).unlink(missing_ok=True)
    (model / name).symlink_to(tmp_path / link)
    for extra in (["--dry-run"], []):
        result = cli(model, "tester/owl", *args, *extra)
        line = assert_one_line_error(result, 2)
        assert f"{name} -> {secret}" in line and "symlinks that lead outside" in line
        assert SECRET not in result.stdout + result.stderr
    assert not hub.state.requests
    assert secret.read_text() == SECRET  # --save-card did not write through the link


def test_symlinks_are_judged_by_where_they_lead(
    cli: Callable, hub: HubServer, make_model_dir: Callable, tmp_path: Path
) -> None:
    """Inside links go up with their content; a link to a hidden file is hidden; a linked
    folder is never followed; a link that leads out but is not selected is only left out."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(SECRET)
    model = make_model_dir()
    (model / ".env").write_text(SECRET)
    (model / "docs").mkdir()
    (model / "docs" / "notes.txt").write_text("inside notes")
    (model / "notes.md").symlink_to("docs/notes.txt")
    (model / "env.md").symlink_to(".env")
    (model / "linked").symlink_to(outside, target_is_directory=True)
    (model / "away.md").symlink_to(outside / "secret.md")
    shown = tmp_path / "shown"  # HF_DIR itself may be a symlink
    shown.symlink_to(model, target_is_directory=True)

    result = cli(shown, "tester/owl", "--include", "*.md", "--include", "linked/*",
                 "--exclude", "away.md", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    left_out = {item["path"]: item["reason"] for item in payload["left_out"]}
    assert left_out["env.md"] == "hidden (a symlink to .env)"
    assert left_out["linked"] == "symlinked folder, not followed"
    assert left_out["away.md"] == "excluded by away.md"
    files = hub.state.head("tester/owl").files
    assert files["notes.md"].content == b"inside notes"
    assert not {"env.md", "away.md", ".env"} & set(files)
    assert not any(path.startswith("linked") for path in files)
    assert SECRET.encode() not in everything_on_the_hub(hub, "tester/owl")

    hidden = cli(shown, "tester/other", "--include", "*.md", "--include", ".env",
                 "--exclude", "away.md", "--dry-run", "--json")  # fmt: skip
    names = {f["path"] for f in json.loads(hidden.stdout)["files"]}
    assert {"env.md", ".env"} <= names  # a pattern that names hidden files asks for them


def test_a_shard_behind_a_symlinked_folder_is_refused(
    cli: Callable, hub: HubServer, make_model_dir: Callable, tmp_path: Path
) -> None:
    """The index names `shards/...`, and `shards` links elsewhere: never a broken repo."""
    model = make_model_dir(weights="sharded")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    index = json.loads((model / "model.safetensors.index.json").read_text())
    for shard in set(index["weight_map"].values()):
        (model / shard).rename(elsewhere / shard)
    index["weight_map"] = {k: f"shards/{v}" for k, v in index["weight_map"].items()}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    (model / "shards").symlink_to(elsewhere, target_is_directory=True)
    line = assert_one_line_error(cli(model, "tester/owl", "--dry-run"), 2)
    assert "shards/model-00001-of-00002.safetensors (through a symlinked folder)" in line
    assert not hub.state.requests


def test_a_symlink_planted_after_the_check_is_not_followed(
    hub: HubServer, hf_home: Path, make_model_dir: Callable, tmp_path: Path
) -> None:
    """The run is held after the checks, before any file is opened; config.json becomes a
    link to a secret meanwhile: the push stops with one line and the secret stays home."""
    import time

    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    model = make_model_dir()
    hold = tmp_path / "hold"
    environ = {k: v for k, v in os.environ.items() if k not in HF_ENV_VARS}
    environ.update(HF_HOME=str(hf_home), HF_HUB_DISABLE_XET="1", PYTHONPATH=str(REPO_ROOT),
                   OWLVIT_TEST_HOLD=f"push-before-reading:{hold}")  # fmt: skip
    args = ["push", model, "tester/owl", "--token", TOKEN, "--endpoint", hub.url]
    proc = subprocess.Popen([sys.executable, "-m", "owlvit_cli", *map(str, args)], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not hold.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    (model / "config.json").unlink()
    (model / "config.json").symlink_to(secret)
    hold.unlink()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot read config.json" in errors[0], err
    assert "Traceback" not in err and out == ""
    assert SECRET.encode() not in everything_on_the_hub(hub, "tester/owl")


def test_a_model_file_linked_to_a_hidden_file_is_refused(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir()
    (model / ".secret").write_text(SECRET)
    (model / "merges.txt").unlink()
    (model / "merges.txt").symlink_to(".secret")
    line = assert_one_line_error(cli(model, "tester/owl"), 2)
    assert "merges.txt -> " in line and ".secret" in line
    assert not hub.state.requests


@pytest.mark.parametrize(
    ("include", "exclude", "added", "removed"),
    [
        ([], [], [], []),
        (["*.npz"], [], ["outputs.npz"], []),
        (["*"], [], ["outputs.npz"], []),
        ([".env"], [], [".env"], []),
        ([".*"], [], [".env", ".ipynb_checkpoints/a"], []),
        ([".ipynb_checkpoints/"], [], [".ipynb_checkpoints/a"], []),
        ([], ["merges.txt", "*.json"], [], ["merges.txt", "config.json", "vocab.json"]),
        (["*"], ["outputs.*"], [], []),
    ],
)
def test_include_and_exclude_patterns(
    make_model_dir: Callable,
    include: list[str],
    exclude: list[str],
    added: list[str],
    removed: list[str],
) -> None:
    from owlvit_cli.publish.hub import plan_push

    model = add_litter(make_model_dir())
    plan = plan_push(model, "tester/owl", include=include, exclude=exclude)
    expected = {*MODEL_FILES, *added} - set(removed)
    if any(p.endswith(".json") for p in exclude):
        expected -= {n for n in MODEL_FILES if n.endswith(".json")}
    assert {f.path_in_repo for f in plan.files} == expected
    assert plan.files[-1].path_in_repo == "README.md"  # the card goes last
    assert {item.path for item in plan.left_out} == (set(LITTER) | set(MODEL_FILES)) - expected


def test_delete_removes_remote_files_in_the_same_commit(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = add_litter(make_model_dir())
    assert cli(model, "tester/owl", "--include", "outputs.npz").returncode == 0
    assert "outputs.npz" in hub.state.head("tester/owl").files
    (model / "outputs.npz").unlink()
    commits = len(hub.state.repos["tester/owl"].commits)

    result = cli(model, "tester/owl", "--delete", "*.npz", "--delete", "*.json", "--json")

    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["deleted"] == ["outputs.npz"]  # uploaded files and .gitattributes stay
    files = hub.state.head("tester/owl").files
    assert "outputs.npz" not in files and "config.json" in files and ".gitattributes" in files
    assert len(hub.state.repos["tester/owl"].commits) == commits + 1


# --------------------------------------------------------------------------------------------
# Checks before the network


def safetensors_bytes(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


INCOMPLETE = {
    "empty_weights": ("model.safetensors", b"", "is not a safetensors file (0 bytes"),
    "garbage_weights": ("model.safetensors", b"\xff" * 64, "is not a safetensors file"),
    "bad_header": ("model.safetensors", b"\x05" + b"\0" * 7 + b"{nope", "corrupt safetensors"),
    "no_tensors": ("model.safetensors", safetensors_bytes({}, b""), "holds no tensors"),
    "truncated": (
        "model.safetensors",
        safetensors_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"1"),
        "is truncated or padded",
    ),
    "bad_config": ("config.json", b"{", "not valid JSON"),
    "no_tokenizer": ("tokenizer_config.json", None, "has no tokenizer: tokenizer_config.json"),
    "no_vocab": ("merges.txt", None, "has no tokenizer: merges.txt missing"),
    "no_processor": ("preprocessor_config.json", None, "has no image processor"),
}


@pytest.mark.parametrize("case", list(INCOMPLETE))
def test_an_incomplete_directory_is_refused(make_model_dir: Callable, case: str) -> None:
    from owlvit_cli.errors import ModelDirError
    from owlvit_cli.model.model_dir import check_complete, read_model_dir

    name, content, message = INCOMPLETE[case]
    model = make_model_dir()
    check_complete(model)  # complete before the breakage
    if content is None:
        (model / name).unlink()
    else:
        (model / name).write_bytes(content)
    with pytest.raises(ModelDirError, match=re.escape(message)):
        read_model_dir(model, force=True)  # --force never waives completeness
    with pytest.raises(ModelDirError):
        check_complete(model)


def test_an_incomplete_directory_fails_a_dry_run(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir()
    (model / "model.safetensors").write_bytes(b"")
    assert "not a safetensors file" in assert_one_line_error(
        cli(model, "tester/owl", "--dry-run"), 2
    )
    assert hub.state.requests == []


def test_tokenizer_json_alone_is_a_tokenizer(make_model_dir: Callable) -> None:
    from owlvit_cli.model.model_dir import check_complete

    model = make_model_dir()
    (model / "tokenizer.json").write_text("{}")
    (model / "vocab.json").unlink()
    (model / "merges.txt").unlink()
    check_complete(model)


BAD_REVISIONS = ["a b", "../x", "x..y", "-x", "x" * 300, "refs/tags/v1", "x.lock", "a//b",
                 "dev/", ".hidden", "a:b", "a~1", "@", "x@{1}", ""]  # fmt: skip


@pytest.mark.parametrize("revision", BAD_REVISIONS)
def test_bad_revisions_are_refused_before_the_network(revision: str) -> None:
    from owlvit_cli.errors import BadInputError
    from owlvit_cli.publish.names import validate_revision

    with pytest.raises(BadInputError, match="invalid revision"):
        validate_revision(revision)


@pytest.mark.parametrize(
    ("revision", "expected"),
    [
        (None, "main"),
        ("dev", "dev"),
        ("refs/heads/dev", "dev"),
        ("feature/x-1.2", "feature/x-1.2"),
        ("refs/pr/3", "refs/pr/3"),
        ("x" * 255, "x" * 255),
    ],
)
def test_good_revisions(revision: str | None, expected: str) -> None:
    from owlvit_cli.publish.names import validate_revision

    assert validate_revision(revision) == expected


def test_a_bad_revision_fails_a_dry_run(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    result = cli(make_model_dir(), "tester/owl", "--revision", "x..y", "--dry-run")
    assert "invalid revision 'x..y'" in assert_one_line_error(result, 2)
    assert hub.state.requests == []


def test_a_failed_verification_is_refused_before_the_network(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    record = {**verification_record(passed=False), "failed": ["model/pred_boxes"]}
    model = make_model_dir(verification=record)
    for extra in ([], ["--dry-run"]):
        line = assert_one_line_error(cli(model, "tester/owl", *extra), 1)
        assert "records a FAILED verification (model/pred_boxes)" in line
        assert "--force" in line
    assert hub.state.requests == []


def test_force_publishes_a_failed_verification_and_the_card_says_so(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir(verification=verification_record(passed=False))
    result = cli(model, "tester/owl", "--force")
    assert result.returncode == 0, result.stderr
    assert "records a FAILED verification" in result.stderr
    card = load_card(hub.state.file_bytes("tester/owl", "README.md").decode())
    assert "**FAILED**" in card.text
    assert "Published despite the failed verification** (`owlvit push --force`)" in card.text
    assert "| pred_boxes | model | 2.2e-07 | 0.0001 | FAIL |" in card.text


def test_a_missing_verification_is_reported_before_the_first_request(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    hub.state.fail("*", 500)  # the very first request fails: the warning came before it
    result = cli(make_model_dir(), "tester/owl")
    lines = problem_lines(result.stderr)
    assert result.returncode == 3
    assert lines[0].startswith("warning: no owlvit_verification.json")
    assert lines[-1].startswith("error: creating repo tester/owl failed")


# --------------------------------------------------------------------------------------------
# A bare REPO_ID: the token's namespace


def test_a_bare_repo_id_goes_to_the_tokens_user(
    cli: Callable, hub: HubServer, make_model_dir: Callable
) -> None:
    model = make_model_dir()
    dry = cli(model, "owl", "--dry-run", "--json", token=None)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["repo_id"] is None
    assert "would commit to <token's user>/owl@main" in cli(model, "owl", "--dry-run").stdout

    result = cli(model, "owl", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["repo_id"] == "tester/owl"
    assert hub.state.routes_called()[0] == "whoami"
    card = hub.state.file_bytes("tester/owl", "README.md").decode()
    assert 'from_pretrained("tester/owl")' in card and '"owl"' not in card
    human = cli(model, "owl")
    assert f"tester/owl@main on {hub.url}" in human.stdout  # nothing changed: same files


# --------------------------------------------------------------------------------------------
# Secrets: a server that echoes every credential back


PASSWORD = "pa55-w0rd"
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("with_credentials", [False, True], ids=["token", "url-credentials"])
def test_no_credential_is_printed_even_when_the_server_echoes_them(
    cli: Callable, hub: HubServer, make_model_dir: Callable, debug: bool, with_credentials: bool
) -> None:
    hub.state.echo_credentials = True
    endpoint = (
        hub.url.replace("http://", f"http://alice:{PASSWORD}@") if with_credentials else hub.url
    )
    args = ["--json", *(["--debug"] if debug else [])]
    result = cli(make_model_dir(), "owl", *args, endpoint=endpoint)
    output = result.stdout + result.stderr
    for secret in (TOKEN, PASSWORD, BASIC, BASIC.rstrip("=")):
        assert secret not in output
    assert hub.state.requests  # the server was reached and echoed
    if with_credentials:  # httpx sends the URL's Basic credentials instead of the token
        assert hub.state.requests[0].authorization == f"Basic {BASIC}"
        assert result.returncode == 3 and "HTTP 401" in output
        assert "***" in output or not debug  # the echoed value, redacted in the traceback
    else:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["repo_id"] == "tester/owl"
    if debug:
        assert "authenticated: True" in output or "Traceback" in output  # debug logs were on


def test_url_credentials_are_not_shown_in_a_dry_run(
    cli: Callable, make_model_dir: Callable
) -> None:
    endpoint = f"https://alice:{PASSWORD}@hub.example"
    result = cli(make_model_dir(), "tester/owl", "--dry-run", "--json", endpoint=endpoint)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["endpoint"] == "https://***@hub.example"
    assert PASSWORD not in result.stdout + result.stderr
    bad = cli(make_model_dir("other"), "tester/owl", "--dry-run", endpoint=f"alice:{PASSWORD}@x")
    assert PASSWORD not in assert_one_line_error(bad, 2)


@pytest.mark.parametrize(
    "endpoint",
    [
        f"https:/alice:{PASSWORD}@hub.example",
        f"https://alice:{PASSWORD}/x@hub.example",
        f"https://alice:{PASSWORD}?x@hub.example",
        f"https://alice:{PASSWORD}#x@hub.example",
        f"https://alice:{PASSWORD}",
        "http://[::1",
        "https://hub.example\n",
        f"https://hub.example/?token={PASSWORD}",
    ],
    ids=["one-slash", "slash", "question", "hash", "no-host", "ipv6", "newline", "query"],
)
@pytest.mark.parametrize("json_mode", [False, True], ids=["human", "json"])
def test_a_malformed_endpoint_is_one_line_exit_2_without_the_password(
    cli: Callable, hub: HubServer, make_model_dir: Callable, endpoint: str, json_mode: bool
) -> None:
    result = cli(make_model_dir(), "tester/owl", *(["--json"] if json_mode else []),
                 endpoint=endpoint)  # fmt: skip
    assert PASSWORD not in result.stdout + result.stderr
    assert not hub.state.requests
    if json_mode:
        assert result.returncode == 2, result.stderr
        error = json.loads(result.stdout)["error"]
        assert error["code"] == 2 and "unusable endpoint" in error["message"]
    else:
        assert "unusable endpoint" in assert_one_line_error(result, 2)


# --------------------------------------------------------------------------------------------
# The card


def card_for(make_model_dir: Callable, version: int = 2, **verification: Any) -> str:
    from owlvit_cli.publish.hub import plan_push

    record = {**verification_record(), **verification}
    plan = plan_push(make_model_dir(version=version, verification=record), "tester/owl")
    assert plan.card_text is not None
    return plan.card_text


@pytest.mark.parametrize("version", [1, 2])
def test_card_metadata_survives_huggingface_hubs_round_trip(
    make_model_dir: Callable, version: int
) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    text = card_for(make_model_dir, version)
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data == {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "zero-shot-object-detection",
        "tags": [FLAVOR_TAGS[version], "vision", "object-detection", "zero-shot-object-detection"],
    }
    assert ModelCardData(**data).to_dict() == data
    assert str(ModelCard(str(card))) == str(card) == text  # stable through load and dump


FLAVOR_TAGS = {1: "owlvit", 2: "owlv2"}


def test_card_verification_rows_say_info_pass_or_fail(make_model_dir: Callable) -> None:
    rows = verification_record()["outputs"] + [
        {"name": "pixels", "level": "processor", "max_abs": 0.5, "tolerance": None,
         "passed": True},
        {"name": "objectness", "level": "stock", "max_abs": 0.01, "tolerance": 0.001,
         "passed": False},
    ]  # fmt: skip
    text = card_for(make_model_dir, outputs=rows, dtype="bfloat16")
    assert "| pixels | processor | 0.5 | — | info |" in text
    assert "| logits | model | 3.1e-06 | 0.0001 | pass |" in text
    assert "| objectness | stock | 0.01 | 0.001 | FAIL |" in text
    assert "scenic Flax model on the same inputs, in bfloat16 (checkpoint sha256" in text
    assert "| pass |" not in text.split("| pixels |")[1].splitlines()[0]


def test_card_states_each_difference_from_scenic_in_one_sentence(make_model_dir: Callable) -> None:
    text = card_for(make_model_dir)
    section = text.split("## Differences from scenic\n\n")[1].split("\n\n")[0]
    bullets = section.splitlines()
    assert [b.split("**")[1] for b in bullets] == ["Preprocessing", "Boxes", "Tokenizer"]
    for bullet in bullets:
        assert bullet.endswith(".")
        assert not re.search(r"[.!?] [A-Z]", bullet.replace("e.g. ", "")), bullet  # one sentence
    preprocessing, boxes, tokenizer = bullets
    assert "`OwlViTImageProcessor`" in preprocessing or "`Owlv2ImageProcessor`" in preprocessing
    for fact in ("pads the image bottom/right with 0.0", "anti-aliasing", "evaluator",
                 "without anti-aliasing", "0.5 gray"):  # fmt: skip
        assert fact in preprocessing
    assert "padded square" in boxes and "max(h, w)" in boxes
    assert "16 tokens" in tokenizer and "<|endoftext|>" in tokenizer


@pytest.mark.parametrize("version", [1, 2])
def test_card_cites_the_papers_in_bibtex(make_model_dir: Callable, version: int) -> None:
    text = card_for(make_model_dir, version)
    bibtex = text.split("```bibtex\n")[1].split("```")[0]
    entries = re.findall(r"@inproceedings\{(\w+),\n(.*?)\n\}", bibtex, re.S)
    assert bibtex.count("{") == bibtex.count("}")
    keys = [key for key, _ in entries]
    assert keys == ["minderer2022simple", "minderer2023scaling"][:version]
    fields = dict(re.findall(r"(\w+)\s*= \{(.*)\},?$", entries[0][1], re.M))
    assert fields["title"] == "Simple Open-Vocabulary Object Detection with Vision Transformers"
    assert fields["author"].startswith("Minderer, Matthias and ")
    assert "ECCV" in fields["booktitle"] and fields["year"] == "2022"
    if version == 2:
        fields = dict(re.findall(r"(\w+)\s*= \{(.*)\},?$", entries[1][1], re.M))
        assert fields["title"] == "Scaling Open-Vocabulary Object Detection"
        assert "NeurIPS" in fields["booktitle"] and fields["year"] == "2023"


@pytest.fixture
def image_server(tmp_path: Path) -> Any:
    """A local HTTP server with one picture, for the card's image URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(tmp_path / "cats.jpg")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cats.jpg"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_the_cards_snippets_run_as_pasted(
    cli: Callable,
    hub: HubServer,
    hf_home: Path,
    tiny_checkpoint: Callable,
    converted: Callable,
    image_server: str,
) -> None:
    """Done when the card's code, pasted as it is (only the Hub endpoint and the image URL
    pointed at local servers), prints boxes in image pixels for the pushed repo."""
    from owlvit_cli.publish.card_usage import SNIPPET_IMAGE_URL

    model = converted(tiny_checkpoint("v2-tiny", "v2"))
    assert cli(model, "tester/owl2").returncode == 0
    card = hub.state.file_bytes("tester/owl2", "README.md").decode()
    snippets = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(snippets) == 2 and all(SNIPPET_IMAGE_URL in code for code in snippets)

    environ = {k: v for k, v in os.environ.items() if k not in HF_ENV_VARS}
    environ.update(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_HUB_DISABLE_XET="1")
    for code in snippets:
        pasted = code.replace(SNIPPET_IMAGE_URL, image_server)
        result = subprocess.run(
            [sys.executable, "-c", pasted], capture_output=True, text=True, env=environ,
            cwd=hf_home, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines, "no boxes printed"
        for line in lines:
            numbers = [float(n) for n in re.findall(r"-?\d+\.?\d*", line.split("at", 1)[-1])]
            assert "a photo of a" in line and len(numbers) >= 4, line
    assert any(r.route == "resolve" and r.path.endswith("model.safetensors")
               for r in hub.state.requests)  # fmt: skip


def test_card_for_a_stretching_processor_scales_boxes_by_height_and_width(
    make_model_dir: Callable,
) -> None:
    """A hand-made directory with transformers' stock v1 processor (no padding, --force)."""
    text = card_for(make_model_dir, 1)  # make_model_dir saves OwlViTImageProcessor for v1
    assert "`OwlViTImageProcessor` stretches the image to a square without padding" in text
    assert "size = image.size[::-1]" in text and "max(image.size)" not in text
