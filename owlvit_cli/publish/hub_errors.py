"""The table of Hub and network failures: one line saying what failed and what to do.

Every failure of a push's network phase becomes a `HubError` (exit 3) naming the step that
failed; a rejected card's metadata is bad input (exit 2); anything unrecognised is left as
an exception (a bug, shown as such).
"""

from __future__ import annotations

import json
from typing import Any, Protocol
from urllib.parse import urlsplit

from owlvit_cli.errors import BadInputError, HubError, OwlvitError, first_line
from owlvit_cli.model.model_dir import CARD_FILE


class Target(Protocol):
    """Where a push goes (a `PushPlan`), as far as an error message needs it."""

    repo_id: str
    revision: str
    endpoint: str


def error_chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def map_hub_error(
    exc: BaseException, *, step: str, plan: Target, timeout: float
) -> OwlvitError | None:
    """One line saying what failed and what to do, or None for a bug (left as a traceback)."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RevisionNotFoundError,
    )

    chain = error_chain(exc)
    host = urlsplit(plan.endpoint).netloc.rpartition("@")[2]  # never the credentials
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
            return HubError(f"{step} failed: cannot connect to {host} ({first_line(error)})")
        if isinstance(error, httpx2.TimeoutException):
            return HubError(f"{step} failed: {host} did not answer within {timeout:g} s")
        if isinstance(error, (httpx2.RemoteProtocolError, httpx2.NetworkError)):
            return HubError(f"{step} failed: the connection to {host} broke off mid-request")
        if isinstance(error, httpx2.HTTPError):
            return HubError(f"{step} failed: {type(error).__name__}: {first_line(error)}")
    for error in chain:
        text = str(error)
        if isinstance(error, ValueError) and (
            "Malformed" in text or "improperly formatted" in text or "LFS batch API" in text
        ):
            return HubError(f"{step} failed: unexpected answer from {host}: {first_line(error)}")
        if isinstance(error, json.JSONDecodeError):
            return HubError(f"{step} failed: {host} answered with something that is not JSON")
    return None


def _http_message(error: Any, step: str, plan: Target, revision_missing: bool) -> str:
    status = error.response.status_code if error.response is not None else None
    detail = error.server_message or ""
    detail = f" ({first_line(detail)})" if detail else ""
    if status == 401:
        why = (
            "authentication failed (HTTP 401): the token was rejected; check the token given, "
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
