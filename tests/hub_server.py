"""A Hub-compatible HTTP server on 127.0.0.1, for testing `owlvit push` without the internet.

It speaks the part of the Hub API that huggingface_hub 2.x's `HfApi` uses to publish and
download a model (read from its source: hf_api.py, _commit_api.py, lfs.py, file_download.py):

    GET  /api/whoami-v2
    POST /api/repos/create                       409 + {"url"} when the repo exists
    POST /api/validate-yaml                      README metadata check before a commit
    GET  /api/models/{repo}[/revision/{rev}]     repo info (sha, private, siblings)
    GET  /api/models/{repo}/refs
    POST /api/models/{repo}/branch/{branch}      409 when it exists
    POST /api/models/{repo}/preupload/{rev}      upload mode (lfs/regular) + remote oid
    POST /{repo}.git/info/lfs/objects/batch      LFS batch: upload action only if missing
    PUT  /_lfs/{repo}/{oid}                      the "S3" upload address the batch returns
    POST /{repo}.git/info/lfs/objects/verify
    POST /api/models/{repo}/commit/{rev}         NDJSON commit (adds, deletedFile/deletedFolder),
                                                 ?create_pr=1 opens a PR
    GET  /api/models/{repo}/tree/{rev}[/{path}]
    POST /api/models/{repo}/paths-info/{rev}
    HEAD/GET /{repo}/resolve/{rev}/{path}        X-Repo-Commit, ETag, X-Linked-Etag/Size

All state is in memory (`HubState`): repos with branches, PR refs and commits, an LFS object
store, a log of every request, and failure rules that make a route answer an error status,
drop the connection, or stall (see `HubState.fail`), and `echo_credentials`, which sends
every request's Authorization header, Host and URL back in response headers and bodies.
Tokens map to user names; a user may write to its own namespace and its orgs' (anything else
is a 403, like the Hub).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_EXTENSIONS = (
    ".safetensors", ".bin", ".msgpack", ".h5", ".npz", ".npy", ".pt", ".pth", ".ckpt", ".onnx",
    ".gz", ".zip", ".tar", ".pkl",
)  # fmt: skip
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(
    f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS
).encode()


def git_blob_oid(data: bytes) -> str:
    """What git (and the Hub) calls a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    ).encode()


@dataclass
class FileEntry:
    """A file in a commit: regular (content inline) or LFS (content in the object store)."""

    path: str
    size: int
    content: bytes | None = None
    lfs_oid: str | None = None

    @property
    def is_lfs(self) -> bool:
        return self.lfs_oid is not None

    @property
    def blob_oid(self) -> str:
        if self.lfs_oid is not None:
            return git_blob_oid(lfs_pointer(self.lfs_oid, self.size))
        assert self.content is not None
        return git_blob_oid(self.content)

    @property
    def preupload_oid(self) -> str:
        """huggingface_hub compares this to sha256 (LFS) or the git blob oid (regular)."""
        return self.lfs_oid if self.lfs_oid is not None else self.blob_oid

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": self.blob_oid,
            "size": self.size,
            "path": self.path,
        }
        if self.lfs_oid is not None:
            pointer = lfs_pointer(self.lfs_oid, self.size)
            entry["lfs"] = {"oid": self.lfs_oid, "size": self.size, "pointerSize": len(pointer)}
        return entry


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    files: dict[str, FileEntry]
    author: str | None


@dataclass
class PullRequest:
    num: int
    target: str
    ref: str
    title: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # "main", "dev", "refs/pr/1" -> oid
    commits: dict[str, Commit] = field(default_factory=dict)
    pull_requests: list[PullRequest] = field(default_factory=list)
    lfs_oids: set[str] = field(default_factory=set)  # objects uploaded to this repo

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision)
        if oid is None and revision.startswith("refs/heads/"):
            oid = self.refs.get(revision.removeprefix("refs/heads/"))
        if oid is None and revision in self.commits:
            oid = revision
        return self.commits.get(oid) if oid else None

    def files_at(self, revision: str) -> dict[str, FileEntry]:
        commit = self.resolve(revision)
        return commit.files if commit else {}


@dataclass
class RequestRecord:
    """One request as the server saw it (tests assert on these)."""

    method: str
    path: str
    route: str
    query: dict[str, list[str]]
    authorization: str | None
    body_size: int
    status: int | None = None


@dataclass
class Failure:
    """A rule that makes matching requests fail; see `HubState.fail`."""

    route: str
    method: str | None
    status: int
    action: str
    message: str
    error_code: str | None
    delay: float
    times: int | None
    echo_auth: bool
    hits: int = 0


class HubState:
    """Everything the server knows, shared with the test that started it."""

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        orgs: dict[str, set[str]] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.tokens = tokens if tokens is not None else {"hf_test_token": "tester"}
        self.orgs = orgs if orgs is not None else {}
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # content by sha256; repos list what they hold
        self.lfs_uploads: list[str] = []  # oids actually PUT, in order
        self.requests: list[RequestRecord] = []
        self.failures: list[Failure] = []
        self.validated_cards: list[str] = []
        # Echo every request's credentials back (Authorization header, URL, Host) in response
        # headers and JSON bodies, success or error, as careless proxies and debug servers
        # do: a client must still never print them.
        self.echo_credentials = False
        self._counter = 0

    # ---- failure injection

    def fail(
        self,
        route: str,
        status: int = 500,
        *,
        method: str | None = None,
        action: str = "respond",
        message: str | None = None,
        error_code: str | None = None,
        delay: float = 0.0,
        times: int | None = None,
        echo_auth: bool = False,
    ) -> Failure:
        """Make requests to `route` (a name from `ROUTES`, or "*") fail.

        action: "respond" answers `status` with a JSON error body (and X-Error-Code when
        given); "drop" reads the request then closes the connection without answering;
        "hang" waits `delay` seconds first, then closes the connection. `times` limits how
        many requests the rule hits (None: all). `echo_auth` puts the request's Authorization
        header in the error text, as some proxies do, to test that clients redact it.
        """
        rule = Failure(
            route=route,
            method=method.upper() if method else None,
            status=status,
            action=action,
            message=message or f"injected failure ({status})",
            error_code=error_code,
            delay=delay,
            times=times,
            echo_auth=echo_auth,
        )
        with self.lock:
            self.failures.append(rule)
        return rule

    def clear_failures(self) -> None:
        with self.lock:
            self.failures.clear()

    def _take_failure(self, route: str, method: str) -> Failure | None:
        with self.lock:
            for rule in self.failures:
                if rule.route not in (route, "*") or rule.method not in (None, method):
                    continue
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                rule.hits += 1
                return rule
        return None

    # ---- helpers for tests

    def routes_called(self) -> list[str]:
        with self.lock:
            return [r.route for r in self.requests]

    def count(self, route: str) -> int:
        return self.routes_called().count(route)

    def head(self, repo_id: str, revision: str = "main") -> Commit | None:
        with self.lock:
            repo = self.repos.get(repo_id)
            return repo.resolve(revision) if repo else None

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes | None:
        commit = self.head(repo_id, revision)
        entry = commit.files.get(path) if commit else None
        if entry is None:
            return None
        return self.lfs_objects[entry.lfs_oid] if entry.lfs_oid else entry.content

    # ---- model

    def user_for(self, authorization: str | None) -> tuple[str | None, bool]:
        """(user, credentials_given). Bad credentials give (None, True)."""
        if not authorization:
            return None, False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None, True
        return self.tokens.get(token.strip()), True

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or user in self.orgs.get(namespace, ()))

    def can_read(self, user: str | None, repo: Repo) -> bool:
        return not repo.private or self.can_write(user, repo.namespace)

    def new_commit(
        self,
        repo: Repo,
        parent: str | None,
        files: dict[str, FileEntry],
        title: str,
        description: str = "",
        author: str | None = None,
    ) -> Commit:
        with self.lock:
            self._counter += 1
            seed = f"{repo.repo_id}:{parent}:{title}:{self._counter}:{sorted(files)}"
            oid = hashlib.sha1(seed.encode()).hexdigest()
            commit = Commit(oid, parent, title, description, dict(files), author)
            repo.commits[oid] = commit
            return commit

    def create_repo(self, repo_id: str, private: bool, author: str | None) -> Repo:
        repo = Repo(repo_id, private)
        initial = {".gitattributes": FileEntry(".gitattributes", len(GITATTRIBUTES), GITATTRIBUTES)}
        commit = self.new_commit(repo, None, initial, "initial commit", author=author)
        repo.refs["main"] = commit.oid
        self.repos[repo_id] = repo
        return repo


ROUTES = (
    "whoami", "create_repo", "validate_yaml", "repo_info", "refs", "branch", "preupload",
    "commit", "tree", "paths_info", "lfs_batch", "lfs_verify", "lfs_upload", "resolve",
)  # fmt: skip

API_REPO_RE = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(.*))?$")
LFS_RE = re.compile(r"^/([^/]+/[^/]+)\.git/info/lfs/objects/(batch|verify)$")
LFS_UPLOAD_RE = re.compile(r"^/_lfs/([^/]+/[^/]+)/([0-9a-f]{64})$")
RESOLVE_RE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class HttpError(Exception):
    """Raised by route handlers; becomes a JSON error response."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.extra = extra or {}
        self.headers = headers or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 15  # idle keep-alive connections must not pin threads forever
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    # ---- plumbing

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr log; `HubState.requests` has it all."""

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def base(self) -> str:
        return self.server.base_url

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        route, params = self._route(method, split.path)
        body = self._read_body()
        record = RequestRecord(
            method=method,
            path=split.path,
            route=route,
            query=parse_qs(split.query),
            authorization=self.headers.get("Authorization"),
            body_size=len(body),
        )
        with self.state.lock:
            self.state.requests.append(record)

        rule = self.state._take_failure(route, method)
        if rule is not None:
            if rule.action in ("drop", "hang"):
                if rule.delay:
                    time.sleep(rule.delay)
                record.status = None
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            message = rule.message
            if rule.echo_auth:
                message += f" (received Authorization: {self.headers.get('Authorization')})"
            error = HttpError(rule.status, message, rule.error_code)
            if rule.echo_auth:
                error.headers["X-Error-Message"] = message
            self._send_error(method, error, record)
            return

        try:
            status, payload, headers = self._handle(method, route, params, split.query, body)
        except HttpError as error:
            self._send_error(method, error, record)
            return
        record.status = status
        self._send(method, status, payload, headers)

    def _route(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        if path == "/api/whoami-v2":
            return "whoami", {}
        if path == "/api/repos/create":
            return "create_repo", {}
        if path == "/api/validate-yaml":
            return "validate_yaml", {}
        if match := API_REPO_RE.match(path):
            repo_id, rest = match.group(1), match.group(2) or ""
            parts = rest.split("/") if rest else []
            params: dict[str, Any] = {"repo_id": repo_id}
            if not parts:
                return "repo_info", params
            kind, args = parts[0], [unquote(p) for p in parts[1:]]
            if kind == "revision" and len(args) == 1:
                return "repo_info", {**params, "revision": args[0]}
            if kind == "refs":
                return "refs", params
            if kind in ("branch", "preupload", "commit", "paths-info") and len(args) == 1:
                name = "paths_info" if kind == "paths-info" else kind
                key = "branch" if kind == "branch" else "revision"
                return name, {**params, key: args[0]}
            if kind == "tree" and args:
                return "tree", {**params, "revision": args[0], "path": "/".join(args[1:])}
            return "unknown", {}
        if match := LFS_RE.match(path):
            return f"lfs_{match.group(2)}", {"repo_id": match.group(1)}
        if match := LFS_UPLOAD_RE.match(path):
            return "lfs_upload", {"repo_id": match.group(1), "oid": match.group(2)}
        if match := RESOLVE_RE.match(path):
            return "resolve", {
                "repo_id": match.group(1),
                "revision": unquote(match.group(2)),
                "path": unquote(match.group(3)),
            }
        return "unknown", {}

    def _send(
        self,
        method: str,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        headers = dict(headers or {})
        if self.state.echo_credentials:
            echo = self._echo()
            headers.update({f"X-Echo-{key.title()}": value for key, value in echo.items()})
            if isinstance(payload, dict):
                payload = {**payload, "echo": echo}
                if "error" in payload:
                    payload["error"] = f"{payload['error']} (request: {json.dumps(echo)})"
        if isinstance(payload, bytes):
            data = payload
            content_type = headers.pop("Content-Type", "application/octet-stream")
        else:
            data = json.dumps(payload).encode()
            content_type = headers.pop("Content-Type", content_type)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", headers.pop("Content-Length", str(len(data))))
        self.send_header("X-Request-Id", f"Root={uuid.uuid4()}")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _echo(self) -> dict[str, str]:
        return {
            "authorization": self.headers.get("Authorization") or "",
            "host": self.headers.get("Host") or "",
            "url": self.path,
        }

    def _echoed_query(self) -> str:
        """With `echo_credentials`, the credentials in the URLs a commit answers with too."""
        if not self.state.echo_credentials:
            return ""
        return "?auth=" + self.headers.get("Authorization", "").replace(" ", "+")

    def _send_error(self, method: str, error: HttpError, record: RequestRecord) -> None:
        record.status = error.status
        headers = dict(error.headers)
        if error.error_code:
            headers["X-Error-Code"] = error.error_code
        self._send(method, error.status, {"error": error.message, **error.extra}, headers)

    # ---- routes

    def _handle(
        self, method: str, route: str, params: dict[str, Any], query: str, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        user, credentials = self.state.user_for(self.headers.get("Authorization"))
        if credentials and user is None and route != "lfs_upload":
            raise HttpError(401, "Invalid credentials in Authorization header")
        handler = getattr(self, f"_route_{route}", None)
        if handler is None:
            raise HttpError(404, f"no route for {method} {self.path}")
        with self.state.lock:
            return handler(method, user, params, parse_qs(query), body)

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise HttpError(400, "body is not JSON") from None
        if not isinstance(data, dict):
            raise HttpError(400, "body is not a JSON object")
        return data

    def _repo(self, repo_id: str, user: str | None, write: bool = False) -> Repo:
        repo = self.state.repos.get(repo_id)
        if repo is None or not self.state.can_read(user, repo):
            if user is None and write:
                raise HttpError(401, "You must be authenticated to access this repository")
            raise HttpError(404, "Repository not found", "RepoNotFound")
        if write and not self.state.can_write(user, repo.namespace):
            raise HttpError(403, f"You don't have write access to {repo_id}")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _route_whoami(self, method: str, user: str | None, params: dict, query: dict, body: bytes):
        if user is None:
            raise HttpError(401, "Invalid credentials in Authorization header")
        orgs = [{"name": org} for org, members in self.state.orgs.items() if user in members]
        return (
            200,
            {"type": "user", "name": user, "orgs": orgs, "auth": {"type": "access_token"}},
            {},
        )

    def _route_create_repo(self, method: str, user: str | None, params, query, body: bytes):
        data = self._json(body)
        if user is None:
            raise HttpError(401, "You must be authenticated to create a repository")
        if data.get("type") not in (None, "model"):
            raise HttpError(400, "this server only hosts models")
        namespace = data.get("organization") or user
        repo_id = f"{namespace}/{data.get('name')}"
        url = f"{self.base}/{repo_id}"
        if not self.state.can_write(user, namespace):
            raise HttpError(
                403,
                f'You don\'t have the rights to create a model under the namespace "{namespace}"',
            )
        if repo_id in self.state.repos:
            raise HttpError(409, "You already created this model repo", extra={"url": url})
        private = data.get("visibility") == "private" or data.get("private") is True
        self.state.create_repo(repo_id, private, user)
        return 200, {"url": url, "name": repo_id, "id": uuid.uuid4().hex}, {}

    def _route_validate_yaml(self, method: str, user, params, query, body: bytes):
        data = self._json(body)
        content = str(data.get("content", ""))
        self.state.validated_cards.append(content)
        match = re.match(r"^\s*---\r?\n([\s\S]*?)\r?\n---", content)
        errors = []
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
            except yaml.YAMLError as exc:
                metadata, errors = None, [{"message": f"YAML parse error: {exc}"}]
            if metadata is not None and not isinstance(metadata, dict) and not errors:
                errors = [{"message": "metadata must be a dictionary"}]
            elif isinstance(metadata, dict) and not isinstance(metadata.get("license", ""), str):
                errors = [{"message": '"license" must be a string'}]
        if errors:
            raise HttpError(400, "Invalid metadata", extra={"errors": errors, "warnings": []})
        return 200, {"errors": [], "warnings": []}, {}

    def _route_repo_info(self, method: str, user, params: dict, query, body):
        repo = self._repo(params["repo_id"], user)
        commit = self._commit_at(repo, params.get("revision", "main"))
        return (
            200,
            {
                "_id": uuid.uuid5(uuid.NAMESPACE_URL, repo.repo_id).hex,
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.namespace,
                "sha": commit.oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": [{"rfilename": path} for path in sorted(commit.files)],
                "lastModified": "2024-01-01T00:00:00.000Z",
                "createdAt": "2024-01-01T00:00:00.000Z",
            },
            {},
        )

    def _route_refs(self, method: str, user, params: dict, query: dict, body):
        repo = self._repo(params["repo_id"], user)

        def ref(name: str, oid: str) -> dict[str, str]:
            full = name if name.startswith("refs/") else f"refs/heads/{name}"
            return {"name": name, "ref": full, "targetCommit": oid}

        branches = [ref(n, o) for n, o in repo.refs.items() if not n.startswith("refs/")]
        payload: dict[str, Any] = {"branches": branches, "tags": [], "converts": []}
        if query.get("include_prs"):
            payload["pullRequests"] = [
                ref(n, o) for n, o in repo.refs.items() if n.startswith("refs/pr/")
            ]
        return 200, payload, {}

    def _route_branch(self, method: str, user, params: dict, query, body: bytes):
        repo = self._repo(params["repo_id"], user, write=True)
        branch = params["branch"]
        if method == "DELETE":
            if branch not in repo.refs:
                raise HttpError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            del repo.refs[branch]
            return 200, {}, {}
        if branch.startswith("refs/") or branch in repo.commits:
            raise HttpError(400, f"Invalid reference for a branch: {branch}")
        if branch in repo.refs:
            raise HttpError(409, "Reference already exists")
        start = self._json(body).get("startingPoint") or "main"
        repo.refs[branch] = self._commit_at(repo, start).oid
        return 200, {}, {}

    def _route_preupload(self, method: str, user, params: dict, query, body: bytes):
        repo = self._repo(params["repo_id"], user, write=True)
        commit = self._commit_at(repo, params["revision"])
        files = []
        for item in self._json(body).get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            lfs = path.endswith(LFS_EXTENSIONS) or b"\0" in sample or size >= LFS_SIZE_THRESHOLD
            existing = commit.files.get(path)
            files.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.preupload_oid if existing else None,
                }
            )
        return 200, {"files": files, "commitOid": commit.oid}, {}

    def _route_lfs_batch(self, method: str, user, params: dict, query, body: bytes):
        repo = self._repo(params["repo_id"], user, write=True)
        data = self._json(body)
        if data.get("operation") != "upload":
            raise HttpError(400, "only uploads are supported")
        objects = []
        for obj in data.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size}
            if oid not in repo.lfs_oids:  # like the Hub, LFS storage is per repo
                entry["authenticated"] = True
                entry["actions"] = {
                    "upload": {"href": f"{self.base}/_lfs/{repo.repo_id}/{oid}", "header": {}},
                    "verify": {
                        "href": f"{self.base}/{repo.repo_id}.git/info/lfs/objects/verify",
                        "header": {},
                    },
                }
            objects.append(entry)
        return (
            200,
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            {"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _route_lfs_upload(self, method: str, user, params: dict, query, body: bytes):
        """The pre-signed storage URL: no Authorization expected (the client sends none)."""
        if method != "PUT":
            raise HttpError(405, "PUT only")
        oid = params["oid"]
        repo = self.state.repos.get(params["repo_id"])
        if repo is None:
            raise HttpError(404, "no such upload target")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HttpError(400, "content does not match its sha256")
        self.state.lfs_objects[oid] = body
        repo.lfs_oids.add(oid)
        self.state.lfs_uploads.append(oid)
        return 200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}

    def _route_lfs_verify(self, method: str, user, params: dict, query, body: bytes):
        repo = self._repo(params["repo_id"], user, write=True)
        data = self._json(body)
        oid = str(data.get("oid"))
        stored = self.state.lfs_objects.get(oid) if oid in repo.lfs_oids else None
        if stored is None or len(stored) != data.get("size"):
            raise HttpError(404, "object not found")
        return 200, {}, {}

    def _route_commit(self, method: str, user, params: dict, query: dict, body: bytes):
        repo = self._repo(params["repo_id"], user, write=True)
        revision = params["revision"]
        base = self._commit_at(repo, revision)
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        if not create_pr and revision not in repo.refs:
            raise HttpError(400, f"Cannot commit to {revision}: not a branch")
        files = dict(base.files)
        header: dict[str, Any] = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = base64.b64decode(value["content"])
                files[value["path"]] = FileEntry(value["path"], len(content), content)
            elif key == "lfsFile":
                oid = value["oid"]
                if oid not in repo.lfs_oids:
                    raise HttpError(400, f"LFS object {oid} was not uploaded")
                size = len(self.state.lfs_objects[oid])
                files[value["path"]] = FileEntry(value["path"], size, lfs_oid=oid)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HttpError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(prefix)}
            else:
                raise HttpError(400, f"unknown commit operation {key!r}")
        parent = header.get("parentCommit")
        if parent and not create_pr and not base.oid.startswith(parent):
            raise HttpError(409, "A commit has happened since. Please refresh and try again.")
        commit = self.state.new_commit(
            repo, base.oid, files, header.get("summary", ""), header.get("description", ""), user
        )
        pr_url = None
        if create_pr:
            num = len(repo.pull_requests) + 1
            ref = f"refs/pr/{num}"
            repo.refs[ref] = commit.oid
            repo.pull_requests.append(PullRequest(num, revision, ref, commit.title))
            pr_url = f"{self.base}/{repo.repo_id}/discussions/{num}{self._echoed_query()}"
        else:
            repo.refs[revision] = commit.oid
        return (
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.base}/{repo.repo_id}/commit/{commit.oid}"
                + self._echoed_query(),
                "pullRequestUrl": pr_url,
                "hookOutput": "",
            },
            {},
        )

    def _route_tree(self, method: str, user, params: dict, query: dict, body):
        repo = self._repo(params["repo_id"], user)
        commit = self._commit_at(repo, params["revision"])
        prefix = params["path"].strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for path in sorted(commit.files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            if "/" in rest and not recursive:
                folder = (prefix + "/" if prefix else "") + rest.split("/")[0]
                if folder not in folders:
                    folders.add(folder)
                    entries.append(
                        {"type": "directory", "oid": "0" * 40, "size": 0, "path": folder}
                    )
                continue
            entries.append(commit.files[path].tree_entry())
        if prefix and not entries:
            raise HttpError(404, f"{prefix} not found", "EntryNotFound")
        return 200, entries, {}

    def _route_paths_info(self, method: str, user, params: dict, query, body: bytes):
        repo = self._repo(params["repo_id"], user)
        commit = self._commit_at(repo, params["revision"])
        form = parse_qs(body.decode())
        paths = form.get("paths", [])
        return 200, [commit.files[p].tree_entry() for p in paths if p in commit.files], {}

    def _route_resolve(self, method: str, user, params: dict, query, body):
        if method not in ("GET", "HEAD"):
            raise HttpError(405, "GET or HEAD only")
        repo = self._repo(params["repo_id"], user)
        commit = self._commit_at(repo, params["revision"])
        entry = commit.files.get(params["path"])
        if entry is None:
            raise HttpError(
                404,
                "Entry not found",
                "EntryNotFound",
                headers={"X-Repo-Commit": commit.oid},
            )
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if entry.lfs_oid is not None:
            data = self.state.lfs_objects[entry.lfs_oid]
            headers["ETag"] = f'"{entry.lfs_oid}"'
            headers["X-Linked-Etag"] = f'"{entry.lfs_oid}"'
            headers["X-Linked-Size"] = str(entry.size)
        else:
            assert entry.content is not None
            data = entry.content
            headers["ETag"] = f'"{entry.blob_oid}"'
        return 200, data, headers


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, state: HubState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}"


class HubServer:
    """The server in a background thread: `with HubServer() as hub: hub.url, hub.state`."""

    def __init__(self, state: HubState | None = None) -> None:
        self.state = state or HubState()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return self._server.base_url

    def start(self) -> HubServer:
        self._server = _Server(self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def unused_port() -> int:
    """A port nothing listens on (for "connection refused" tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
