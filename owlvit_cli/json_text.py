"""JSON that strict parsers accept: NaN and ±Infinity (which Python's json writes bare, and
which no JSON parser outside Python reads) become the strings "NaN", "Infinity", "-Infinity".
Every JSON owlvit prints or writes (`--json`, conversion and verification records) goes
through here."""

from __future__ import annotations

import json
import math
from typing import Any

NON_FINITE_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}


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
