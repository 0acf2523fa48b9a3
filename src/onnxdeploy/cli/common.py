"""Options and output shared by the step commands: ``--json``, ``--report``, ``--data``, ``--dim``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ..data import parse_dims, parse_int_ranges
from ..modelfile import parse_batch_axes
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
        help="Size of a free dimension for random data: NAME=VALUE for a named dim, "
             "INPUT:AXIS=VALUE for an unnamed one (-1, '?') (repeatable).")(wrapper)
    wrapper = click.option(
        "--data", "data", metavar="SOURCE", default=None,
        help="'digits' (built-in, labelled), 'random', or a .npz with one array per input "
             "and optional 'labels'. Default: digits when it fits the model, else random.")(wrapper)
    return wrapper


def batch_axis_option(fn: Callable) -> Callable:
    """Add repeatable ``--batch-axis INPUT=AXIS`` (parsed into ``batch_axes``: name -> axis or None).

    The command applies it to the signature before building data:
    ``sig = signature(model).with_batch_axes(batch_axes)``, then ``load_data(source, sig, ...)``.
    """

    @functools.wraps(fn)
    def wrapper(*args, batch_axis: tuple[str, ...], **kwargs):
        kwargs["batch_axes"] = parse_batch_axes(batch_axis)
        return fn(*args, **kwargs)

    return click.option(
        "--batch-axis", "batch_axis", multiple=True, metavar="INPUT=AXIS",
        help="The axis of INPUT that carries the batch, when the guess (shared dim name, else "
             "the first dynamic axis) is wrong; INPUT=none for an input without one (repeatable).")(wrapper)


def int_range_option(fn: Callable) -> Callable:
    """Add repeatable ``--int-range INPUT=LO:HI`` (parsed into ``int_ranges``) for random data.

    The command passes it on: ``load_data(source, sig, int_ranges=int_ranges, ...)``.
    """

    @functools.wraps(fn)
    def wrapper(*args, int_range: tuple[str, ...], **kwargs):
        kwargs["int_ranges"] = parse_int_ranges(int_range)
        return fn(*args, **kwargs)

    return click.option(
        "--int-range", "int_range", multiple=True, metavar="INPUT=LO:HI",
        help="Random integers for INPUT from LO to HI-1, e.g. input_ids=0:30522 "
             "(default 0:10; repeatable).")(wrapper)


def emit(report: Any, *, as_json: bool, report_path: str | None, render: Callable[[Any], None]) -> None:
    """Write the report where asked and show it: JSON on stdout or the human rendering."""
    if report_path:
        write_json(report_path, report)
    if as_json:
        click.echo(dumps(report), nl=False)
    else:
        render(report)


def ort_threads_option(fn: Callable) -> Callable:
    """Add ``--ort-threads N`` (ONNX Runtime intra-op threads); ``--threads`` still works for one
    release with a deprecation note (it means HTTP threads in serve and bench)."""

    @functools.wraps(fn)
    def wrapper(*args, ort_threads: int | None, threads: int | None, **kwargs):
        if threads is not None:
            click.echo("note: --threads is deprecated here; use --ort-threads (ONNX Runtime "
                       "threads per session)", err=True)
        kwargs["ort_threads"] = ort_threads if ort_threads is not None else threads
        return fn(*args, **kwargs)

    wrapper = click.option("--threads", type=click.IntRange(min=1), hidden=True,
                           help="Deprecated spelling of --ort-threads.")(wrapper)
    return click.option("--ort-threads", type=click.IntRange(min=1),
                        help="ONNX Runtime intra-op threads per session [default: the CPUs this "
                             "process may use].")(wrapper)


def input_options(fn: Callable) -> Callable:
    """``--batch-axis`` and ``--int-range``: how the model's inputs are read and filled."""
    return batch_axis_option(int_range_option(fn))


def output_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback for ``-o/--output FILE``: its directory must exist (nothing is created that
    the user did not ask for) and it must not be a directory itself."""
    from pathlib import Path

    from ..errors import OptionError

    if value is None:
        return None
    p = Path(value)
    if p.is_dir():
        raise OptionError(f"-o {value}: is a directory; expected the path of an .onnx file to write")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OptionError(f"-o {value}: the directory {parent} does not exist; create it first or "
                          "choose another path")
    return value
