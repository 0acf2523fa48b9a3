"""``onnxdeploy quantize IN.onnx -o OUT.onnx``."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from ..judge.words import speed_words
from ..measure.numeric import TASKS
from ..quantize import QuantizeOptions, quantize_model
from ..quantize.options import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_COUNT,
    DEFAULT_LATENCY_BATCH,
    DEFAULT_LATENCY_BUDGET_S,
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_MIN_COSINE,
    DEFAULT_SEARCH_BUDGET_S,
    MODES,
    WEIGHT_TYPES,
    parse_op_types,
    parse_state,
)
from ..report.terminal import console, fmt_bytes, fmt_num, fmt_pct, kv_table
from .common import (
    data_options,
    emit,
    input_options,
    ort_threads_option,
    output_file,
    report_options,
)


def _fig(fig: dict | None) -> str:
    """``median (min–max)`` of one latency figure."""
    if not fig:
        return "-"
    return f"{fig['median_ms']:.3f} ({fig['min_ms']:.3f}–{fig['max_ms']:.3f})"


def _short(words: str) -> str:
    """"equal (within 6% noise)" -> "equal": the noise is printed once above the table."""
    return "equal" if words.startswith("equal") else words


def render(report) -> None:
    d = report.to_dict()
    cmp_ = d["comparison"]
    lat = d.get("latency") or {}
    margin = lat.get("margin", 0.0)
    verdict = {True: "ok", False: "FAILED", None: "not exercised by this data"}[cmp_["passed"]]
    rows = [
        ("mode", d["mode"] + (f" (chose {report.chosen})" if report.mode == "auto" else "")),
        ("output", d["output"] or "none written"),
        ("data", f"{d['data']} ({d['samples']} samples)"),
        ("size", f"{fmt_bytes(d['size_bytes']['before'])} -> {fmt_bytes(d['size_bytes']['after'])}"
                 f" ({fmt_num(d['size_ratio'], 2)}x smaller)"),
        ("max abs diff", fmt_num(cmp_["max_abs_diff"])),
        ("top-1 agreement", fmt_pct(cmp_["top1_agreement"])),
        ("min cosine to float", fmt_num(cmp_.get("min_cosine"), 4)),
        ("accuracy before / after", f"{fmt_pct(cmp_['accuracy_before'])} / {fmt_pct(cmp_['accuracy_after'])}"),
        (f"{cmp_['criterion'].replace('_', ' ')} (tolerance)",
         f"{fmt_num(cmp_['error'], 4)} ({cmp_['tolerance']}) {verdict}"),
    ]
    float_figs = (lat.get("variants") or {}).get("float32", {})
    chosen_figs = {}
    for c in report.candidates:
        if c.name == report.chosen:
            chosen_figs = c.latency
    for key, fig in float_figs.items():
        speed = d["speedup"].get(key)
        rows.append((f"latency {key.replace('_', ' ')} (ms)",
                     f"{_fig(fig)} -> {_fig(chosen_figs.get(key))}"
                     + ("" if speed is None else f": {speed_words(speed, margin)}")))
    if lat:
        rows.append(("timing noise", f"A/A control {100 * lat['noise']:.1f}% apart; differences within "
                                     f"{100 * margin:.0f}% are called equal"
                     + (" (too noisy to rank)" if lat.get("too_noisy") else "")))
    for note in d["preprocessing"]:
        rows.append(("prepared", escape(note)))
    out = console()
    out.print(kv_table(f"quantize {d['model']}", rows))
    if report.mode == "auto":
        # narrow enough for 80 columns: medians in the table, spreads above, reasons below
        table = Table(title="candidates: median ms per run, interleaved with float32", title_justify="left")
        keys = list(float_figs)
        table.add_column("candidate", no_wrap=True)
        table.add_column("size", justify="right", no_wrap=True)
        for k in keys:
            table.add_column(k.replace("batch_", "b="), justify="right", no_wrap=True)
        table.add_column("vs float32")
        table.add_column("ok", no_wrap=True)
        table.add_row("float32", fmt_bytes(d["size_bytes"]["before"]),
                      *(f"{float_figs[k]['median_ms']:.3f}" for k in keys), "reference", "-")
        for c in report.candidates:
            speed = "; ".join(f"{k.replace('batch_', 'b=')} {_short(speed_words(v, margin))}"
                              for k, v in c.speedup.items()) or "-"
            table.add_row(c.name, fmt_bytes(c.size_bytes),
                          *(f"{c.latency[k]['median_ms']:.3f}" if k in c.latency else "-" for k in keys),
                          speed, "yes" if c.admissible else "no")
        out.print(table)
        for c in report.candidates:
            out.print(f"  {escape(c.name)}: {escape(c.reason)}")
        if report.fallback is not None:
            tries = "; ".join(f"{t['kept_float']} float: "
                              + ("ok" if t["admissible"] else (t["failures"] or ["failed"])[0])
                              for t in report.fallback["tries"])
            out.print(f"partial int8 from {escape(report.fallback['base'])}: tries {escape(tries)}")
            if report.fallback["summary"]:
                out.print(f"  {escape(report.fallback['summary'])}")
        out.print(escape(report.reason))
    for warning in d["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}")


@click.command("quantize")
@click.argument("src", metavar="IN.onnx", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(), callback=output_file,
              help="Where to write the int8 model.")
@click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True,
              help="auto: measure dynamic and static candidates, keep the fastest admissible one "
                   "(the float model when every int8 one is slower); dynamic: int8 weights, "
                   "activations quantized at run time; static: calibrated QDQ.")
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
@click.option("--latency-budget", "latency_budget", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_LATENCY_BUDGET_S, show_default=True,
              help="Seconds of in-process timing each variant may cost (rounds and runs scale to it).")
@click.option("--rounds", type=click.IntRange(min=1), hidden=True,
              help="Deprecated: latency rounds now follow --latency-budget.")
@click.option("--min-cosine", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_MIN_COSINE,
              show_default=True, help="Outputs that are not class scores (embeddings, maps): the "
                                      "smallest per-sample cosine similarity to float accepted.")
@click.option("--task", type=click.Choice(TASKS),
              help="What the model's outputs are (default: its metadata); 'classification' judges "
                   "the first [batch, classes] output by top-1.")
@click.option("--no-fallback", "no_fallback", is_flag=True,
              help="auto: when no full-int8 candidate keeps quality, do not search for the MatMuls "
                   "to keep float (mixed precision).")
@click.option("--no-outlier-split", "no_outlier_split", is_flag=True,
              help="auto: do not try per-channel int8 with the outlier channels of MatMul inputs "
                   "computed in float.")
@click.option("--max-float-matmuls", type=click.IntRange(min=1),
              help="auto: the most nodes (a Conv with its Relu counts once) the partial-int8 search "
                   "may keep float (default: half of them).")
@click.option("--state", "state", multiple=True, metavar="IN:OUT",
              help="A state input and the output that carries it to the next step (repeatable); "
                   "judged over chained steps. Default: paired by name and shape (state->stateN, "
                   "h0->hn, c0->cn).")
@click.option("--search-budget", "search_budget", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_SEARCH_BUDGET_S, show_default=True,
              help="auto: seconds the partial-int8 search (calibration grid and tries) may spend.")
@click.option("--runtimes/--no-runtimes", default=True, show_default=True,
              help="auto: also try OpenVINO int8 through NNCF when the openvino extra is installed.")
@ort_threads_option
@input_options
@report_options
@click.pass_context
def command(ctx, src, out, mode, weight_type, per_channel, reduce_range, op_types, data, dims, count,
            calibration_method, calibration_count, max_accuracy_drop, allow_slower, latency_batch,
            latency_budget, rounds, min_cosine, task, no_fallback, no_outlier_split, max_float_matmuls, state, search_budget, runtimes, ort_threads,
            batch_axes, int_ranges, as_json, report_path):
    """Quantize an ONNX model to int8 and report size, accuracy and speed against the float model."""
    opts = QuantizeOptions(
        mode=mode, weight_type=weight_type, per_channel=per_channel, reduce_range=reduce_range,
        op_types=parse_op_types(op_types), data=data, dims=dims, count=count,
        calibration_method=calibration_method, calibration_count=calibration_count,
        max_accuracy_drop=max_accuracy_drop, allow_slower=allow_slower, latency_batch=latency_batch,
        latency_budget_s=latency_budget, min_cosine=min_cosine, task=task, threads=ort_threads,
        batch_axes=batch_axes, int_ranges=int_ranges, fallback=not no_fallback,
        split_outliers=not no_outlier_split, max_float_matmuls=max_float_matmuls,
        state=parse_state(state), search_budget_s=search_budget, runtimes=runtimes,
    )
    if rounds is not None:
        click.echo("note: --rounds is deprecated and has no effect; timing follows --latency-budget",
                   err=True)
    report = quantize_model(src, out, opts)
    emit(report, as_json=as_json, report_path=report_path, render=render)
    if not report.passed:
        ctx.exit(1)
