"""Nested and flat parameter trees convert into each other, order kept."""

from __future__ import annotations

from owlvit_cli.model.tree import flatten, nest


def test_flatten_and_nest_are_inverse_and_keep_order():
    tree = {"b": {"y": 1, "x": {"k": 2}}, "a": 3}
    flat = dict(flatten(tree))
    assert list(flat) == ["b/y", "b/x/k", "a"]
    assert nest(flat) == tree and list(nest(flat)) == ["b", "a"]
    assert dict(flatten(tree, "params")) == {f"params/{k}": v for k, v in flat.items()}
