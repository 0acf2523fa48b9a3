"""``onnxdeploy bench A.onnx B.onnx`` (or ``--url URL --url URL``)."""

from __future__ import annotations

import click

from ..errors import OptionError
from ..report.terminal import console, kv_table
from .common import data_options, emit, report_options


def _ints(value: str, what: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        items = []
    if not items or any(i < 1 for i in items):
        raise OptionError(f"{what} {value!r}: expected comma-separated positive integers, e.g. 1,8,32")
    return items


def _floats(value: str | None) -> list[float]:
    if not value:
        return []
    try:
        items = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        items = []
    if not items or any(r <= 0 for r in items):
        raise OptionError(f"--rate {value!r}: expected positive requests/s, e.g. 200 or 100,400")
    return items


def render(report) -> None:
    from rich.table import Table

    out = console()
    level = "rate/s" if report.mode == "open" else "conc."
    table = Table(title=f"bench ({report.mode}-loop, {report.settings['repeats']} repeats: median (min–max))",
                  title_justify="left")
    for col in ("target", level, "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "compute"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for e in report.aggregated:
        lat = e["latency_ms"]

        def r(s, d=2):
            return "-" if s["median"] is None else f"{s['median']:,.{d}f} ({s['min']:,.{d}f}–{s['max']:,.{d}f})"

        share = e.get("compute_share")
        table.add_row(
            e["target"], f"{e.get('rate', e['concurrency']):g}", str(e["requests"]),
            ", ".join(f"{k}={v}" for k, v in e["errors"].items()) or "0",
            r(e["rps"], 0) + (" [gen-bound]" if e["generator_bound"] else ""),
            r(lat["p50"]), r(lat["p90"]), r(lat["p99"]),
            "-" if lat["max"]["median"] is None else f"{lat['max']['median']:.2f}",
            "-" if share is None else f"{100 * share:.0f}%")
    out.print(table)
    gen = report.generator
    rows = [("generator", f"{gen['engine']}: ceiling {gen['ceiling_rps']:,.0f} req/s on {gen['ceiling_endpoint']}, "
             f"CPU {gen['cpu_percent'] or 0:.0f}%, {gen['bound_runs']} run(s) generator-bound")]
    for name, acc in report.accuracy.items():
        rows.append((f"accuracy {name}", "-" if acc is None else f"{100 * acc:.2f}%"))
    if report.verdict:
        rows.append(("verdict", report.verdict["text"]))
    out.print(kv_table("summary", rows))


@click.command("bench")
@click.argument("models", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--url", "urls", multiple=True, metavar="URL", help="A running server to load instead of a model file (repeatable).")
@click.option("--name", "names", multiple=True, help="Target name (repeatable, in order); for --url, the served model's name.")
@click.option("--ports", default=None, help="Ports for the servers started from model files, e.g. 8001,8002 (default: free ports).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the started servers listen on.")
@click.option("--concurrency", default="1,8,32", show_default=True, help="Closed-loop levels: connections in flight.")
@click.option("--requests", "requests_", type=click.IntRange(min=1), help="Requests per run (default 2000).")
@click.option("--duration", type=click.FloatRange(min=0.1), help="Seconds per run, instead of --requests.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per target and level, alternating targets.")
@click.option("--rate", default=None, help="Open loop: requests/s on a fixed schedule (comma list), latency from the scheduled time.")
@click.option("--engine", type=click.Choice(["native", "locust", "wrk"]), default="native", show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=200, show_default=True, help="Requests per target before measuring.")
@click.option("--workers", type=click.IntRange(min=1), help="Server worker processes (passed to serve).")
@click.option("--threads", type=click.IntRange(min=1), help="Server threads per worker (passed to serve).")
@click.option("--ort-threads", type=click.IntRange(min=1), help="ORT intra-op threads per worker (passed to serve).")
@click.option("--pin", is_flag=True, help="Pin the generator and the servers to different CPUs.")
@click.option("--no-accuracy", is_flag=True, help="Skip the accuracy pass through the API.")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=60, show_default=True, help="Seconds to wait for a server to be ready.")
@click.option("--write-locustfile", type=click.Path(dir_okay=False), help="Also write a locustfile sending the same requests (for your own Locust cluster).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write report.json, report.md and plots here.")
@data_options
@report_options
def command(models, urls, names, ports, host, concurrency, requests_, duration, repeats, rate, engine, warmup,
            workers, threads, ort_threads, pin, no_accuracy, ready_timeout, write_locustfile, out_dir,
            data, dims, as_json, report_path):
    """Load-test two served models side by side (latency, throughput, accuracy) and give a verdict."""
    from ..bench import BenchOptions, run_bench, write_outputs

    opts = BenchOptions(
        models=list(models), urls=list(urls), names=list(names),
        ports=_ints(ports, "--ports") if ports else [], host=host,
        concurrency=_ints(concurrency, "--concurrency"), requests=requests_, duration_s=duration,
        repeats=repeats, rate=_floats(rate), engine=engine, data=data, dims=dims, warmup=warmup,
        server_workers=workers, server_threads=threads, ort_threads=ort_threads, pin=pin,
        accuracy=not no_accuracy, ready_timeout_s=ready_timeout)
    progress = None if as_json else (lambda msg: click.echo(f"· {msg}", err=True))
    report = run_bench(opts, progress=progress)
    if write_locustfile:
        from ..bench.engines.locust import write_locustfile as write_lf

        target = report.targets[-1]
        write_lf(write_locustfile, list(target.requests.bodies), source=f"requests for {target.name}")
    if out_dir:
        write_outputs(report, out_dir)
    emit(report, as_json=as_json, report_path=report_path, render=render)
