"""One detection, as `detect` returns it and the drawing code draws it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Detection:
    """One box: the query it matched, sigmoid score, and [x0, y0, x1, y1] in image pixels."""

    query: str
    query_index: int
    score: float
    box: tuple[float, float, float, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "query_index": self.query_index,
            "score": self.score,
            "box": list(self.box),
        }
