"""The local Hub server answers huggingface_hub's own client the way the Hub does.

These run `HfApi` in-process against `tests/hub_server.py`, so a change in huggingface_hub's
protocol shows up here, next to the server, rather than as a puzzling `owlvit push` failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub_server import HubServer, HubState, unused_port

TOKEN = "hf_test_token"
# huggingface_hub's own LFS PUT (`data=fileobj`) trips an httpx2 deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A server, and huggingface_hub set up as the subprocess tests set it up via env vars."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain LFS, not Xet
    bars_were_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        with HubServer(HubState(tokens={TOKEN: "tester"}, orgs={"team": {"tester"}})) as server:
            yield server
    finally:
        if not bars_were_disabled:
            enable_progress_bars()


@pytest.fixture
def api(hub: HubServer) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.url, token=TOKEN)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "folder"
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text('{"a": 1}')
    (path / "sub" / "notes.txt").write_text("hello")
    (path / "weights.safetensors").write_bytes(bytes(range(256)) * 400)
    return path


def test_upload_folder_and_download_back(
    hub: HubServer, api: Any, folder: Path, tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download

    api.create_repo("team/model", private=True)
    info = api.upload_folder(repo_id="team/model", folder_path=folder, commit_message="first")
    assert info.oid == hub.state.head("team/model").oid
    assert info.commit_url == f"{hub.url}/team/model/commit/{info.oid}"

    for name in ("config.json", "sub/notes.txt", "weights.safetensors"):
        path = hf_hub_download(
            "team/model", name, endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "cache"
        )
        assert Path(path).read_bytes() == (folder / name).read_bytes()
    weights = (folder / "weights.safetensors").read_bytes()
    assert hub.state.lfs_uploads == [hashlib.sha256(weights).hexdigest()]
    assert api.model_info("team/model").private is True


def test_listing_endpoints(hub: HubServer, api: Any, folder: Path) -> None:
    api.create_repo("tester/model")
    api.upload_folder(repo_id="tester/model", folder_path=folder)
    assert sorted(api.list_repo_files("tester/model")) == [
        ".gitattributes",
        "config.json",
        "sub/notes.txt",
        "weights.safetensors",
    ]
    top = {entry.path for entry in api.list_repo_tree("tester/model")}
    assert top == {".gitattributes", "config.json", "sub", "weights.safetensors"}
    (weights,) = api.get_paths_info("tester/model", ["weights.safetensors", "missing"])
    assert weights.lfs is not None and weights.lfs.size == 256 * 400
    assert api.file_exists("tester/model", "config.json")
    assert not api.file_exists("tester/model", "nope.json")
    assert api.whoami()["name"] == "tester"


def test_create_repo_conflict_and_exist_ok(hub: HubServer, api: Any) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    url = api.create_repo("tester/model")
    assert api.create_repo("tester/model", exist_ok=True) == url
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("tester/model")
    assert info.value.response.status_code == 409
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("someone/model")
    assert info.value.response.status_code == 403


def test_branches_and_pull_requests(hub: HubServer, api: Any, folder: Path) -> None:
    api.create_repo("tester/model")
    api.create_branch("tester/model", branch="dev")
    api.create_branch("tester/model", branch="dev", exist_ok=True)
    api.upload_folder(repo_id="tester/model", folder_path=folder, revision="dev")
    pr = api.upload_folder(repo_id="tester/model", folder_path=folder, create_pr=True)
    assert pr.pr_url == f"{hub.url}/tester/model/discussions/1"
    assert pr.pr_revision == "refs/pr/1"
    refs = api.list_repo_refs("tester/model", include_pull_requests=True)
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]
    assert "config.json" not in api.list_repo_files("tester/model")
    assert "config.json" in api.list_repo_files("tester/model", revision="refs/pr/1")


def test_identical_upload_is_a_no_op(hub: HubServer, api: Any, folder: Path) -> None:
    api.create_repo("tester/model")
    first = api.upload_folder(repo_id="tester/model", folder_path=folder)
    hub.state.requests.clear()
    second = api.upload_folder(repo_id="tester/model", folder_path=folder)
    assert second.oid == first.oid
    assert "lfs_upload" not in hub.state.routes_called()
    assert "commit" not in hub.state.routes_called()


def test_failure_injection_and_request_log(hub: HubServer, api: Any) -> None:
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    rule = hub.state.fail("create_repo", 418, times=1, echo_auth=True)
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("tester/model")
    assert info.value.response.status_code == 418
    assert TOKEN in str(info.value)  # echoed, as a misbehaving proxy would
    api.create_repo("tester/model")  # `times=1`: the next one goes through
    assert rule.hits == 1
    assert [r.status for r in hub.state.requests] == [418, 200]
    assert hub.state.requests[0].authorization == f"Bearer {TOKEN}"

    hub.state.fail("whoami", action="drop")
    with pytest.raises(httpx2.RemoteProtocolError):
        api.whoami()
    with pytest.raises(httpx2.ConnectError):
        HfApi(endpoint=f"http://127.0.0.1:{unused_port()}", token=TOKEN).whoami()


def test_bad_token_is_401(hub: HubServer) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as info:
        HfApi(endpoint=hub.url, token="hf_nope").create_repo("tester/model")
    assert info.value.response.status_code == 401


def test_echo_credentials_sends_them_back_in_headers_and_bodies(hub: HubServer, api: Any) -> None:
    """What the secrecy tests of `owlvit push` rely on: the echo really happens."""
    import httpx2

    hub.state.echo_credentials = True
    ok = httpx2.get(f"{hub.url}/api/whoami-v2", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.headers["X-Echo-Authorization"] == f"Bearer {TOKEN}"
    assert ok.json()["echo"]["authorization"] == f"Bearer {TOKEN}"
    bad = httpx2.get(f"{hub.url}/api/whoami-v2", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and "Bearer nope" in bad.json()["error"]
    assert api.whoami()["name"] == "tester"  # huggingface_hub still parses echoed answers
