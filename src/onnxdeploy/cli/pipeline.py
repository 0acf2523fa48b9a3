"""``onnxdeploy pipeline [MODEL] --out DIR``: every step on one model, one report."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from ..pipeline import (
    STEP_TITLES,
    PipelineError,
    PipelineOptions,
    options_from_config,
    run_pipeline,
)
from ..report.fmt import fmt_quality
from ..report.jsonio import dumps
from ..report.terminal import console, fmt_bytes


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        items = []
    if not items or any(v <= 0 for v in items):
        raise click.BadParameter(f"{value!r}: expected positive integers separated by commas, e.g. 1,8,32")
    return items


def _lat(row: dict, key: str = "batch_1", *, spread: bool = True) -> str:
    fig = (row.get("latency") or {}).get(key)
    if not fig:
        return "-"
    if not spread:
        return f"{fig['median_ms']:.3f}"
    return f"{fig['median_ms']:.3f} ({fig['min_ms']:.3f}–{fig['max_ms']:.3f})"


#: below this width the summary drops the spreads and the recipe name (printed under it instead)
WIDE = 120


def summary_table(report, width: int | None = None) -> Table:
    """The final table: one row per variant with size, accuracy, latency and HTTP figures."""
    wide = (width or console().width) >= WIDE
    conc = next((v.get("concurrency") for v in report.rows if v.get("concurrency")), None)
    table = Table(title=f"onnxdeploy pipeline: {report.model}", title_justify="left")
    for col in ("variant", "size", "quality", "latency b=1 ms" if wide else "b=1 ms", "speed b=1",
                (f"req/s c={conc}" if conc else "req/s") if wide else "req/s", "p99 ms"):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=col != "speed b=1")

    def ms(x):
        return "-" if x is None else f"{x:.3f}" if wide else f"{x:.1f}"

    for v in report.rows:
        speed = "-" if v["name"] == "float32" else (v.get("speed") or {}).get("batch_1", "-")
        if not wide and speed.startswith("equal"):
            speed = "equal"
        table.add_row(
            v["variant"] if wide else v["name"], fmt_bytes(v.get("size_bytes")), fmt_quality(v),
            _lat(v, spread=wide), speed,
            "-" if v.get("rps") is None else f"{v['rps']:.0f}", ms(v.get("p99_ms")),
        )
    if not wide:
        chosen = next((v["variant"] for v in report.rows if v["name"] == "int8"), None)
        if chosen:
            table.caption = f"int8 is {chosen}; spreads are in report.md"
    return table


@click.command("pipeline")
@click.argument("model", required=False)
@click.option("--out", "out", type=click.Path(file_okay=False), help="Output directory [default: pipeline-out].")
@click.option("--config", "config", type=click.Path(dir_okay=False),
              help="Replay a run from a YAML or TOML file of options (command-line values win).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights for a user factory (weights_only).")
@click.option("--input-shape", callback=_int_list, help="Input shape for a user factory, e.g. 1,3,32,32.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where trained built-in weights are cached.")
@click.option("--data", metavar="SOURCE",
              help="digits (default for the built-ins), random, a .npz file, or texts (.txt one a "
                   "line, .jsonl with text and label) for a Hugging Face directory.")
@click.option("--task", type=click.Choice(["feature-extraction", "sentence-embedding", "text-classification"]),
              help="What a Hugging Face directory is exported as [default: from the directory].")
@click.option("--full", is_flag=True, default=None, help="A longer bench: concurrency 1,8,32, more requests, 3 repeats.")
@click.option("--concurrency", callback=_int_list, help="Bench concurrency levels, e.g. 1,8,32.")
@click.option("--requests", type=click.IntRange(min=1), help="Requests per bench run.")
@click.option("--duration", type=click.FloatRange(min=0.1), help="Seconds per bench run (instead of --requests).")
@click.option("--repeats", type=click.IntRange(min=1), help="Bench repeats (A/B alternated).")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 1, max_open=True),
              help="Largest accepted accuracy drop of int8 (or top-1 disagreement without labels), "
                   "as a fraction [default: 0.01].")
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline report as JSON on stdout.")
def command(model, out, config, as_json, **values):
    """Run every step on one model (default digits-cnn) and write one report.

    Export with parity, dynamic and auto int8 quantization, graph optimization, comparison,
    then serve float32 and int8 on two ports and load-test them. Artifacts and report.json,
    report.md, report.html land in --out.
    """
    overrides = {"model": model, "out": out, **values}
    if config:
        options = options_from_config(config, overrides)
    else:
        options = PipelineOptions(**{k: v for k, v in overrides.items() if v is not None})
    out_console = console(stderr=as_json)

    status = None  # a transient spinner line for the bench step's own progress, terminals only

    def progress(event, step, info):
        nonlocal status
        title = STEP_TITLES[step]
        if event == "start":
            out_console.print(f"[bold]▶ {title}[/bold] …")
        elif event == "detail":
            if status is None and out_console.is_terminal:
                status = out_console.status("")
                status.start()
            if status is not None:
                status.update(escape(f"{title}: {info['message']}"))
            return
        if status is not None:
            status.stop()
            status = None
        if event == "done":
            out_console.print(f"[green]✓[/green] {title} [dim]({info['seconds']:.1f} s)[/dim] {escape(info['summary'])}")
        elif event == "fail":
            out_console.print(f"[red]✗ {title}[/red] [dim]({info['seconds']:.1f} s)[/dim]")

    try:
        report = run_pipeline(options, progress)
    except PipelineError as exc:
        click.echo(f"PipelineError: {exc}", err=True)
        click.echo(f"Artifacts of the earlier steps are kept in {options.out}.", err=True)
        raise click.exceptions.Exit(exc.exit_code) from exc
    if as_json:
        click.echo(dumps(report), nl=False)
        return
    out_console.print(summary_table(report))
    if report.latency:
        out_console.print(f"Timing noise (A/A control): {100 * report.latency['noise']:.1f}%")
    if report.verdict:
        out_console.print(f"[bold]Verdict:[/bold] {escape(report.verdict['text'])}")
    out_console.print(
        f"Finished in {report.total_seconds:.0f} s. Open {report.artifacts.get('report.html')} "
        f"(also report.md, report.json, config.yaml in {options.out})."
    )
