"""Publishing a converted model directory to the Hugging Face Hub (`owlvit push`).

The work is split so that everything that can be decided locally is decided before the first
request: `plan_push` validates the directory, builds the model card and lists what would be
uploaded (this is all `--dry-run` runs, so a dry run cannot touch the network), and `push`
then only executes that plan through huggingface_hub's `HfApi`.

Why `create_commit` and not `upload_folder`: the model card is generated in memory and must
not be written into the user's directory unless they ask, and `upload_folder` can only send
files that exist on disk. `create_commit` is what `upload_folder` calls underneath (when
hf_xet is not installed); calling it directly, after preuploading file by file, also gives a
per-file progress signal and a single commit.

Errors: every failure of the network phase is turned into a one-line `HubError` (exit 3)
that names the step that failed. The token is scrubbed from every exception in the chain
(and from huggingface_hub's log records) before anything can print it, because servers and
proxies do echo request headers back in error bodies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from owlvit_cli import __version__
from owlvit_cli.errors import BadInputError, HubError, OwlvitError
from owlvit_cli.model.model_dir import (
    CARD_FILE,
    MODEL_NAMES,
    ModelDir,
    read_model_dir,
    record_source,
)
from owlvit_cli.progress import NO_PROGRESS, NO_STEP, Progress, Step
from owlvit_cli.publish.counted_files import CountedFile, LineOnFirstRead
from owlvit_cli.publish.model_card import DEFAULT_LICENSE, build_card

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT = 60.0
# A file at least this large gets its own line (in bytes) while it uploads.
OWN_LINE_BYTES = 1 << 20
# Folders huggingface_hub refuses to commit (FORBIDDEN_FOLDERS); never part of a model.
SKIPPED_FOLDERS = {".git", ".cache"}
# RFC 6750 b64token: anything else cannot be sent in an Authorization header, and httpx would
# echo the rejected header value (the token) in its exception text.
BEARER_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
PR_REVISION_RE = re.compile(r"refs/pr/\d+")


# --------------------------------------------------------------------------------------------
# The plan


@dataclass
class UploadFile:
    """One file of the commit: from the directory, or generated (the card)."""

    path_in_repo: str
    size: int
    local_path: Path | None = None
    content: bytes | None = None

    @property
    def source(self) -> str:
        return "generated" if self.content is not None else "directory"


@dataclass
class PushPlan:
    """Everything `push` will do, decided without the network (`--dry-run` prints this)."""

    model_dir: ModelDir
    repo_id: str
    endpoint: str
    revision: str
    create_pr: bool
    private: bool
    commit_message: str
    commit_description: str
    files: list[UploadFile]
    card_text: str
    card_source: str  # "generated", "existing" or "generated (replaces existing)"
    warnings: list[str]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def creates_branch(self) -> bool:
        return self.revision != "main" and not PR_REVISION_RE.fullmatch(self.revision)


def validate_repo_id(repo_id: str) -> str:
    """OWNER/NAME, checked locally so a typo never reaches the network (or a dry run lies)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    if repo_id.count("/") != 1:
        raise BadInputError(f"REPO_ID must be OWNER/NAME, got {repo_id!r}")
    try:
        hf_validate(repo_id)
    except HFValidationError as exc:
        raise BadInputError(f"invalid REPO_ID {repo_id!r}: {str(exc).splitlines()[0]}") from None
    return repo_id


def resolve_endpoint(explicit: str | None) -> str:
    """--endpoint, else HF_ENDPOINT, else the public Hub."""
    import os

    endpoint = (explicit or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInputError(f"endpoint must be an http(s) URL, got {endpoint!r}")
    return endpoint


def plan_push(
    hf_dir: Path,
    repo_id: str,
    *,
    revision: str | None = None,
    create_pr: bool = False,
    private: bool = False,
    license_: str | None = None,
    overwrite_card: bool = False,
    commit_message: str | None = None,
    force: bool = False,
    endpoint: str | None = None,
) -> PushPlan:
    """Validate, build the card and list the files; no network, no writes."""
    repo_id = validate_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    revision = (revision or "main").removeprefix("refs/heads/")
    if create_pr and revision != "main":
        # huggingface_hub opens pull requests against the default branch only (upload_folder
        # refuses the combination outright); say so instead of targeting something else.
        raise BadInputError(
            "--create-pr opens a pull request against main; drop --revision "
            "(or drop --create-pr to commit to the branch or refs/pr/N directly)"
        )
    if not revision.strip() or revision != revision.strip():
        raise BadInputError(f"invalid --revision {revision!r}")
    model_dir = read_model_dir(hf_dir, force=force)
    warnings_ = list(model_dir.warnings)

    files = [
        UploadFile(rel, (hf_dir / rel).stat().st_size, local_path=hf_dir / rel)
        for rel in _directory_files(hf_dir)
    ]
    existing_card = hf_dir / CARD_FILE
    if existing_card.is_file() and not overwrite_card:
        card_source = "existing"
        card_text = existing_card.read_text(encoding="utf-8", errors="replace")
        if license_ is not None:
            warnings_.append(
                f"--license ignored: keeping the existing {CARD_FILE} "
                "(pass --overwrite-card to replace it)"
            )
    else:
        card_source = "generated (replaces existing)" if existing_card.is_file() else "generated"
        card_text = build_card(model_dir, repo_id, license_ or DEFAULT_LICENSE)
        content = card_text.encode("utf-8")
        files = [f for f in files if f.path_in_repo != CARD_FILE]
        files.append(UploadFile(CARD_FILE, len(content), content=content))

    name = MODEL_NAMES[model_dir.version]
    source = record_source(model_dir)
    default_message = f"Upload {name} converted with owlvit {__version__}"
    if source.get("file"):
        default_message += f" from {source['file']}"
    description = (
        f"Converted from `{source.get('file')}` (sha256 {source.get('sha256')}) "
        f"with owlvit {(model_dir.record or {}).get('tool_version', __version__)}."
        if source
        else ""
    )
    return PushPlan(
        model_dir=model_dir,
        repo_id=repo_id,
        endpoint=endpoint,
        revision=revision,
        create_pr=create_pr,
        private=private,
        commit_message=commit_message or default_message,
        commit_description=description,
        files=files,
        card_text=card_text,
        card_source=card_source,
        warnings=warnings_,
    )


def _directory_files(hf_dir: Path) -> list[str]:
    """Every file under the directory, README.md last (it is the most likely to be rejected)."""
    paths = []
    for path in hf_dir.rglob("*"):
        rel = path.relative_to(hf_dir)
        if SKIPPED_FOLDERS.intersection(rel.parts) or not path.is_file():
            continue
        paths.append(rel.as_posix())
    return sorted(paths, key=lambda p: (p == CARD_FILE, p))


def save_card(plan: PushPlan) -> Path | None:
    """Write the generated card into the directory (only on request: --save-card)."""
    if plan.card_source == "existing":
        return None
    path = plan.model_dir.path / CARD_FILE
    path.write_text(plan.card_text, encoding="utf-8")
    return path


def plan_payload(plan: PushPlan) -> dict[str, Any]:
    """The JSON form shared by dry runs and real pushes."""
    return {
        "repo_id": plan.repo_id,
        "endpoint": plan.endpoint,
        "revision": plan.revision,
        "create_pr": plan.create_pr,
        "private": plan.private,
        "commit_message": plan.commit_message,
        "total_size": plan.total_size,
        "files": [{"path": f.path_in_repo, "size": f.size, "source": f.source} for f in plan.files],
        "card": {"source": plan.card_source, "content": plan.card_text},
        "warnings": plan.warnings,
    }


# --------------------------------------------------------------------------------------------
# Credentials and secrecy


def resolve_token(explicit: str | None) -> str:
    """--token, else what huggingface_hub resolves (HF_TOKEN, then the `hf auth login` file)."""
    token = explicit.strip() if explicit else None
    if not token:
        from huggingface_hub import get_token

        try:
            token = get_token()
        except Exception as exc:  # OIDC exchange / OAuth refresh failures
            raise HubError(f"could not obtain a Hugging Face token: {_first_line(exc)}") from None
    if not token:
        raise HubError("no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`")
    if not BEARER_TOKEN_RE.fullmatch(token):
        raise BadInputError(
            "the token contains characters that cannot be sent in an HTTP header "
            "(whitespace, quotes or non-ASCII); check how it was copied"
        )
    return token


def redact(text: str, secrets: list[str]) -> str:
    """Replace each secret (and its URL-encoded form) in text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


def scrub_exception(exc: BaseException, secrets: list[str]) -> None:
    """Redact secrets from every exception in the chain, in place, before anything prints it.

    Tracebacks (--debug) and one-line errors both format `args`, so rewriting `args` covers
    them; notes are rewritten too.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in current.args)
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            current.__notes__ = [redact(n, secrets) if isinstance(n, str) else n for n in notes]
        for attr in ("server_message",):
            value = getattr(current, attr, None)
            if isinstance(value, str):
                setattr(current, attr, redact(value, secrets))
        stack += [current.__cause__, current.__context__]


class _RedactingFilter(logging.Filter):
    """Scrub secrets from huggingface_hub log records (shown with --debug)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            scrub_exception(record.exc_info[1], self.secrets)
        return True


# --------------------------------------------------------------------------------------------
# Pushing


@dataclass
class PushResult:
    """What happened on the Hub."""

    commit_url: str | None
    commit_oid: str | None
    pr_url: str | None
    changed: bool
    files: list[dict[str, Any]]
    warnings: list[str]


@contextmanager
def _hub_session(secrets: list[str], timeout: float, debug: bool) -> Iterator[list[str]]:
    """Configure huggingface_hub for one CLI run: a real timeout, no tqdm, quiet or redacted logs.

    huggingface_hub's shared client has no timeout at all, so a Hub that stops answering
    would hang `push` forever; the factory below keeps its request hooks and adds one.
    Python warnings raised meanwhile are collected (and redacted) instead of printed.
    """
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http, disable_progress_bars
    from huggingface_hub.utils import logging as hf_logging

    def client_factory() -> httpx2.Client:
        client = _http.default_client_factory()
        client.timeout = httpx2.Timeout(timeout, connect=min(timeout, 10.0))
        return client

    set_client_factory(client_factory)
    disable_progress_bars()
    if debug:
        hf_logging.set_verbosity_debug()
    else:
        hf_logging.set_verbosity_error()
    library_logger = logging.getLogger("huggingface_hub")
    log_filter = _RedactingFilter(secrets)
    for handler in library_logger.handlers:
        handler.addFilter(log_filter)
    collected: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield collected
        finally:
            for handler in library_logger.handlers:
                handler.removeFilter(log_filter)
            collected += [
                redact(str(w.message), secrets)
                for w in caught
                if debug or not issubclass(w.category, DeprecationWarning)
            ]


@dataclass
class _Step:
    """The step in progress, so a failure can say what it was doing."""

    name: str = "starting"


def push(
    plan: PushPlan,
    *,
    token: str,
    timeout: float = DEFAULT_TIMEOUT,
    debug: bool = False,
    progress: Progress = NO_PROGRESS,
    before_upload: Callable[[], None] = lambda: None,
) -> PushResult:
    """Create the repo (and branch), upload file by file, then make one commit (or PR).

    `progress` hears the upload (bytes, file by file) and the commit. `before_upload` runs once
    the repo is known to be usable and before anything is sent: the moment to tell a user what
    is about to be published.
    """
    secrets = [token]
    step = _Step()
    try:
        with _hub_session(secrets, timeout, debug) as hub_warnings:
            result = _push(plan, token, timeout, step, progress, before_upload)
        result.warnings += hub_warnings
        return result
    except OwlvitError as exc:
        scrub_exception(exc, secrets)
        raise
    except Exception as exc:
        scrub_exception(exc, secrets)
        mapped = map_hub_error(exc, step=step.name, plan=plan, timeout=timeout)
        if mapped is None:
            raise
        mapped.args = (redact(str(mapped.args[0]), secrets),)
        raise mapped from exc


def _push(
    plan: PushPlan,
    token: str,
    timeout: float,
    step: _Step,
    progress: Progress,
    before_upload: Callable[[], None],
) -> PushResult:
    from huggingface_hub import HfApi

    api = HfApi(
        endpoint=plan.endpoint, token=token, library_name="owlvit", library_version=__version__
    )
    with progress.step(f"preparing {plan.repo_id}"):
        step.name = f"creating repo {plan.repo_id}"
        api.create_repo(plan.repo_id, private=True if plan.private else None, exist_ok=True)
        if plan.private:
            step.name = f"checking that {plan.repo_id} is private"
            info = api.repo_info(plan.repo_id, timeout=timeout)
            if not info.private:
                raise BadInputError(
                    f"{plan.repo_id} already exists and is public; --private only applies when "
                    "the repo is created (make it private on the Hub first, or drop --private)"
                )
        if plan.creates_branch:
            step.name = f"creating branch {plan.revision}"
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)

    before_upload()
    with contextlib.ExitStack() as open_files:
        step.name = "hashing the files"
        with progress.step(step.name, total=plan.total_size, unit="bytes") as hashing:
            operations = [_operation(upload, open_files, hashing) for upload in plan.files]
        with progress.step("uploading", total=plan.total_size, unit="bytes") as uploading:
            for upload, operation in operations:
                step.name = f"uploading {upload.path_in_repo}"
                _upload(api, plan, upload, operation, progress, uploading)

        step.name = "opening the pull request" if plan.create_pr else "committing"
        with progress.step(step.name):
            info = api.create_commit(
                plan.repo_id,
                operations=[operation for _, operation in operations],
                commit_message=plan.commit_message,
                commit_description=plan.commit_description,
                revision=plan.revision,
                create_pr=plan.create_pr,
            )
        files = [_file_status(upload, operation) for upload, operation in operations]
        changed = any(f["status"] == "uploaded" for f in files)
    return PushResult(
        commit_url=info.commit_url,
        commit_oid=info.oid,
        pr_url=info.pr_url,
        changed=changed,
        files=files,
        warnings=[],
    )


def _operation(upload: UploadFile, open_files: contextlib.ExitStack, hashing: Step) -> tuple:
    """The commit operation for `upload`; huggingface_hub hashes the file here, counted."""
    from huggingface_hub import CommitOperationAdd

    if upload.content is not None:
        hashing.advance(len(upload.content))
        return upload, CommitOperationAdd(upload.path_in_repo, upload.content)
    source = open_files.enter_context(CountedFile(upload.local_path, hashing))
    return upload, CommitOperationAdd(upload.path_in_repo, source)


def _upload(
    api: Any, plan: PushPlan, upload: UploadFile, operation: Any, progress: Progress, total: Step
) -> None:
    """Send one file's content (LFS); a large file gets a line of its own, in bytes."""
    counted = operation.path_or_fileobj
    with contextlib.ExitStack() as line:
        if isinstance(counted, CountedFile):
            own = LineOnFirstRead(progress, f"uploading {upload.path_in_repo}", upload.size, line)
            counted.count(total, own if upload.size >= OWN_LINE_BYTES else NO_STEP)
        api.preupload_lfs_files(
            plan.repo_id,
            additions=[operation],
            revision=plan.revision,
            create_pr=plan.create_pr,
            free_memory=False,
        )
    # What was not read here goes inside the commit, or is on the Hub already.
    total.advance(upload.size - (counted.counted if isinstance(counted, CountedFile) else 0))
    if isinstance(counted, CountedFile):
        counted.count()


def _file_status(upload: UploadFile, operation: Any) -> dict[str, Any]:
    """Whether huggingface_hub sent the file or found it unchanged on the Hub."""
    mode = getattr(operation, "_upload_mode", None)
    remote = getattr(operation, "_remote_oid", None)
    try:
        unchanged = remote is not None and remote == operation._local_oid
    except Exception:  # a private attribute of huggingface_hub: never fail a push over it
        unchanged = False
    return {
        "path": upload.path_in_repo,
        "size": upload.size,
        "source": upload.source,
        "storage": mode,
        "status": "unchanged" if unchanged else "uploaded",
    }


def result_payload(plan: PushPlan, result: PushResult | None) -> dict[str, Any]:
    """One JSON object for --json: the plan, plus what happened when not a dry run."""
    payload = plan_payload(plan)
    payload["dry_run"] = result is None
    payload["commit_url"] = result.commit_url if result else None
    payload["commit_oid"] = result.commit_oid if result else None
    payload["pr_url"] = result.pr_url if result else None
    payload["changed"] = result.changed if result else None
    if result is not None:
        payload["files"] = result.files
        payload["warnings"] = [*plan.warnings, *result.warnings]
    return payload


# --------------------------------------------------------------------------------------------
# Error mapping


def _first_line(exc: BaseException | str, limit: int = 200) -> str:
    text = str(exc).strip()
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def map_hub_error(
    exc: BaseException, *, step: str, plan: PushPlan, timeout: float
) -> OwlvitError | None:
    """One line saying what failed and what to do, or None for a bug (left as a traceback)."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RevisionNotFoundError,
    )

    chain = _chain(exc)
    host = urlsplit(plan.endpoint).netloc
    for error in chain:  # raised from the 400 it wraps, so it must be looked for first
        text = str(error)
        if isinstance(error, ValueError) and text.startswith("Invalid metadata in README.md"):
            detail = " ".join(line.strip("- ") for line in text.splitlines()[1:] if line.strip())
            return BadInputError(f"the Hub rejected {CARD_FILE}'s metadata: {detail or text}")
    for error in chain:
        if isinstance(error, HfHubHTTPError):
            return HubError(
                _http_message(error, step, plan, isinstance(error, RevisionNotFoundError))
            )
        if isinstance(error, OfflineModeIsEnabled):
            return HubError(f"{step} failed: HF_HUB_OFFLINE is set; unset it to push")
        if isinstance(error, httpx2.ConnectError):
            return HubError(f"{step} failed: cannot connect to {host} ({_first_line(error)})")
        if isinstance(error, httpx2.TimeoutException):
            return HubError(f"{step} failed: {host} did not answer within {timeout:g} s")
        if isinstance(error, (httpx2.RemoteProtocolError, httpx2.NetworkError)):
            return HubError(f"{step} failed: the connection to {host} broke off mid-request")
        if isinstance(error, httpx2.HTTPError):
            return HubError(f"{step} failed: {type(error).__name__}: {_first_line(error)}")
    for error in chain:
        text = str(error)
        if isinstance(error, ValueError) and (
            "Malformed" in text or "improperly formatted" in text or "LFS batch API" in text
        ):
            return HubError(f"{step} failed: unexpected answer from {host}: {_first_line(error)}")
        if isinstance(error, json.JSONDecodeError):
            return HubError(f"{step} failed: {host} answered with something that is not JSON")
    return None


def _http_message(error: Any, step: str, plan: PushPlan, revision_missing: bool) -> str:
    status = error.response.status_code if error.response is not None else None
    detail = error.server_message or ""
    detail = f" ({_first_line(detail)})" if detail else ""
    if status == 401:
        why = (
            "authentication failed (HTTP 401): the token was rejected; check --token, "
            "HF_TOKEN or `hf auth login`"
        )
    elif status == 403:
        why = f"permission denied (HTTP 403): the token cannot write to {plan.repo_id}"
    elif status == 404 and revision_missing:
        why = f"revision {plan.revision!r} not found (HTTP 404)"
    elif status == 404:
        why = f"not found (HTTP 404): {plan.repo_id} does not exist or this token cannot see it"
    elif status == 409:
        why = "conflict (HTTP 409): the repo changed or the operation clashes with its state"
    elif status == 429:
        why = "rate limited by the Hub (HTTP 429); wait and try again"
    elif status is not None and status >= 500:
        why = f"the Hub failed (HTTP {status}); try again later"
    else:
        why = f"the Hub refused the request (HTTP {status})"
    return f"{step} failed: {why}{detail}"
