"""Keeping credentials out of every output: the token, and credentials inside an endpoint URL.

Servers and proxies do echo request headers and URLs back in error bodies and headers, and
huggingface_hub logs requests with --debug, so each secret is scrubbed from every exception
in a chain (and from huggingface_hub's log records) before anything can print it.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
from urllib.parse import quote, unquote, urlsplit

from owlvit_cli.errors import BadInputError, HubError, first_line
from owlvit_cli.redaction import HIDDEN

# RFC 6750 b64token: anything else cannot be sent in an Authorization header, and httpx would
# echo the rejected header value (the token) in its exception text.
BEARER_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Where huggingface_hub looks for a token before its file (OIDC aside).
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE")
MAX_TOKEN_FILE = 1 << 16
# A proxy's credentials can be echoed too (a 407 page), by any of these spellings.
PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "https_proxy",
    "http_proxy",
    "all_proxy",
)


def proxy_secrets() -> list[str]:
    """The credentials in the proxy URLs httpx takes from the environment."""
    secrets: list[str] = []
    for name in PROXY_VARIABLES:
        try:
            secrets += endpoint_secrets(os.environ.get(name, ""))
        except ValueError:  # a proxy URL httpx cannot use either
            continue
    return secrets


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


def token_file_problem(*, pipes: bool = True) -> str | None:
    """Why the stored-token file (HF_TOKEN_PATH, or `hf auth login`'s) must not be read, when
    huggingface_hub would read it: a device (`/dev/zero` is read until memory runs out), a
    folder, or a file far larger than any token. A pipe (`HF_TOKEN_PATH=<(pass show hf)`) is
    read as given, unless not `pipes` (a report that must not wait for a writer)."""
    if any(os.environ.get(name, "").strip() for name in TOKEN_VARIABLES):
        return None  # huggingface_hub takes the variable and never opens the file
    from huggingface_hub import constants

    path = constants.HF_TOKEN_PATH
    try:
        info = os.stat(path)
    except (OSError, ValueError):  # missing (no stored token), or a name that cannot exist
        return None
    if stat.S_ISFIFO(info.st_mode):
        return None if pipes else f"the token file {path} is a pipe (not read here)"
    if not stat.S_ISREG(info.st_mode):
        return f"the token file {path} is not a regular file"
    if info.st_size > MAX_TOKEN_FILE:
        return f"the token file {path} holds {info.st_size} bytes, too many for a token"
    return None


def resolve_token(explicit: str | None) -> str:
    """--token, else what huggingface_hub resolves (HF_TOKEN, then the `hf auth login` file)."""
    token = explicit.strip() if explicit else None
    if not token:
        from huggingface_hub import get_token

        problem = token_file_problem()
        if problem:
            raise BadInputError(f"cannot read the stored Hugging Face token: {problem}")
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
