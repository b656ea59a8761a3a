"""Parameter trees as nested dicts and as flat `a/b/c` paths: the two forms every side uses
(checkpoint files and the Flax model nest; mappings, shapes and reports are flat)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

Leaf = TypeVar("Leaf")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """('a/b/c', leaf) for every leaf of a nested mapping, in insertion order."""
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten(value, path)
        else:
            yield path, value


def nest(flat: Mapping[str, Leaf]) -> dict[str, Any]:
    """The nested dict of a {'a/b/c': leaf} table, in its order."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree
