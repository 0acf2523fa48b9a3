"""``onnxdeploy compare A.onnx B.onnx``."""

from __future__ import annotations

import click

from ..compare import CompareOptions, compare_models
from ..measure.numeric import TASKS
from ..report.fmt import fmt_figure
from ..report.terminal import console, fmt_num, fmt_pct, kv_table
from .common import data_options, emit, input_options, ort_threads_option, report_options


def render(report) -> None:
    verdict = {True: "ok", False: "FAILED", None: "not exercised by this data"}[report.passed]
    rows = [
        ("data", f"{report.data} ({report.samples} samples)"),
        ("check", verdict + ("" if not report.failures else ": " + "; ".join(report.failures))),
        ("max abs diff", fmt_num(report.max_abs_diff)),
        ("min cosine (per sample)", fmt_num(report.min_cosine, 4)),
        ("top-1 agreement", fmt_pct(report.top1_agreement)),
    ]
    for o in report.outputs:
        what = f"{o['kind']}: max abs diff {fmt_num(o['max_abs_diff'])}"
        if o.get("agreement") is not None:
            what += f", agreement {fmt_pct(o['agreement'])}"
        if o.get("min_cosine") is not None:
            what += f", min cosine {o['min_cosine']:.4f}"
        if o.get("snr_db") is not None:
            what += f", SNR {fmt_num(o['snr_db'], 1)} dB"
        if not o["exercised"]:
            what += " (not exercised by this data: pass real inputs with --data)"
        rows.append((f"output {o['name']}", what))
    if report.accuracy:
        rows += [("accuracy A", fmt_pct(report.accuracy["a"])), ("accuracy B", fmt_pct(report.accuracy["b"]))]
    lat = report.latency or {}
    figs = lat.get("variants", {})
    for key in report.latency_ms["a"]:
        rows.append((f"latency {key.replace('_', ' ')} (ms) A / B",
                     f"{fmt_figure(figs.get('float32', {}).get(key))} / {fmt_figure(figs.get('b', {}).get(key))}"))
    if report.speed_text:
        rows.append(("speed", report.speed_text))
    for name, r in (report.runtimes or {}).items():
        check = {True: "ok", False: "FAILED", None: "not exercised"}[r["passed"]]
        speeds = ", ".join(f"{fmt_num(s, 2)}x at {k.replace('_', ' ')}" for k, s in r["speedup"].items())
        rows.append((f"A on {name}", f"{r['speed']} ({speeds}); precision used {r['precision_used']}; "
                                     f"check {check}"))
    if lat:
        rows.append(("timing noise", f"A/A control {100 * lat['noise']:.1f}% apart"))
    console().print(kv_table(f"compare {report.a} vs {report.b}", rows))


@click.command("compare")
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@data_options
@click.option("--count", type=click.IntRange(min=1), help="Use at most this many samples.")
@click.option("--latency-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="The larger batch size at which latency is measured (besides 1).")
@click.option("--latency-budget", type=click.FloatRange(min=0, min_open=True), default=3.0,
              show_default=True, help="Seconds of in-process timing each model may cost.")
@click.option("--task", type=click.Choice(TASKS),
              help="What the outputs are (default: A's metadata); 'classification' judges the "
                   "first [batch, classes] output by top-1.")
@click.option("--max-disagreement", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Class/label outputs: the largest share of differing top-1 decisions accepted.")
@click.option("--min-cosine", type=click.FloatRange(0, 1, min_open=True), default=0.99, show_default=True,
              help="Other float outputs: the smallest per-sample cosine similarity accepted.")
@click.option("--runtimes", is_flag=True,
              help="Also measure A on OpenVINO (FP32, and BF16 on CPUs with BF16) in the same "
                   "measurement, when the openvino extra is installed.")
@ort_threads_option
@input_options
@report_options
@click.pass_context
def command(ctx, a, b, data, dims, count, latency_batch, latency_budget, task, max_disagreement,
            min_cosine, runtimes, ort_threads, batch_axes, int_ranges, as_json, report_path):
    """Compare two ONNX models on the same data: outputs, accuracy, in-process latency.

    A is the reference. Each output is judged by what it is (top-1 for class scores, cosine
    for embeddings); exits 1 when an output the data exercises differs beyond its bound.
    """
    opts = CompareOptions(data=data, dims=dims, count=count, latency_batch=latency_batch,
                          latency_budget_s=latency_budget, task=task, max_disagreement=max_disagreement,
                          min_cosine=min_cosine, threads=ort_threads, batch_axes=batch_axes,
                          int_ranges=int_ranges, runtimes=runtimes)
    report = compare_models(a, b, opts)
    emit(report, as_json=as_json, report_path=report_path, render=render)
    if report.passed is False:
        ctx.exit(1)
