"""A URL as it may be shown: what a user typed, with anything that can be a credential hidden.

Everything owlvit prints can end up in a public bug report (`owlvit env` exists to be pasted
into one), and a URL carries credentials in three places: before an `@` (`user:password@`),
in query values (`?token=`, `?sig=`) and in the fragment. The URL is treated as text, never
parsed: the ones that matter most are the malformed ones (a mistyped `https:/`, a password
holding an unencoded `/`, `?` or `#`), which a URL parser splits in the wrong place and
shows half of. When unsure, more is hidden, never less.
"""

from __future__ import annotations

import re

HIDDEN = "***"
# A scheme only where one is plain: `alice:PW@host` has no scheme, its `alice:` is a user name.
SCHEME_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:(?=[/\\])|https?:)", re.IGNORECASE)
# Hugging Face tokens, wherever they sit (a path segment of a proxy URL, a query value).
HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{6,}")
# A "port" that is not a number is a password whose `@host` was left off (`https://alice:PW`).
PORT_RE = re.compile(r"^((?:\*\*\*@)?(?:\[[^\]/?#]*\]|[^\[\]:/?#@]*)):(?![0-9]*(?:[/?#]|$))[^/?#]*")


def public_url(url: str) -> str:
    """`url` with its credentials replaced by ***: everything up to the last `@` after the
    scheme, a port that is not a number, every query value (a query part without `=`
    entirely), the fragment and anything shaped like a Hugging Face token. Never raises."""
    scheme = SCHEME_RE.match(url)
    head = scheme.group(0) if scheme else ""
    rest = url[len(head) :]
    slashes = len(rest) - len(rest.lstrip("/\\"))
    head, rest = head + rest[:slashes], rest[slashes:]
    if "@" in rest:  # the last one: a password may hold an unencoded `/ ? # @`
        rest = HIDDEN + rest[rest.rindex("@") :]
    rest = PORT_RE.sub(rf"\1:{HIDDEN}", rest, count=1)
    rest, hash_, _fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    if question:
        rest += "?" + "&".join(_public_parameter(part) for part in query.split("&"))
    if hash_:
        rest += "#" + HIDDEN
    return HF_TOKEN_RE.sub(f"hf_{HIDDEN}", head + rest)


def _public_parameter(part: str) -> str:
    name, equals, value = part.partition("=")
    if not equals:
        return HIDDEN if part else part
    return f"{name}={HIDDEN}" if value else part
