"""``onnxdeploy quantize IN.onnx -o OUT.onnx``."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from ..quantize import QuantizeOptions, quantize_model
from ..quantize.options import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_COUNT,
    DEFAULT_LATENCY_BATCH,
    DEFAULT_LATENCY_ROUNDS,
    DEFAULT_MAX_ACCURACY_DROP,
    MODES,
    WEIGHT_TYPES,
    parse_op_types,
)
from ..report.terminal import console, fmt_bytes, fmt_num, fmt_pct, kv_table
from .common import data_options, emit, report_options


def _latency(ms: dict[str, float], key: str) -> str:
    return "-" if key not in ms else f"{ms[key]:.3f}"


def render(report) -> None:
    d = report.to_dict()
    cmp_ = d["comparison"]
    rows = [
        ("mode", d["mode"] + (f" (chose {report.chosen})" if report.mode == "auto" else "")),
        ("output", d["output"] or "none written"),
        ("data", f"{d['data']} ({d['samples']} samples)"),
        ("size", f"{fmt_bytes(d['size_bytes']['before'])} -> {fmt_bytes(d['size_bytes']['after'])}"
                 f" ({fmt_num(d['size_ratio'], 2)}x smaller)"),
        ("max abs diff", fmt_num(cmp_["max_abs_diff"])),
        ("top-1 agreement", fmt_pct(cmp_["top1_agreement"])),
        ("accuracy before / after", f"{fmt_pct(cmp_['accuracy_before'])} / {fmt_pct(cmp_['accuracy_after'])}"),
        (f"{cmp_['criterion'].replace('_', ' ')} (tolerance)",
         f"{fmt_num(cmp_['error'], 4)} ({cmp_['tolerance']}) {'ok' if cmp_['passed'] else 'FAILED'}"),
    ]
    for key, before in d["latency_ms"]["before"].items():
        after = d["latency_ms"]["after"].get(key)
        speed = d["speedup"].get(key)
        rows.append((f"latency {key.replace('_', ' ')} (ms)",
                     f"{before:.3f} -> {'-' if after is None else f'{after:.3f}'}"
                     + ("" if speed is None else f" ({speed:.2f}x faster)")))
    for note in d["preprocessing"]:
        rows.append(("prepared", note))
    out = console()
    out.print(kv_table(f"quantize {d['model']}", rows))
    if report.mode == "auto":
        table = Table(title="candidates (latency ms, measured A/B against float)", title_justify="left")
        keys = list(d["latency_ms"]["before"])
        for col in ["name", "size", *(k.replace("_", " ") for k in keys), "error", "ok", "reason"]:
            table.add_column(col)
        table.add_row("float", fmt_bytes(d["size_bytes"]["before"]),
                      *(_latency(d["latency_ms"]["before"], k) for k in keys), "-", "-", "reference")
        for c in report.candidates:
            table.add_row(c.name, fmt_bytes(c.size_bytes), *(_latency(c.latency_ms, k) for k in keys),
                          fmt_num(c.error, 4), "yes" if c.admissible else "no", c.reason)
        out.print(table)
        out.print(escape(report.reason))
    for warning in d["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}")


@click.command("quantize")
@click.argument("src", metavar="IN.onnx", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the int8 model.")
@click.option("--mode", type=click.Choice(MODES), default="dynamic", show_default=True,
              help="dynamic: int8 weights; static: calibrated QDQ; auto: measure candidates, keep the fastest admissible.")
@click.option("--weight-type", type=click.Choice(WEIGHT_TYPES), default="int8", show_default=True)
@click.option("--per-channel", is_flag=True, help="One scale per output channel of each weight.")
@click.option("--reduce-range", is_flag=True, help="7-bit weights (can help accuracy on CPUs without VNNI).")
@click.option("--op-types", metavar="A,B", help="Quantize only these operator types, e.g. MatMul,Gemm.")
@data_options
@click.option("--count", type=click.IntRange(min=1), help="Evaluate on at most this many samples.")
@click.option("--calibrate", "calibration_method", type=click.Choice(CALIBRATION_METHODS), default="minmax",
              show_default=True, help="How static mode picks activation ranges.")
@click.option("--calibration-count", type=click.IntRange(min=1), default=DEFAULT_CALIBRATION_COUNT,
              show_default=True, help="Samples used for calibration.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 1, max_open=True),
              default=DEFAULT_MAX_ACCURACY_DROP, show_default=True,
              help="Largest accepted accuracy drop (or top-1 disagreement without labels), as a fraction.")
@click.option("--allow-slower", is_flag=True,
              help="auto: take the fastest admissible int8 model even when it is slower than float.")
@click.option("--latency-batch", type=click.IntRange(min=1), default=DEFAULT_LATENCY_BATCH, show_default=True,
              help="The larger batch size at which latency is measured (besides 1).")
@click.option("--rounds", type=click.IntRange(min=1), default=DEFAULT_LATENCY_ROUNDS, show_default=True,
              help="A/B rounds of latency measurement.")
@click.option("--threads", type=click.IntRange(min=1), help="ORT intra-op threads (default: CPUs available).")
@report_options
@click.pass_context
def command(ctx, src, out, mode, weight_type, per_channel, reduce_range, op_types, data, dims, count,
            calibration_method, calibration_count, max_accuracy_drop, allow_slower, latency_batch, rounds,
            threads, as_json, report_path):
    """Quantize an ONNX model to int8 and report size, accuracy and speed against the float model."""
    opts = QuantizeOptions(
        mode=mode, weight_type=weight_type, per_channel=per_channel, reduce_range=reduce_range,
        op_types=parse_op_types(op_types), data=data, dims=dims, count=count,
        calibration_method=calibration_method, calibration_count=calibration_count,
        max_accuracy_drop=max_accuracy_drop, allow_slower=allow_slower, latency_batch=latency_batch,
        latency_rounds=rounds, threads=threads,
    )
    report = quantize_model(src, out, opts)
    emit(report, as_json=as_json, report_path=report_path, render=render)
    if not report.passed:
        ctx.exit(1)
