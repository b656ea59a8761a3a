"""Files that tell a progress step how much of them has been read.

huggingface_hub reads each file of a commit twice, through the file object it is given: once
to hash it (when the operation is made) and once to send it (LFS upload). Handing it these
files instead of paths lets the push show both passes in bytes as they happen, not a file at a
time. Only the furthest position reached counts, so a retried upload that seeks back and reads
the same bytes again does not push the count past the file's size.
"""

from __future__ import annotations

import io
import os
from contextlib import ExitStack
from pathlib import Path

from owlvit_cli.progress import Progress, Step


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))


class CountedFile(io.BufferedReader):
    """A read-only file whose reads advance `step` by the bytes newly reached."""

    def __init__(self, path: Path, *steps: Step) -> None:
        # `path` has its symlinks resolved and checked; one planted since then is not followed.
        super().__init__(io.FileIO(path, "rb", opener=_no_follow))
        self.count(*steps)

    def count(self, *steps: Step) -> None:
        """Report the next pass over the file, from its start, to `steps` (none: stop)."""
        self._steps = steps
        self.counted = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self._reached(self.tell())
        return data

    def read1(self, size: int = -1) -> bytes:
        data = super().read1(size)
        self._reached(self.tell())
        return data

    def _reached(self, position: int) -> None:
        if position > self.counted:
            for step in self._steps:
                step.advance(position - self.counted)
            self.counted = position


class LineOnFirstRead:
    """A step that opens its progress line only when the file is first read: a file that the
    Hub already has, or that goes inside the commit, is not sent here and gets no line."""

    def __init__(self, progress: Progress, label: str, size: int, lines: ExitStack) -> None:
        self.progress, self.label, self.size, self.lines = progress, label, size, lines
        self.step: Step | None = None
        self.settled = 0.0  # done without being sent, shown once something is

    def set_total(self, total: float, unit: str = "") -> None:
        self.size = int(total)

    def advance(self, amount: float = 1) -> None:
        if self.step is None:
            line = self.progress.step(self.label, total=self.size, unit="bytes")
            self.step = self.lines.enter_context(line)
            self.step.advance(self.settled)
        self.step.advance(amount)

    def settle(self, amount: float) -> None:
        """Count bytes that need no sending (on the Hub already, or going inside the commit)
        without opening the line: a push that sends nothing shows no upload at all."""
        if self.step is None:
            self.settled += amount
        else:
            self.step.advance(amount)

    def describe(self, name: str) -> None:
        self.label = name
