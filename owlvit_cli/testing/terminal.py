"""Run the console script in a pseudo-terminal and read the screen a person would see.

The tests assert on that screen and `make screenshots` draws it, so both show the same thing:
what a real terminal made of every byte the command wrote (cursor moves and redraws of the live
display included), once the command has ended. Needs the dev extras (pexpect, pyte).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.text import Text

COLUMNS, ROWS = 120, 200  # taller than any output, so nothing scrolls off the screen
STATUS_GLYPHS = ("✓", "✗")
SPINNER_GLYPHS = range(0x2800, 0x2900)  # rich's default "dots" spinner is braille


def is_spinner(char: str) -> bool:
    return len(char) == 1 and ord(char) in SPINNER_GLYPHS


@dataclass
class Screen:
    """The final screen: text lines (trailing blank ones dropped) and their characters."""

    lines: list[str]
    exit_code: int
    chars: list[list[Any]] = field(repr=False)  # pyte characters, row by row

    @property
    def colours(self) -> set[str]:
        return {char.fg for row in self.chars for char in row}

    @property
    def steps(self) -> list[str]:
        """The step lines: those starting with a status glyph or a spinner, up to the first
        line that is neither one, nor a step's indented detail, nor a warning (where the
        result begins)."""
        steps: list[str] = []
        for line in self.lines:
            if line[:1] in STATUS_GLYPHS or is_spinner(line[:1]):
                steps.append(line)
            elif steps and not line.startswith(("warning:", "  ")):
                break
        return steps

    def detail(self, step_line: str) -> str:
        """The indented line under a step (what a forward pass runs on), or ""."""
        below = self.lines[self.lines.index(step_line) + 1 :][:1]
        return below[0].strip() if below and below[0].startswith("  ") else ""

    def text(self) -> str:
        return "\n".join(self.lines)

    def rich_text(self) -> Text:
        """The screen with its colours, for rich to draw (`make screenshots`)."""
        from rich.style import Style
        from rich.text import Text

        text = Text()
        for number, row in enumerate(self.chars):
            for char in row:
                colour = None if char.fg == "default" else _colour(char.fg)
                text.append(char.data, Style(color=colour, bold=char.bold))
            text.rstrip()
            if number < len(self.chars) - 1:
                text.append("\n")
        return text


def _colour(name: str) -> str:
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return f"#{name}"
    return {"brown": "yellow"}.get(name, name)


def run_in_terminal(
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    columns: int = COLUMNS,
    timeout: float = 600,
    cwd: str | os.PathLike[str] | None = None,
    signal_when: tuple[str | os.PathLike[str], int] | None = None,
) -> Screen:
    """Run `owlvit ARGS` in a pseudo-terminal of `columns` and render what it wrote. With
    `signal_when=(FILE, SIGNUM)` the command gets SIGNUM once FILE exists (a hold point's
    file, see `owlvit_cli.hold`)."""
    import pexpect
    import pyte

    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environ.update(TERM="xterm-256color", COLUMNS=str(columns), LINES=str(ROWS))
    environ.update(env or {})
    child = pexpect.spawn(
        sys.executable,
        ["-m", "owlvit_cli", *map(str, args)],
        env=environ,
        dimensions=(ROWS, columns),
        timeout=timeout,
        cwd=str(cwd) if cwd is not None else None,
    )
    data = b""
    pending = signal_when
    while True:
        if pending is not None and os.path.exists(pending[0]):
            child.kill(pending[1])
            pending = None
        try:
            data += child.read_nonblocking(1 << 16, timeout=timeout if pending is None else 0.05)
        except pexpect.TIMEOUT:
            if pending is None:
                raise
        except pexpect.EOF:
            break
    child.close()
    screen = pyte.Screen(columns, ROWS)
    pyte.ByteStream(screen).feed(data)
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    chars = [[screen.buffer[y][x] for x in range(columns)] for y in range(len(lines))]
    code = child.exitstatus if child.exitstatus is not None else 128 + (child.signalstatus or 0)
    return Screen(lines, code, chars)
