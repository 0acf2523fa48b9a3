"""``onnxdeploy optimize IN.onnx -o OUT.onnx [--passes a,b,c] [--list-passes] [--ort-level LEVEL]
[--transformer auto|bert]``."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from ..report.jsonio import dumps
from ..report.terminal import console, fmt_bytes, fmt_num, kv_table
from .common import (
    data_options,
    emit,
    input_options,
    ort_threads_option,
    output_file,
    report_options,
)


def _delta_text(delta: dict[str, int]) -> str:
    return "\n".join(f"{'+' if n > 0 else '−'}{abs(n)} {op}" for op, n in delta.items()) or "-"


def render(report) -> None:
    """The optimize report as rich tables: one row per step, then the verdict."""
    out = console()
    table = Table(title=f"optimize {report.input} -> {report.output}", title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("nodes", no_wrap=True)
    table.add_column("op delta", no_wrap=True)
    table.add_column("note")
    show_diff = any(p.max_abs_diff is not None for p in report.passes)
    if show_diff:
        table.add_column("max abs diff")
    for p in report.passes:
        style = None if p.changed else "dim"
        note = p.note or ""
        if p.fusions is not None:
            note = ", ".join(f"{op} x{n}" for op, n in p.fusions.items()) + (f"\n{note}" if note else "")
        row = [p.name, f"{p.nodes_before} -> {p.nodes_after}", _delta_text(p.op_delta), escape(note)]
        if show_diff:
            row.append(fmt_num(p.max_abs_diff))
        table.add_row(*row, style=style)
    out.print(table)

    c = report.comparison
    nodes = report.nodes
    rows = [
        ("nodes", f"{nodes['before']} -> {nodes['after']}"),
        ("size", f"{fmt_bytes(report.size_bytes['before'])} -> {fmt_bytes(report.size_bytes['after'])}"),
        ("data", f"{c['data']} ({c['samples']} samples)"),
        ("max abs diff", fmt_num(c["max_abs_diff"])),
        ("tolerance", f"{fmt_num(c['tolerance'])} abs" + (f" + {fmt_num(c['rtol'])} rel" if c["rtol"] else "")),
        ("verified", "PASSED" if c["passed"] else "FAILED"),
    ]
    if report.transformer:
        t = report.transformer
        rows.append(("transformer", f"{t['model_type']}, num_heads {t['num_heads'] or 'detected'}, "
                                    f"hidden_size {t['hidden_size'] or 'detected'} ({t['source']})"))
    if report.culprit:
        rows.append(("introduced by", report.culprit))
    if report.latency_ms:
        for key in report.latency_ms["before"]:
            rows.append((f"latency {key.replace('_', ' ')} (ms)",
                         f"{report.latency_ms['before'][key]:.3f} -> {report.latency_ms['after'][key]:.3f}"))
    if report.recommendation:
        word = {True: "yes", False: "NO", None: "undecided"}[report.recommended]
        rows.append(("recommended", f"{word}: {report.recommendation}"))
    out.print(kv_table("result", rows))
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}")


def _list_passes(as_json: bool) -> None:
    from ..optimize import DEFAULT_PASSES, available_passes

    passes = available_passes()
    if as_json:
        click.echo(dumps({"passes": passes, "default": list(DEFAULT_PASSES)}), nl=False)
        return
    table = Table(title="onnxoptimizer passes (* = default)", title_justify="left")
    table.add_column("pass")
    table.add_column("what it does")
    for name, text in passes.items():
        table.add_row(name + (" *" if name in DEFAULT_PASSES else ""), text)
    console().print(table)


@click.command("optimize")
@click.argument("src", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", type=click.Path(), callback=output_file,
              help="Where to write the optimized model (its directory must exist).")
@click.option("--passes", default=None, metavar="a,b,c",
              help="onnxoptimizer passes to run, in order. "
                   "Default: eliminate_deadend,fuse_add_bias_into_conv,fuse_bn_into_conv.")
@click.option("--list-passes", is_flag=True, help="List every available pass with a description and exit.")
@click.option("--ort-level", type=click.Choice(["basic", "extended", "all"]),
              help="Also save ONNX Runtime's offline-optimized graph at this level.")
@click.option("--transformer", metavar="auto|bert", default=None,
              help="Also run ONNX Runtime's transformer fusions and count each one (ORT's own "
                   "graph optimizations stay off, so the file is not tied to this CPU; it needs "
                   "onnxruntime's contrib ops); auto reads the model type from the exported-from "
                   "config or the graph.")
@click.option("--num-heads", type=click.IntRange(min=0), default=0,
              help="Attention heads for --transformer [default: from the config, else ORT detects].")
@click.option("--hidden-size", type=click.IntRange(min=0), default=0,
              help="Hidden size for --transformer [default: from the config, else ORT detects].")
@click.option("--no-fold", is_flag=True, help="Do not fold constants the passes leave behind.")
@data_options
@click.option("--count", type=click.IntRange(min=1), help="Verify on at most this many samples.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Largest absolute output difference accepted.")
@click.option("--rtol", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Relative tolerance added on top (|b - a| <= tolerance + rtol * |a|).")
@click.option("--latency-rounds", type=click.IntRange(min=0), default=5, show_default=True,
              help="A/B rounds of in-process latency measurement (0 skips it).")
@click.option("--latency-budget", type=click.FloatRange(min=0, min_open=True), default=3.0,
              show_default=True, help="Seconds of latency timing per variant, over all batch sizes.")
@ort_threads_option
@input_options
@report_options
@click.pass_context
def command(ctx, src, out, passes, list_passes, ort_level, transformer, num_heads, hidden_size,
            no_fold, data, dims, count, tolerance, rtol, latency_rounds, ort_threads, batch_axes,
            int_ranges, latency_budget, as_json, report_path):
    """Optimize an ONNX graph pass by pass and prove the outputs did not change.

    Exits 1 (keeping the output) when the result differs from the input by more than the
    tolerance, naming the step that introduced the difference. A verified result that measured
    slower than the input is still written, with recommended: no and a warning (exit 0).
    """
    if list_passes:
        _list_passes(as_json)
        return
    if not src or not out:
        raise click.UsageError("give the input model and -o OUT.onnx (or --list-passes)")
    from ..optimize import OptimizeOptions, optimize_model

    opts = OptimizeOptions(
        passes=passes, fold_constants=not no_fold, ort_level=ort_level, transformer=transformer,
        num_heads=num_heads, hidden_size=hidden_size, data=data, dims=dims,
        count=count, tolerance=tolerance, rtol=rtol, latency_rounds=latency_rounds,
        latency_budget_s=latency_budget, threads=ort_threads,
        batch_axes=batch_axes, int_ranges=int_ranges,
    )
    report = optimize_model(src, out, opts)
    emit(report, as_json=as_json, report_path=report_path, render=render)
    if not report.passed:
        ctx.exit(1)
