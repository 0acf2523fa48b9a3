"""``onnxdeploy inspect MODEL.onnx``: the model as written and as onnxdeploy understands it."""

from __future__ import annotations

import click

from ..inspection import InspectReport, inspect_model
from ..report.terminal import console, fmt_bytes
from .common import emit


def _dim(d) -> str:
    # as written: -1 and '?' verbatim, an empty dim as None (how ONNX Runtime prints it)
    return "None" if d is None else str(d)


def _shape(shape) -> str:
    return "unknown rank" if shape is None else "[" + ", ".join(_dim(d) for d in shape) + "]"


def render(report: InspectReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    con = console()
    size = fmt_bytes(report.size_bytes["total"])
    if report.external_data:
        size += f" (model {fmt_bytes(report.size_bytes['model'])} + {', '.join(report.external_data)})"
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(report.opsets.items()))
    summary = Table(title=escape(report.path), show_header=False, title_justify="left")
    summary.add_column("key", style="bold", no_wrap=True)
    summary.add_column("value", overflow="fold")
    for key, value in (
        ("size", size),
        ("producer", report.producer or "-"),
        ("ir / opsets", f"ir {report.ir_version}; {opsets}"),
        ("nodes", f"{report.nodes} ({len(report.op_counts)} op types)"),
        ("parameters", f"{report.parameters:,}"),
        ("quantized", "yes: " + ", ".join(f"{k} x{v}" for k, v in report.quantized_ops.items())
         if report.quantized else "no (no int8 ops)"),
        ("task", report.task or "not declared in metadata"),
        ("batch dim", report.batch_dim or "no shared name"),
    ):
        summary.add_row(escape(key), escape(value))
    con.print(summary)

    for title, rows, last in (("inputs", report.inputs, "batch axis"), ("outputs", report.outputs, "kind")):
        table = Table(title=title, title_justify="left")
        table.add_column("name", overflow="fold")
        table.add_column("type", overflow="fold")
        table.add_column("shape as written", overflow="fold")
        table.add_column(last)
        for row in rows:
            extra = row.get("kind") if last == "kind" else (
                "none" if row["batch_axis"] is None else str(row["batch_axis"]))
            dtype = row["dtype"] or row["type"]
            table.add_row(escape(row["name"]), escape(dtype), escape(_shape(row["shape"])), escape(extra))
        con.print(table)

    ops = ", ".join(f"{k} {v}" for k, v in report.op_counts.items())
    con.print(escape(f"ops: {ops or 'none'}"), soft_wrap=False)
    if report.metadata:
        meta = Table(title="metadata", show_header=False, title_justify="left")
        meta.add_column("key", overflow="fold")
        meta.add_column("value", overflow="fold")
        for key, value in report.metadata.items():
            meta.add_row(escape(key), escape(value))
        con.print(meta)
    for note in report.notes:
        con.print(escape(f"note: {note}"))


@click.command("inspect")
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout and nothing else.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Also write the report as JSON to this path.")
def command(model, as_json, report_path):
    """Show a model's inputs, outputs, ops, size and metadata, and what onnxdeploy infers from them."""
    report = inspect_model(model)
    emit(report, as_json=as_json, report_path=report_path, render=render)
