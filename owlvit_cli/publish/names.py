"""Repo ids, revisions and endpoints, checked locally so a typo never reaches the network (and
a dry run never says yes to something the Hub would refuse)."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from owlvit_cli.errors import BadInputError

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT = 60.0  # seconds to wait for the Hub on each request
PR_REVISION_RE = re.compile(r"refs/pr/\d+")
# The Hub stores branches as git refs; a ref name is also a file name on its servers, so
# 255 bytes is the longest one that can exist.
MAX_REVISION_BYTES = 255
# git check-ref-format: no control characters, space, ~ ^ : ? * [ \ anywhere.
REF_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def validate_repo_id(repo_id: str) -> str:
    """OWNER/NAME, or a bare NAME (the token's own namespace, resolved at push time)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    if repo_id.count("/") > 1:
        raise BadInputError(f"REPO_ID must be NAME or OWNER/NAME, got {repo_id!r}")
    try:
        hf_validate(repo_id)
    except HFValidationError as exc:
        raise BadInputError(f"invalid REPO_ID {repo_id!r}: {str(exc).splitlines()[0]}") from None
    return repo_id


def has_namespace(repo_id: str) -> bool:
    return "/" in repo_id


def validate_revision(revision: str | None) -> str:
    """A branch name (or refs/pr/N) the Hub would accept: git's ref-name rules, checked here.

    `refs/heads/NAME` is NAME; `refs/pr/N` adds to an open pull request; other `refs/...`
    (tags, conversions) cannot be committed to.
    """
    if revision is None:
        return "main"
    name = revision.removeprefix("refs/heads/")
    if PR_REVISION_RE.fullmatch(name):
        return name
    problem = _ref_problem(name)
    if problem:
        raise BadInputError(f"invalid revision {revision!r}: {problem}")
    return name


def _ref_problem(name: str) -> str | None:
    if not name:
        return "empty"
    if len(name.encode()) > MAX_REVISION_BYTES:
        return f"longer than {MAX_REVISION_BYTES} bytes"
    if name.startswith("refs/"):
        return "only a branch name or refs/pr/N can be committed to"
    if REF_FORBIDDEN_RE.search(name):
        return "no spaces, control characters or any of ~ ^ : ? * [ \\"
    if name.startswith("-"):
        return "cannot start with '-'"
    if ".." in name or "@{" in name or name == "@":
        return "cannot contain '..' or '@{', or be '@'"
    if name.startswith("/") or name.endswith(("/", ".")) or "//" in name:
        return "cannot start or end with '/', end with '.', or contain '//'"
    parts = name.split("/")
    if any(part.startswith(".") or part.endswith(".lock") for part in parts):
        return "no part may start with '.' or end with '.lock'"
    return None


def resolve_endpoint(explicit: str | None) -> str:
    """--endpoint, else HF_ENDPOINT, else the public Hub."""
    endpoint = (explicit or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        from owlvit_cli.publish.secrets import public_endpoint

        raise BadInputError(f"endpoint must be an http(s) URL, got {public_endpoint(endpoint)!r}")
    return endpoint
