"""The spec derived from shapes: every variant round-trips, and a checkpoint's tensors name it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from owlvit_cli.errors import CheckpointError
from owlvit_cli.model.spec import VARIANTS, ModelSpec, checkpoint_spec, expected_shapes


@dataclass(frozen=True)
class Entry:
    path: str
    source_path: str
    shape: tuple[int, ...]
    dtype_name: str = "float32"


def entries(spec: ModelSpec, dtype: str = "float32") -> list[Entry]:
    return [Entry(path, path, shape, dtype) for path, shape in expected_shapes(spec).items()]


def test_model_spec_round_trips_through_json():
    for spec in VARIANTS.values():
        assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_checkpoint_spec_is_the_variant_its_tensors_describe(variant: str):
    assert checkpoint_spec(iter(entries(VARIANTS[variant]))) == VARIANTS[variant]


def test_checkpoint_spec_refuses_tensors_that_are_not_floating_point():
    with pytest.raises(CheckpointError, match="not floating point"):
        checkpoint_spec(entries(next(iter(VARIANTS.values())), "int8"))
