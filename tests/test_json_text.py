import json
import math

import numpy as np
import pytest

from owlvit_cli.json_text import strict_json_dumps


def _strict(text: str) -> object:
    def reject(constant: str) -> None:
        raise AssertionError(f"bare {constant}")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity"), (1.5, 1.5)],
)
def test_non_finite_floats_become_strings(value: float, expected: object):
    text = strict_json_dumps({"a": [value], "b": {"c": np.float32(value)}}, default=float)
    assert _strict(text) == {"a": [expected], "b": {"c": expected}}


def test_parse_json_refuses_deep_nesting_in_one_error():
    """Past Python's recursion limit the parser itself fails (RecursionError); below it, any
    later walk over the value could. Both are one BadInputError naming the file."""
    from owlvit_cli.errors import BadInputError
    from owlvit_cli.json_text import MAX_JSON_DEPTH, parse_json

    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        with pytest.raises(BadInputError, match=r"config\.json: not valid JSON .*nested"):
            parse_json("[" * depth + "]" * depth, "config.json")
    assert parse_json('{"a": ' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH, "x")
    with pytest.raises(BadInputError, match="not valid JSON"):
        parse_json(b"\xff{}", "x")
