"""Terminal rendering helpers shared by the commands (rich tables)."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def fmt_bytes(n: int | float | None) -> str:
    """Human-readable size, e.g. ``1.5 MiB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def fmt_num(x: Any, digits: int = 3) -> str:
    """Numbers compactly: None as '-', small floats in scientific notation."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    return str(x)


def fmt_pct(x: float | None, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage."""
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column key/value table."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(escape(key), escape(value if isinstance(value, str) else fmt_num(value)))
    return table


#: width used when output is not a terminal (pipes, CI logs): wide enough for the report tables
PIPE_WIDTH = 140


def console(stderr: bool = False) -> Console:
    """The console the CLI renders to; not a terminal means a fixed, wide layout instead of 80 columns."""
    con = Console(stderr=stderr, highlight=False)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return con
