"""``onnxdeploy compare A.onnx B.onnx``."""

from __future__ import annotations

import click

from ..compare import CompareOptions, compare_models
from ..report.terminal import console, fmt_num, fmt_pct, kv_table
from .common import data_options, emit, report_options


def render(report) -> None:
    rows = [
        ("data", f"{report.data} ({report.samples} samples)"),
        ("max abs diff", fmt_num(report.max_abs_diff)),
        ("mean abs diff", fmt_num(report.mean_abs_diff)),
        ("cosine similarity", fmt_num(report.cosine_similarity, 6)),
        ("top-1 agreement", fmt_pct(report.top1_agreement)),
    ]
    if report.accuracy:
        rows += [("accuracy A", fmt_pct(report.accuracy["a"])), ("accuracy B", fmt_pct(report.accuracy["b"]))]
    for key in report.latency_ms["a"]:
        rows.append((f"latency {key.replace('_', ' ')} (ms) A / B",
                     f"{report.latency_ms['a'][key]:.3f} / {report.latency_ms['b'][key]:.3f}"))
    console().print(kv_table(f"compare {report.a} vs {report.b}", rows))


@click.command("compare")
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@data_options
@click.option("--count", type=click.IntRange(min=1), help="Use at most this many samples.")
@click.option("--latency-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="The larger batch size at which latency is measured (besides 1).")
@click.option("--threads", type=click.IntRange(min=1), help="ORT intra-op threads (default: CPUs available).")
@report_options
def command(a, b, data, dims, count, latency_batch, threads, as_json, report_path):
    """Compare two ONNX models on the same data: outputs, accuracy, in-process latency."""
    opts = CompareOptions(data=data, dims=dims, count=count, latency_batch=latency_batch, threads=threads)
    report = compare_models(a, b, opts)
    emit(report, as_json=as_json, report_path=report_path, render=render)
