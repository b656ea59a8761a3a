"""The dtypes: accepted spellings, numpy's names for them, and the checkpoint dtypes refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from owlvit_cli.errors import BadInputError
from owlvit_cli.model.dtypes import (
    DTYPE_ALIASES,
    DTYPES,
    SAFETENSORS_DTYPES,
    dtype_problems,
    normalize_dtype,
    numpy_dtype,
)


@dataclass(frozen=True)
class Entry:
    path: str
    source_path: str
    shape: tuple[int, ...]
    dtype_name: str


def test_dtype_aliases_are_normalised_in_one_place():
    assert set(DTYPES) == set(SAFETENSORS_DTYPES)
    assert [numpy_dtype(name).itemsize for name in DTYPES] == [4, 2, 2]
    assert set(DTYPE_ALIASES.values()) == set(DTYPES)
    expected = {"fp32": "float32", "f32": "float32", "fp16": "float16", "f16": "float16"}
    expected |= {"bf16": "bfloat16", "BF16": "bfloat16", "bfloat16": "bfloat16"}
    for alias, canonical in expected.items():
        assert normalize_dtype(alias) == canonical
    with pytest.raises(BadInputError, match="bf16"):
        normalize_dtype("int8")


def test_dtype_problems_name_every_tensor_that_is_not_floating_point():
    entries = [Entry(f"a/{i}", f"params/a/{i}", (2,), "int32") for i in range(8)]
    entries.append(Entry("b", "params/b", (2,), "bfloat16"))
    (problem,) = dtype_problems(entries)
    assert problem.startswith("8 tensor(s) are not floating point")
    assert "params/a/0 (int32)" in problem and problem.endswith(" …")
    assert "params/b" not in problem
    assert dtype_problems(entries[-1:]) == []
