"""Options and output shared by the step commands: ``--json``, ``--report``, ``--data``, ``--dim``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ..data import parse_dims
from ..report.jsonio import dumps, write_json


def report_options(fn: Callable) -> Callable:
    """Add ``--json`` and ``--report PATH`` to a step command."""
    fn = click.option("--report", "report_path", type=click.Path(dir_okay=False),
                      help="Also write the report as JSON to this path.")(fn)
    fn = click.option("--json", "as_json", is_flag=True,
                      help="Print the report as JSON on stdout and nothing else.")(fn)
    return fn


def data_options(fn: Callable) -> Callable:
    """Add ``--data SOURCE`` and ``--dim NAME=VALUE`` (parsed into ``dims``)."""

    @functools.wraps(fn)
    def wrapper(*args, dim: tuple[str, ...], **kwargs):
        kwargs["dims"] = parse_dims(dim)
        return fn(*args, **kwargs)

    wrapper = click.option(
        "--dim", multiple=True, metavar="NAME=VALUE",
        help="Size of a symbolic dimension for random data (repeatable).")(wrapper)
    wrapper = click.option(
        "--data", "data", metavar="SOURCE", default=None,
        help="'digits' (built-in, labelled), 'random', or a .npz with one array per input "
             "and optional 'labels'. Default: digits when it fits the model, else random.")(wrapper)
    return wrapper


def emit(report: Any, *, as_json: bool, report_path: str | None, render: Callable[[Any], None]) -> None:
    """Write the report where asked and show it: JSON on stdout or the human rendering."""
    if report_path:
        write_json(report_path, report)
    if as_json:
        click.echo(dumps(report), nl=False)
    else:
        render(report)
