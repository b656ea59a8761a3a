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
CONTROL_OR_SPACE_RE = re.compile(r"[\x00-\x20\x7f-\x9f\s]")


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
    """--endpoint, else HF_ENDPOINT, else the public Hub: checked here, so a malformed URL is
    bad input (never a crash inside the HTTP client) and no message shows its credentials."""
    from owlvit_cli.redaction import public_url

    endpoint = (explicit or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    problem = _endpoint_problem(endpoint)
    if problem:
        raise BadInputError(f"unusable endpoint {public_url(endpoint)!r}: {problem}")
    return endpoint


def _endpoint_problem(endpoint: str) -> str | None:
    if CONTROL_OR_SPACE_RE.search(endpoint):
        return "it contains whitespace or a control character (a trailing newline?)"
    try:
        parts = urlsplit(endpoint)
    except ValueError:  # its text may quote the credentials: never shown
        return "not a valid URL (an unclosed '[' around the host?)"
    if parts.scheme not in ("http", "https"):
        return "expected an http(s) URL such as https://huggingface.co"
    if not parts.netloc:
        return "no host name (expected http(s)://HOST, with two slashes)"
    if "@" in parts.path + parts.query + parts.fragment:
        return (
            "its credentials hold an unencoded '/', '?' or '#' "
            "(percent-encode them as %2F, %3F and %23)"
        )
    if not parts.hostname:
        return "no host name (expected http(s)://HOST)"
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:  # its text quotes what stands after the ':', maybe a password
        return "the port is not a number from 0 to 65535"
    if parts.query or parts.fragment:
        return "expected the Hub's base URL, without a query (?...) or fragment (#...)"
    return None
