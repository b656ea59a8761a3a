"""Publishing a converted model directory to the Hugging Face Hub (`owlvit push`).

The work is split so that everything that can be decided locally is decided before the first
request: `plan_push` validates the directory (complete, loadable, verified), the names
(repo id, revision, endpoint), picks the files to upload (`selection`) and builds the model
card; this is all `--dry-run` runs, so a dry run cannot touch the network. `push` then only
executes that plan through huggingface_hub's `HfApi`; a bare REPO_ID is first completed with
the token's user (`resolve_namespace`, one whoami request).

Why `create_commit` and not `upload_folder`: the model card is generated in memory and must
not be written into the user's directory unless they ask, and `upload_folder` can only send
files that exist on disk. `create_commit` is what `upload_folder` calls underneath (when
hf_xet is not installed); calling it directly, after preuploading file by file, also gives a
per-file progress signal and a single commit (deletions included, as `hf upload --delete`).

Errors: every failure of the network phase becomes a one-line `HubError` (exit 3) naming the
step (`hub_errors`); secrets are scrubbed from everything first (`secrets`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from owlvit_cli.errors import BadInputError, CheckFailedError, HubError, OwlvitError
from owlvit_cli.hold import hold_point
from owlvit_cli.input_files import read_limited
from owlvit_cli.model.model_dir import (
    CARD_FILE,
    MODEL_NAMES,
    VERIFICATION_FILE,
    ModelDir,
    read_model_dir,
    record_source,
    verification_state,
)
from owlvit_cli.progress import NO_PROGRESS, NO_STEP, Progress, Step
from owlvit_cli.publish.counted_files import CountedFile, LineOnFirstRead
from owlvit_cli.publish.hub_errors import map_hub_error
from owlvit_cli.publish.model_card import DEFAULT_LICENSE, build_card
from owlvit_cli.publish.names import (
    DEFAULT_TIMEOUT,
    PR_REVISION_RE,
    has_namespace,
    resolve_endpoint,
    validate_repo_id,
    validate_revision,
)
from owlvit_cli.publish.secrets import (
    RedactingFilter,
    endpoint_secrets,
    proxy_secrets,
    redact,
    scrub_exception,
)
from owlvit_cli.publish.selection import LeftOut, matches, select_files
from owlvit_cli.redaction import public_url
from owlvit_cli.version import __version__

# Never deleted by --delete, as `hf upload --delete` keeps it: the Hub's LFS rules live there.
KEEP_ON_DELETE = ".gitattributes"
T = TypeVar("T")
# A file at least this large gets its own line (in bytes) while it uploads.
OWN_LINE_BYTES = 1 << 20


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
    repo_id: str  # NAME alone until `resolve_namespace` adds the token's user
    endpoint: str
    revision: str
    create_pr: bool
    private: bool | None  # None: the Hub's default for a new repo (public, or the org's)
    commit_message: str
    commit_description: str
    files: list[UploadFile]
    left_out: list[LeftOut]
    delete: list[str]  # patterns of remote files to delete in the same commit
    card_text: str | None  # None: no README.md is uploaded (--exclude README.md)
    card_source: str  # "generated", "existing", "generated (replaces existing)", "none"
    license_: str
    forced_failure: bool  # a FAILED verification published with --force
    warnings: list[str] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def creates_branch(self) -> bool:
        return self.revision != "main" and not PR_REVISION_RE.fullmatch(self.revision)

    @property
    def namespace_resolved(self) -> bool:
        return has_namespace(self.repo_id)

    @property
    def shown_repo_id(self) -> str:
        """The full id, or what it will be: `<token's user>/NAME` before whoami."""
        return self.repo_id if self.namespace_resolved else f"<token's user>/{self.repo_id}"

    @property
    def shown_endpoint(self) -> str:
        return public_url(self.endpoint)

    @property
    def repo_url(self) -> str | None:
        """The repo's page (credentials hidden), once the full id is known."""
        return f"{self.shown_endpoint}/{self.repo_id}" if self.namespace_resolved else None


def plan_push(
    hf_dir: Path,
    repo_id: str,
    *,
    revision: str | None = None,
    create_pr: bool = False,
    private: bool | None = None,
    license_: str | None = None,
    overwrite_card: bool = False,
    commit_message: str | None = None,
    commit_description: str | None = None,
    force: bool = False,
    endpoint: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    delete: Sequence[str] = (),
) -> PushPlan:
    """Validate, choose the files and build the card; no network, no writes.

    A FAILED verification is refused (CheckFailedError, exit 1) unless `force`: publishing
    weights their own check found wrong must be a decision, and the card then says so.
    """
    repo_id = validate_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    revision = validate_revision(revision)
    if create_pr and revision != "main":
        # huggingface_hub opens pull requests against the default branch only (upload_folder
        # refuses the combination outright); say so instead of targeting something else.
        raise BadInputError(
            "the Hub opens a pull request against main only, not against another revision",
            hint="drop --revision (or drop --create-pr to commit to the branch or refs/pr/N "
            "directly)",
        )
    model_dir = read_model_dir(hf_dir, force=force)
    forced_failure = _check_verification(model_dir, force)
    selection = select_files(model_dir, include, exclude)
    files = [
        UploadFile(rel, selection.sources[rel].stat().st_size, local_path=selection.sources[rel])
        for rel in selection.files
    ]
    card_excluded = any(matches(CARD_FILE, pattern) for pattern in exclude)
    plan = PushPlan(
        model_dir=model_dir,
        repo_id=repo_id,
        endpoint=endpoint,
        revision=revision,
        create_pr=create_pr,
        private=private,
        commit_message=commit_message or _default_message(model_dir),
        commit_description=_description(model_dir)
        if commit_description is None
        else commit_description,
        files=files,
        left_out=selection.left_out,
        delete=list(delete),
        card_text=None,
        card_source="none" if card_excluded else "generated",
        license_=license_ or DEFAULT_LICENSE,
        forced_failure=forced_failure,
        warnings=list(model_dir.warnings),
    )
    existing_card = selection.sources.get(CARD_FILE)  # checked to lie inside HF_DIR
    if card_excluded:
        return plan
    if existing_card is not None and not overwrite_card:
        plan.card_source = "existing"
        plan.card_text = read_limited(existing_card).decode("utf-8", errors="replace")
        if license_ is not None:
            plan.warnings.append(
                f"--license ignored: keeping the existing {CARD_FILE} "
                "(pass --overwrite-card to replace it)"
            )
        return plan
    if existing_card is not None:
        plan.card_source = "generated (replaces existing)"
    return _with_card(plan)


def _check_verification(model_dir: ModelDir, force: bool) -> bool:
    """True when a FAILED verification is published on --force; refuse it otherwise."""
    if verification_state(model_dir) != "failed":
        return False
    if not force:
        failed = (model_dir.verification or {}).get("failed")
        what = (
            f" ({', '.join(map(str, failed[:4]))})" if isinstance(failed, list) and failed else ""
        )
        raise CheckFailedError(
            f"{VERIFICATION_FILE} records a FAILED verification{what}; refusing to publish "
            "it (fix the conversion and verify again)",
            hint="or pass --force to publish with the failure stated in the card",
        )
    return True


def _with_card(plan: PushPlan) -> PushPlan:
    """The plan with its generated card (for its current repo id) as the last file."""
    text = build_card(plan.model_dir, plan.repo_id, plan.license_, forced=plan.forced_failure)
    content = text.encode("utf-8")
    files = [f for f in plan.files if f.path_in_repo != CARD_FILE]
    files.append(UploadFile(CARD_FILE, len(content), content=content))
    return dataclasses.replace(plan, files=files, card_text=text)


def with_repo_id(plan: PushPlan, repo_id: str) -> PushPlan:
    """The same plan for a completed repo id (the generated card names the repo)."""
    plan = dataclasses.replace(plan, repo_id=validate_repo_id(repo_id))
    return _with_card(plan) if plan.card_source.startswith("generated") else plan


def _default_message(model_dir: ModelDir) -> str:
    message = f"Upload {MODEL_NAMES[model_dir.version]} converted with owlvit {__version__}"
    source = record_source(model_dir)
    return message + (f" from {source['file']}" if source.get("file") else "")


def _description(model_dir: ModelDir) -> str:
    source = record_source(model_dir)
    if not source:
        return ""
    version = (model_dir.record or {}).get("tool_version", __version__)
    return (
        f"Converted from `{source.get('file')}` (sha256 {source.get('sha256')}) "
        f"with owlvit {version}."
    )


def save_card(plan: PushPlan) -> Path | None:
    """Write the generated card into the directory (only on request: --save-card)."""
    if not plan.card_source.startswith("generated") or plan.card_text is None:
        return None
    from owlvit_cli.atomic import atomic_write_bytes

    path = plan.model_dir.path / CARD_FILE
    # A README.md symlink (even to another file of the model) is replaced, not written through.
    atomic_write_bytes(path, plan.card_text.encode("utf-8"), follow_symlinks=False)
    return path


def plan_payload(plan: PushPlan) -> dict[str, Any]:
    """The JSON form shared by dry runs and real pushes."""
    return {
        "repo_id": plan.repo_id if plan.namespace_resolved else None,
        "repo_name": plan.repo_id.rpartition("/")[2],
        "endpoint": plan.shown_endpoint,
        "revision": plan.revision,
        "create_pr": plan.create_pr,
        "private": plan.private is True,
        "repo_url": plan.repo_url,
        "commit_message": plan.commit_message,
        "total_size": plan.total_size,
        "files": [{"path": f.path_in_repo, "size": f.size, "source": f.source} for f in plan.files],
        "left_out": [{"path": item.path, "reason": item.reason} for item in plan.left_out],
        "delete_patterns": plan.delete,
        "verification": verification_state(plan.model_dir),
        "forced": plan.forced_failure,
        "card": {"source": plan.card_source, "content": plan.card_text},
        "warnings": plan.warnings,
    }


def resolve_namespace(
    plan: PushPlan, *, token: str, timeout: float = DEFAULT_TIMEOUT, debug: bool = False
) -> PushPlan:
    """Complete a bare REPO_ID with the token's user, as `hf upload` does (one whoami)."""
    if plan.namespace_resolved:
        return plan

    def whoami() -> str:
        from huggingface_hub import HfApi

        info = HfApi(endpoint=plan.endpoint, token=token).whoami()
        name = info.get("name") if isinstance(info, dict) else None
        if not isinstance(name, str) or not name:
            raise HubError("finding the token's user failed: the Hub named no user")
        return name

    step = _Step("finding the token's user (whoami)")
    user = _on_the_hub(plan, token, timeout, debug, step, whoami)
    return with_repo_id(plan, f"{user}/{plan.repo_id}")


@dataclass
class PushResult:
    """What happened on the Hub."""

    commit_url: str | None
    commit_oid: str | None
    pr_url: str | None
    changed: bool
    files: list[dict[str, Any]]
    deleted: list[str]
    warnings: list[str]
    plan: PushPlan  # what was pushed (a bare REPO_ID completed)


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
    log_filter = RedactingFilter(secrets)
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
) -> PushResult:
    """Create the repo (and branch), upload file by file, then make one commit (or PR).

    `progress` hears the upload (bytes, file by file) and the commit.
    """
    if not plan.namespace_resolved:
        plan = resolve_namespace(plan, token=token, timeout=timeout, debug=debug)
    step = _Step()
    hub_warnings: list[str] = []

    def run() -> PushResult:
        return _push(plan, token, timeout, step, progress)

    result = _on_the_hub(plan, token, timeout, debug, step, run, hub_warnings)
    result.warnings += hub_warnings
    # The URLs are the server's words: a careless one echoes credentials in them too.
    secrets = _secrets(plan, token)
    result.commit_url = redact(result.commit_url, secrets) if result.commit_url else None
    result.pr_url = redact(result.pr_url, secrets) if result.pr_url else None
    return result


def _secrets(plan: PushPlan, token: str) -> list[str]:
    return [token, *endpoint_secrets(plan.endpoint), *proxy_secrets()]


def _on_the_hub(
    plan: PushPlan,
    token: str,
    timeout: float,
    debug: bool,
    step: _Step,
    work: Callable[[], T],
    hub_warnings: list[str] | None = None,
) -> T:
    """Run `work` in a configured huggingface_hub session; every failure becomes one
    redacted line (HubError, exit 3) naming `step`, and no secret survives in any exception."""
    secrets = _secrets(plan, token)
    try:
        with _hub_session(secrets, timeout, debug) as collected:
            result = work()
        if hub_warnings is not None:
            hub_warnings += collected
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
) -> PushResult:
    from huggingface_hub import CommitOperationDelete, HfApi

    api = HfApi(
        endpoint=plan.endpoint, token=token, library_name="owlvit", library_version=__version__
    )
    with progress.step(f"preparing {plan.repo_id}"):
        step.name = f"creating repo {plan.repo_id}"
        api.create_repo(plan.repo_id, private=plan.private, exist_ok=True)
        if plan.private is not None:
            _check_visibility(api, plan, step, timeout)
        if plan.creates_branch:
            step.name = f"creating branch {plan.revision}"
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)

    hold_point("push-before-reading")
    with contextlib.ExitStack() as open_files:
        step.name = "hashing the files"
        with progress.step(step.name, total=plan.total_size, unit="bytes") as hashing:
            operations = [_operation(upload, open_files, hashing) for upload in plan.files]
        with contextlib.ExitStack() as upload_line:
            uploading = LineOnFirstRead(progress, "uploading", plan.total_size, upload_line)
            for upload, operation in operations:
                step.name = f"uploading {upload.path_in_repo}"
                _upload(api, plan, upload, operation, progress, uploading)

        deleted = _remote_deletions(api, plan, step) if plan.delete else []
        step.name = "opening the pull request" if plan.create_pr else "committing"
        with progress.step(step.name):
            info = api.create_commit(
                plan.repo_id,
                operations=[
                    *(operation for _, operation in operations),
                    *(CommitOperationDelete(path) for path in deleted),
                ],
                commit_message=plan.commit_message,
                commit_description=plan.commit_description,
                revision=plan.revision,
                create_pr=plan.create_pr,
            )
        files = [_file_status(upload, operation) for upload, operation in operations]
        changed = bool(deleted) or any(f["status"] == "uploaded" for f in files)
    return PushResult(
        commit_url=info.commit_url,
        commit_oid=info.oid,
        pr_url=info.pr_url,
        changed=changed,
        files=files,
        deleted=deleted,
        warnings=[],
        plan=plan,
    )


def _check_visibility(api: Any, plan: PushPlan, step: _Step, timeout: float) -> None:
    """A repo that already existed keeps its visibility: refuse rather than publish a
    private push into a public repo (or the other way round)."""
    wanted = "private" if plan.private else "public"
    step.name = f"checking that {plan.repo_id} is {wanted}"
    info = api.repo_info(plan.repo_id, timeout=timeout)
    if bool(info.private) != plan.private:
        other = "public" if plan.private else "private"
        flag = "--private" if plan.private else "--no-private"
        raise BadInputError(
            f"{plan.repo_id} already exists and is {other}, and a repo is made {wanted} "
            "only when it is created",
            hint=f"make it {wanted} on the Hub first, or drop {flag}",
        )


def _remote_deletions(api: Any, plan: PushPlan, step: _Step) -> list[str]:
    """Remote files matching a --delete pattern, except the ones this commit uploads (and
    .gitattributes), as `hf upload --delete` chooses them."""
    step.name = f"listing the files of {plan.repo_id}@{plan.revision}"
    remote = api.list_repo_files(plan.repo_id, revision=plan.revision)
    uploading = {f.path_in_repo for f in plan.files}
    return [
        path
        for path in remote
        if path not in uploading
        and path != KEEP_ON_DELETE
        and any(matches(path, pattern) for pattern in plan.delete)
    ]


def _operation(upload: UploadFile, open_files: contextlib.ExitStack, hashing: Step) -> tuple:
    """The commit operation for `upload`; huggingface_hub hashes the file here, counted."""
    from huggingface_hub import CommitOperationAdd

    if upload.content is not None:
        hashing.advance(len(upload.content))
        return upload, CommitOperationAdd(upload.path_in_repo, upload.content)
    try:
        source = open_files.enter_context(CountedFile(upload.local_path, hashing))
    except OSError as exc:  # a symlink planted since the check is not followed (ELOOP)
        raise BadInputError(
            f"cannot read {upload.path_in_repo} from the model directory "
            f"({exc.strerror or exc}); was it replaced while pushing?"
        ) from None
    return upload, CommitOperationAdd(upload.path_in_repo, source)


def _upload(
    api: Any,
    plan: PushPlan,
    upload: UploadFile,
    operation: Any,
    progress: Progress,
    total: LineOnFirstRead,
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
    total.settle(upload.size - (counted.counted if isinstance(counted, CountedFile) else 0))
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
    payload = plan_payload(result.plan if result else plan)
    payload["dry_run"] = result is None
    payload["commit_url"] = result.commit_url if result else None
    payload["commit_oid"] = result.commit_oid if result else None
    payload["pr_url"] = result.pr_url if result else None
    payload["changed"] = result.changed if result else None
    payload["deleted"] = result.deleted if result else None
    if result is not None:
        payload["files"] = result.files
        payload["warnings"] = [*plan.warnings, *result.warnings]
    return payload


def push_to_hub(
    hf_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress = NO_PROGRESS,
    **plan_options: Any,
) -> PushResult:
    """Upload a converted directory with its model card in one commit. `plan_options` are
    `plan_push`'s keywords (revision, create_pr, private, license_, commit_message, endpoint,
    ...); `plan_push` alone is the dry run (no network)."""
    from owlvit_cli.publish.secrets import resolve_token

    plan = plan_push(Path(hf_dir), repo_id, **plan_options)
    return push(plan, token=resolve_token(token), timeout=timeout, progress=progress)
