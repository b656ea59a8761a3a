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
