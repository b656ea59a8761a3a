"""Small formatting helpers shared by every command's human output."""

from __future__ import annotations

from rich.table import Table


def key_value_grid() -> Table:
    """Two borderless columns, the key in bold: every command's summary block."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    return table


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
