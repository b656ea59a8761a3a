"""Keeping credentials out of every output: the token, and credentials inside an endpoint URL.

Servers and proxies do echo request headers and URLs back in error bodies and headers, and
huggingface_hub logs requests with --debug, so each secret is scrubbed from every exception
in a chain (and from huggingface_hub's log records) before anything can print it.
"""

from __future__ import annotations

import base64
import logging
import re
from urllib.parse import quote, unquote, urlsplit

from owlvit_cli.errors import BadInputError, HubError, first_line
from owlvit_cli.redaction import HIDDEN

# RFC 6750 b64token: anything else cannot be sent in an Authorization header, and httpx would
# echo the rejected header value (the token) in its exception text.
BEARER_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def endpoint_secrets(endpoint: str) -> list[str]:
    """The credentials in an endpoint URL (`https://user:password@host`), in every spelling a
    response may echo: as written, percent-decoded, and as the Basic Authorization value httpx
    sends for them."""
    netloc = urlsplit(endpoint).netloc
    if "@" not in netloc:
        return []
    userinfo = netloc.rpartition("@")[0]
    password = userinfo.partition(":")[2]
    # The user name alone is a secret only when it is the credential (`https://TOKEN@host`).
    spellings = {c for s in (userinfo, password) if s for c in (s, unquote(s))}
    user, _, plain_password = unquote(userinfo).partition(":")
    basic = base64.b64encode(f"{user}:{plain_password}".encode()).decode()
    spellings |= {basic, basic.rstrip("=")}
    return sorted(spellings, key=len, reverse=True)


def resolve_token(explicit: str | None) -> str:
    """--token, else what huggingface_hub resolves (HF_TOKEN, then the `hf auth login` file)."""
    token = explicit.strip() if explicit else None
    if not token:
        from huggingface_hub import get_token

        try:
            token = get_token()
        except Exception as exc:  # OIDC exchange / OAuth refresh failures
            raise HubError(f"could not obtain a Hugging Face token: {first_line(exc)}") from None
    if not token:
        raise HubError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login`", hint="or pass --token"
        )
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
            text = text.replace(secret, HIDDEN).replace(quote(secret, safe=""), HIDDEN)
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


class RedactingFilter(logging.Filter):
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
