"""Terminal rendering helpers shared by the commands (rich tables)."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .fmt import fmt_bytes, fmt_num, fmt_pct

__all__ = ["console", "fmt_bytes", "fmt_num", "fmt_pct", "kv_table"]


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


#: ``onnxdeploy -q``: the human rendering of reports and progress is not printed (errors, JSON
#: and files still are); set by the CLI group
QUIET_ENV = "ONNXDEPLOY_QUIET"


def console(stderr: bool = False) -> Console:
    """The console the CLI renders to; not a terminal means a fixed, wide layout instead of 80 columns."""
    quiet = os.environ.get(QUIET_ENV) == "1"
    con = Console(stderr=stderr, highlight=False, quiet=quiet)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH, quiet=quiet)
    return con
