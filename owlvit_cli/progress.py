"""The one progress protocol: how the core tells whoever is watching what it is doing.

The core (convert, verify, push, detect) names each slow piece of work as a step, gives it a
total once known, advances it by amounts, and the step finishes or fails with the block that
runs it. It never knows whether a terminal display, a log or nothing at all is listening: the
CLI passes its rich display (`owlvit_cli.cli.output`), library callers pass their own or
nothing (`NO_PROGRESS`). This module imports nothing heavy so every layer can use it.

A step's name may carry a second line, its detail (what runs where, `step_name`): a terminal
display shows it under the name, a log in parentheses after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


def step_name(title: str, detail: str = "") -> str:
    """A step's name with the detail a display shows beside it (see module doc)."""
    return f"{title}\n{detail}" if detail else title


def split_step_name(name: str) -> tuple[str, str]:
    """(title, detail) of a name made by `step_name`."""
    title, _, detail = name.partition("\n")
    return title, detail.replace("\n", " ")


def forward_detail(
    device: str, images: int, image_size: int, patches: int, queries: int | None = None
) -> str:
    """What a forward pass runs on: `cpu, 2 images of 768×768, 576 patches each, 4 queries`."""
    parts = [
        device,
        f"{images} image{'' if images == 1 else 's'} of {image_size}×{image_size}",
        f"{patches} patches{'' if images == 1 else ' each'}",
    ]
    if queries:
        parts.append(f"{queries} quer{'y' if queries == 1 else 'ies'}")
    return ", ".join(parts)


LAYERS = "layers"
"""The unit of a forward pass's progress: encoder layers run, over all its towers and passes."""


class Step(Protocol):
    """One named piece of work in progress."""

    def set_total(self, total: float, unit: str = "") -> None:
        """The amount of work, once known (`unit` "bytes" shows sizes and a byte rate)."""

    def advance(self, amount: float = 1) -> None:
        """Some of the work is done."""

    def describe(self, name: str) -> None:
        """Rename the step, e.g. to the file being uploaded now."""


class Progress(Protocol):
    """Opens steps. `with progress.step(...)` finishes the step when the block ends and marks
    it failed when the block raises."""

    def step(
        self, name: str, total: float | None = None, unit: str = ""
    ) -> contextlib.AbstractContextManager[Step]: ...


class _NoStep:
    def set_total(self, total: float, unit: str = "") -> None:
        pass

    def advance(self, amount: float = 1) -> None:
        pass

    def describe(self, name: str) -> None:
        pass


class _NoProgress:
    @contextlib.contextmanager
    def step(self, name: str, total: float | None = None, unit: str = "") -> Iterator[Step]:
        yield _NoStep()


NO_STEP: Step = _NoStep()
"""A step nobody watches, for work that is counted only sometimes."""

NO_PROGRESS: Progress = _NoProgress()
"""The default everywhere: work runs, nothing is shown."""
