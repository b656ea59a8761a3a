"""JSON that strict parsers accept: NaN and ±Infinity (which Python's json writes bare, and
which no JSON parser outside Python reads) become the strings "NaN", "Infinity", "-Infinity".
Every JSON owlvit prints or writes (`--json`, conversion and verification records) goes
through here, and so does every JSON owlvit reads from a user's file (`parse_json`): text a
hostile file controls, so nesting is bounded and every failure is one error, never a
RecursionError from deep in a parser."""

from __future__ import annotations

import json
import math
from typing import Any

from owlvit_cli.errors import BadInputError, OwlvitError

NON_FINITE_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}
# Real files nest a few levels (a config, a checkpoint's tree metadata); every walk over a
# parsed value may then recurse without meeting Python's recursion limit.
MAX_JSON_DEPTH = 100


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float replaced by its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else NON_FINITE_TEXT[value]
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def strict_json_dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps that never writes bare NaN/Infinity (numpy scalars included, through
    `default`, which is applied before the replacement)."""
    default = kwargs.pop("default", None)
    plain = json.loads(json.dumps(value, default=default)) if default else value
    return json.dumps(finite_json(plain), allow_nan=False, **kwargs)


def parse_json(data: bytes | str, where: str, error: type[OwlvitError] = BadInputError) -> Any:
    """JSON from a file the user gave (`where` names it), or `error` in one line: text that
    is not UTF-8 or not JSON, or that nests deeper than `MAX_JSON_DEPTH`."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise error(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSON and UTF-8 errors
        raise error(f"{where}: not valid JSON ({exc})") from exc
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise error(f"{where}: not valid JSON (nested more than {MAX_JSON_DEPTH} levels deep)")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests containers more than `limit` deep (iterative: no recursion)."""
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            pending.extend((child, depth + 1) for child in children)
    return False
