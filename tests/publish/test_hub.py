"""`owlvit push`, end to end: the CLI runs as a subprocess against a local Hub-compatible server.

The subprocess gets an isolated HF_HOME, HF_HUB_DISABLE_XET=1 (the local server speaks the
plain LFS protocol), HF_HUB_DISABLE_TELEMETRY=1 and no HF_HUB_OFFLINE, all set before it
imports huggingface_hub. Files are read back with `hf_hub_download` from the same server.

The model directory is built here rather than by `owlvit convert`: push only reads files, and
a converted-looking directory (a transformers config, a small safetensors file and an
owlvit_conversion.json following the convert schema) keeps these tests fast and independent.
"""

from __future__ import annotations

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


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """Exit code, nothing on stdout, exactly one `error:` line on stderr, no traceback (and
    nothing else but the card's warnings, which push prints before it uploads)."""
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


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
    assert "| image_embeds | layer | 1.5e-06 | — | pass |" in card.text
    assert "Owlv2ForObjectDetection" in card.text and "Owlv2Processor" in card.text
    assert "objectness head: yes" in card.text
    assert "holds local paths (hf_dir)" in result.stderr


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

    plan = plan_push(make_model_dir(verification=verification), "tester/owl")
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

    # An existing public repo is not silently used for a --private push.
    assert cli(model, "tester/public").returncode == 0
    result = cli(model, "tester/public", "--private")
    line = assert_one_line_error(result, 2)
    assert "already exists and is public" in line


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
    "missing": "does not exist",
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


BAD_REPO_IDS = ["no-namespace", "a/b/c", "tester/bad name", "tester/x..y", "tester/-x"]


def test_bad_repo_id_is_refused(cli: Callable, hub: HubServer, make_model_dir: Callable) -> None:
    line = assert_one_line_error(cli(make_model_dir(), "no-namespace", "--dry-run"), 2)
    assert "REPO_ID must be OWNER/NAME" in line


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
