"""``onnxdeploy export MODEL -o OUT.onnx``."""

from __future__ import annotations

import click

from ..export import (
    DEFAULT_EXPORTER,
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    EXPORTERS,
    ExportOptions,
    export_model,
)
from ..report.terminal import console, fmt_bytes, fmt_num, fmt_pct, kv_table
from ..sources.hf import TASKS
from .common import emit, output_file, report_options


def _shape(spec: dict) -> str:
    dims = ", ".join(str(d) for d in spec["shape"] or ["?"])
    return f"{spec['name']}: [{dims}] {spec['dtype']}"


def _short(value: str, limit: int = 80) -> str:
    """A metadata value on one line (the tokenizer is a whole tokenizer.json)."""
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value):,} chars)"


def render(report) -> None:
    parity = report.parity
    # kv_table escapes every value itself: plain text here, no markup
    verdict = "passed" if parity.passed else "FAILED"
    rows = [
        ("model", f"{report.model} ({report.kind})"),
        ("exporter / opset", f"{report.exporter} / {report.opset}"),
        ("inputs", "\n".join(_shape(s) for s in report.inputs)),
        ("outputs", "\n".join(_shape(s) for s in report.outputs)),
        ("dynamic axes", ", ".join(report.dynamic_axes)),
        ("size", f"{fmt_bytes(report.size_bytes)} ({report.size_bytes:,} bytes)"),
        ("parity", f"{verdict}: max abs diff {fmt_num(parity.max_abs_diff)} "
                   f"(tolerance {fmt_num(parity.tolerance)}) on {parity.data} data, "
                   f"batch sizes {', '.join(map(str, parity.batch_sizes))}"),
    ]
    if report.accuracy:
        rows.append(("test accuracy", f"torch {fmt_pct(report.accuracy['torch'])}, "
                                      f"onnx {fmt_pct(report.accuracy['onnx'])}"))
    if report.training:
        how = "cached weights" if report.training["cached"] else f"trained in {report.training['train_seconds']:.1f} s"
        rows.append(("weights", f"{how}: {report.training['weights_path']}"))
    if report.text:
        t = report.text
        pooling = (f", pooling {'+'.join(t['pooling'])}" + (" + L2 normalize" if t["normalize"] else "")
                   if t.get("pooling") else "")
        agree = {True: "agrees", False: "DISAGREES", None: "unchecked"}[parity.tokenizer_agrees]
        rows.append(("text", f"{t['task']} ({t['model_type']}){pooling}; max length "
                             f"{t['max_length']} tokens; carried tokenizer {agree}"))
    if report.checkpoint:
        rows.append(("checkpoint", report.checkpoint))
    if report.metadata:
        rows.append(("metadata", "\n".join(f"{k} = {_short(v)}" for k, v in report.metadata.items())))
    rows.append(("time", f"{report.seconds['total']:.2f} s"))
    console().print(kv_table(f"export -> {report.onnx_path}", rows))


@click.command("export")
@click.argument("model")
@click.option("-o", "--output", "out", type=click.Path(), callback=output_file,
              help="Output .onnx path (its directory must exist).")
@click.option("--out", "out_deprecated", type=click.Path(), callback=output_file, hidden=True,
              help="Deprecated spelling of -o/--output (--out names a directory elsewhere).")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="A state_dict to load into the model (torch.load with weights_only=True).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="1,1,8,8",
              help="Example input shape, batch axis first; once per forward argument. "
                   "Required for user models unless their module sets INPUT_SHAPE.")
@click.option("--input-spec", "input_specs", multiple=True, metavar="NAME:DIMS[:DTYPE]",
              help="A forward argument, once per argument in order: dims are integers (fixed) or "
                   "names (dynamic, shared by name), e.g. input_ids:batch,seq:int64; DTYPE "
                   "float32 (default), float16, float64, int64, int32, int16, int8, uint8, bool.")
@click.option("--example-inputs", type=click.Path(dir_okay=False, exists=True),
              help="An .npz of example forward arguments named after them (batch axis first); "
                   "parity resamples its rows.")
@click.option("--int-range", "int_ranges", multiple=True, metavar="[NAME=]LOW:HIGH",
              help="Integers drawn for parity lie in [LOW, HIGH); default: below the size of the "
                   "nn.Embedding an input feeds, else [0, 10).")
@click.option("--task", type=click.Choice(TASKS),
              help="For a Hugging Face directory: the graph's output (default: sentence-embedding "
                   "for a sentence-transformers dir, text-classification for a "
                   "*ForSequenceClassification config, else feature-extraction).")
@click.option("--dynamic-axis", "dynamic_axes", multiple=True, metavar="INPUT:AXIS:NAME",
              help="Make another axis dynamic, e.g. x:2:height (repeatable). Axis 0 always is.")
@click.option("--opset", type=click.IntRange(min=7), default=DEFAULT_OPSET, show_default=True,
              help="ONNX opset (the dynamo exporter needs 18 or more).")
@click.option("--exporter", type=click.Choice(EXPORTERS), default=DEFAULT_EXPORTER, show_default=True,
              help="torch.onnx exporter.")
@click.option("--tolerance", type=float, default=DEFAULT_TOLERANCE, show_default=True,
              help="Largest allowed |onnx - torch| in the parity check.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Built-in weights cache (default: $ONNXDEPLOY_CACHE, else ~/.cache/onnxdeploy).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Training seed of built-ins and seed of random parity inputs.")
@report_options
@click.pass_context
def command(ctx, model, out, out_deprecated, checkpoint, input_shapes, input_specs, example_inputs, int_ranges, task,
            dynamic_axes, opset, exporter, tolerance, cache_dir, seed, as_json, report_path):
    """Export MODEL to ONNX with a dynamic batch axis and check parity against PyTorch.

    MODEL is a built-in name (see `onnxdeploy zoo`), path/to/file.py:fn or package.module:fn
    (a factory returning an nn.Module), or a local Hugging Face directory (config.json, weights,
    tokenizer; a sentence-transformers layout too), read offline; its tokenizer is stored in
    the .onnx. Exits 1 when parity fails (the file is kept).
    """
    if out_deprecated is not None:
        click.echo("note: --out is deprecated for export; use -o/--output FILE (--out names a "
                   "directory in the other commands)", err=True)
        out = out or out_deprecated
    if out is None:
        raise click.UsageError("missing option '-o' / '--output' (the .onnx file to write)")
    opts = ExportOptions(
        checkpoint=checkpoint, input_shape=list(input_shapes) or None,
        input_specs=list(input_specs), example_inputs=example_inputs, int_ranges=list(int_ranges),
        task=task,
        dynamic_axes=list(dynamic_axes), opset=opset, exporter=exporter, tolerance=tolerance,
        cache_dir=cache_dir, seed=seed, progress=True,
    )
    report = export_model(model, out, opts)
    emit(report, as_json=as_json, report_path=report_path, render=render)
    if not report.parity.passed:
        click.echo(
            f"parity failed: max abs diff {report.parity.max_abs_diff:.3g} > tolerance "
            f"{report.parity.tolerance:g}; the file was kept for inspection: {report.onnx_path}",
            err=True,
        )
        ctx.exit(1)
