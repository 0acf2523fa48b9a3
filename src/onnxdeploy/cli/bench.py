"""``onnxdeploy bench A.onnx B.onnx`` (or ``--url URL --url URL``)."""

from __future__ import annotations

import click

from ..errors import OptionError
from ..report.terminal import console, kv_table
from .common import data_options, emit, report_options

#: what the request bodies carried, in words (report.json has ``send``)
SEND_WORDS = {"texts": "one text a request (texts; the server tokenizes them)",
              "tokens": "one sample a request (token ids / tensors)"}


def cosine_words(q: dict) -> str:
    """An embedding target's quality in words: min and mean cosine to the reference, neighbours."""
    if q.get("min_cosine") is None:
        return "-"
    nn = q.get("nn_agreement")
    return (f"cosine to {q['reference']} in process: min {q['min_cosine']:.4f}, mean {q['mean_cosine']:.4f}"
            + (f", nearest neighbours {100 * nn:.1f}% agree" if nn is not None else "")
            + f" ({q['samples']} samples, bound {q['min_cosine_bound']:g})")


def _ints(value: str, what: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        items = []
    example = "8001,8002" if what == "--ports" else "1,8,32"
    if not items or any(i < 1 for i in items):
        raise OptionError(f"{what} {value!r}: expected comma-separated positive integers, e.g. {example}")
    if what == "--ports" and any(i > 65535 for i in items):
        raise OptionError(f"--ports {value}: ports must be 1-65535, got {max(items)}")
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


#: columns of the runs table: (header, priority); at narrow widths the highest priorities go first
_COLUMNS = (("target", 0), ("level", 0), ("req/s", 1), ("p99 ms", 1), ("errors", 2), ("p50 ms", 3),
            ("requests", 4), ("compute", 5), ("p90 ms", 6), ("max ms", 6))


def fit_table(title: str, columns: list[tuple[str, int]], rows: list[list[str]], width: int):
    """A rich table that fits ``width``: columns dropped by priority, never a word cut short."""
    from rich.markup import escape
    from rich.table import Table

    def need(i: int) -> int:  # the longest word of the column, plus cell padding and a border
        words = [w for text in [columns[i][0], *(r[i] for r in rows)] for w in text.split()]
        return max(len(w) for w in words) + 3

    keep = list(range(len(columns)))
    while sum(need(i) for i in keep) + 1 > width and len(keep) > 2:
        worst = max(keep, key=lambda i: (columns[i][1], i))
        keep.remove(worst)
    table = Table(title=title, title_justify="left")
    for i in keep:
        table.add_column(columns[i][0], justify="left" if i == 0 else "right", min_width=need(i) - 3)
    for row in rows:
        table.add_row(*(escape(row[i]) for i in keep))
    dropped = [columns[i][0] for i in range(len(columns)) if i not in keep]
    return table, dropped


def _span(s, d=2) -> str:
    return "-" if s["median"] is None else f"{s['median']:,.{d}f} ({s['min']:,.{d}f}–{s['max']:,.{d}f})"


def _runs_rows(report) -> list[list[str]]:
    rows = []
    for e in report.aggregated:
        lat = e["latency_ms"]
        share = e.get("compute_share")
        rows.append([
            e["target"], f"{e.get('rate', e['concurrency']):g}" + ("/s" if e["mode"] == "open" else ""),
            _span(e["rps"], 0) + (" gen-bound" if e["generator_bound"] else ""), _span(lat["p99"]),
            ", ".join(f"{k}={v}" for k, v in e["errors"].items()) or "0", _span(lat["p50"]), str(e["requests"]),
            "-" if share is None else f"{100 * share:.0f}%", _span(lat["p90"]),
            "-" if lat["max"]["median"] is None else f"{lat['max']['median']:.2f}"])
    return rows


def _capacity_rows(report) -> tuple[list[tuple[str, int]], list[list[str]]]:
    keys = [b["percentile"] for b in report.slo["bounds"]]
    cols = [("target", 0), ("capacity req/s", 0), *((f"{k} ms", 1) for k in keys), ("limited by", 2),
            ("runs", 3), ("valid", 3)]
    rows = []
    for name, c in report.capacity.items():
        rps = "-" if c["rps"] is None else ("≥ " if c["lower_bound"] else "") + f"{c['rps']:,.0f}"
        lat = c["latency_ms"] or {}
        rows.append([name, rps, *("-" if lat.get(k) is None else f"{lat[k]:.2f}" for k in keys),
                     str(c["limited_by"] or "-"), str(len(c["runs"])), "yes" if c["valid"] else "no"])
    return cols, rows


def render(report) -> None:
    """The bench on the terminal: the runs (or the capacity), the generator, accuracy, verdict."""
    out = console()
    width = out.width
    if report.mode == "slo":
        cols, rows = _capacity_rows(report)
        bounds = ", ".join(f"{b['percentile']} ≤ {b['ms']:g} ms" for b in report.slo["bounds"])
        table, _ = fit_table(f"capacity at {bounds} (±{100 * report.slo['precision']:.0f}%)", cols, rows, width)
        out.print(table)
    else:
        title = f"bench ({report.mode}-loop, {report.settings['repeats']} repeats: median (min–max))"
        table, dropped = fit_table(title, list(_COLUMNS), _runs_rows(report), width)
        out.print(table)
        if dropped:
            out.print(f"(narrow terminal: {', '.join(dropped)} left out; --json or --out has them)", highlight=False)
    gen = report.generator
    rows = [("generator", f"{gen['engine']}: ceiling {gen['ceiling_rps']:,.0f} req/s on {gen['ceiling_endpoint']}, "
             f"CPU {gen['cpu_percent'] or 0:.0f}%, {gen['bound_runs']} run(s) generator-bound"
             + (f", {gen['late_sends']} late sends" if gen.get("late_sends") is not None else ""))]
    for name, f in report.failures.items():
        if f["error_count"]:
            rows.append((f"errors {name}", ", ".join(f"{k}={v}" for k, v in f["errors"].items())
                         + (f"; first: {f['first_error']}" if f["first_error"] else "")))
    rows.append(("requests", SEND_WORDS.get(report.send, report.send)))
    for name, acc in report.accuracy.items():
        rows.append((f"accuracy {name}", "-" if acc is None else f"{100 * acc:.2f}%"))
    for name, q in report.quality.items():
        if q.get("kind") == "cosine":
            rows.append((f"quality {name}", cosine_words(q)))
    if report.wall_s is not None:
        rows.append(("wall time", f"{report.wall_s:.0f} s" + (
            f" (capacity search {report.search_s:.0f} s)" if report.search_s is not None else "")))
    if report.verdict:
        rows.append(("verdict", report.verdict["text"]))
    out.print(kv_table("summary", rows))


class _Progress:
    """Step lines and the per-second live line on stderr; on a terminal the live line is rewritten
    in place and cleared before the next step line."""

    def __init__(self):
        import sys

        self.err = sys.stderr
        self.tty = sys.stderr.isatty()
        self.pending = False

    def clear(self) -> None:
        """Take the live line away (before a step line or the report)."""
        if self.pending:
            self.err.write("\r\033[K")
            self.err.flush()
            self.pending = False

    def say(self, msg: str) -> None:
        self.clear()
        click.echo(f"· {msg}", err=True)

    def live(self, line: str) -> None:
        if not self.tty:
            click.echo(line, err=True)
            return
        self.err.write("\r\033[K" + line[:200])
        self.err.flush()
        self.pending = True


@click.command("bench")
@click.argument("models", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--url", "urls", multiple=True, metavar="URL", help="A running server to load instead of a model file (repeatable).")
@click.option("--name", "names", multiple=True, help="Target name (repeatable, in order); for --url, the served model's name.")
@click.option("--ports", default=None, help="Ports for the servers started from model files, e.g. 8001,8002 (default: free ports).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the started servers listen on.")
@click.option("--concurrency", default=None, help="Closed-loop levels: connections in flight (default 1,8,32).")
@click.option("--requests", "requests_", type=click.IntRange(min=1), help="Requests per run (default 2000).")
@click.option("--duration", type=click.FloatRange(min=0.1), help="Seconds per run, instead of --requests.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per target and level, alternating targets.")
@click.option("--rank-budget", type=click.FloatRange(min=0), default=20, show_default=True,
              help="Seconds of extra repeats when the repeats spread too wide to rank the targets (0: none); "
                   "still too wide after it, the speed is 'undecided' and the verdict rests on size and quality.")
@click.option("--rate", default=None, help="Open loop: offered requests/s (comma list); latency from the scheduled send time.")
@click.option("--arrivals", type=click.Choice(["poisson", "uniform"]), default="poisson", show_default=True,
              help="Open-loop schedule: Poisson arrivals or evenly spaced sends.")
@click.option("--slo", "slo", multiple=True, metavar="pNN=MS",
              help="Find each target's capacity within a latency bound, e.g. p99=20ms (repeatable; bounds hold jointly).")
@click.option("--slo-precision", type=click.FloatRange(0.01, 0.5), default=0.1, show_default=True,
              help="Bisect until the bracket is this narrow (a fraction of the rate).")
@click.option("--slo-budget", type=click.FloatRange(min=5), default=600, show_default=True,
              help="Seconds the whole capacity search may take.")
@click.option("--slo-start", type=click.FloatRange(min=0.1), help="First rate to try (default: half the warm-up's req/s).")
@click.option("--slo-max-rate", type=click.FloatRange(min=0.1), help="Never offer more than this rate.")
@click.option("--slo-min-duration", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Minimum seconds per probe run.")
@click.option("--slo-min-queries", type=click.IntRange(min=1),
              help="Minimum queries per probe run (default: 20 beyond the percentile: 2000 for p99).")
@click.option("--engine", type=click.Choice(["native", "locust", "wrk"]), default="native", show_default=True,
              help="Load generator: ours (asyncio, open and closed loop), Locust (child processes) or wrk.")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True,
              help="What the load speaks: HTTP (/predict) or gRPC (ModelInfer with raw contents; the "
                   "servers started get --grpc-port; closed loop, --engine native). A --url "
                   "grpc://HOST:PORT target is gRPC whatever this says.")
@click.option("--locust-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Locust worker processes on this machine (0: one standalone Locust process).")
@click.option("--locust-master", metavar="HOST:PORT",
              help="Run a Locust master bound here so workers on other machines can join.")
@click.option("--expect-workers", type=click.IntRange(min=1),
              help="Workers the Locust master waits for before starting (default: --locust-workers).")
@click.option("--csv", "csv_prefix", metavar="PREFIX",
              help="Write PREFIX_runs.csv, PREFIX_stats.csv and PREFIX_failures.csv.")
@click.option("--warmup", type=click.IntRange(min=0), default=200, show_default=True, help="Requests per target before measuring.")
@click.option("--workers", type=click.IntRange(min=1), help="Server worker processes (passed to serve).")
@click.option("--http-threads", "threads", type=click.IntRange(min=1),
              help="Request threads per server worker (serve's --http-threads).")
@click.option("--threads", "threads_deprecated", type=click.IntRange(min=1), hidden=True,
              help="Deprecated spelling of --http-threads.")
@click.option("--ort-threads", type=click.IntRange(min=1), help="ORT intra-op threads per worker (passed to serve).")
@click.option("--pin", is_flag=True, help="Pin the generator and the servers to different CPUs.")
@click.option("--no-accuracy", is_flag=True, help="Skip the quality pass through the API (accuracy, embedding cosine).")
@click.option("--send", type=click.Choice(["auto", "texts", "tokens"]), default="auto", show_default=True,
              help="What requests carry: texts (a model that carries a tokenizer, --data .txt/.jsonl; the "
                   "server tokenizes) or tokens (tensors); auto sends texts whenever it can.")
@click.option("--min-cosine", type=click.FloatRange(0, 1, min_open=True), default=0.99, show_default=True,
              help="Embedding models: B does not ship when its min cosine to A's in-process embeddings is below this.")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=60, show_default=True, help="Seconds to wait for a server to be ready.")
@click.option("--write-locustfile", type=click.Path(dir_okay=False), help="Also write a locustfile sending the same requests (for your own Locust cluster).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write report.json, report.md and plots here.")
@data_options
@report_options
def command(models, urls, names, ports, host, concurrency, requests_, duration, repeats, rank_budget, rate,
            arrivals, slo,
            slo_precision, slo_budget, slo_start, slo_max_rate, slo_min_duration, slo_min_queries, engine,
            protocol, locust_workers, locust_master, expect_workers, csv_prefix, warmup, workers, threads,
            threads_deprecated, ort_threads, pin,
            no_accuracy, send, min_cosine, ready_timeout, write_locustfile, out_dir, data, dims, as_json, report_path):
    """Load-test two served models side by side (latency, throughput, capacity at an SLO) and say which to ship."""
    from ..bench import BenchOptions, run_bench, write_outputs
    from ..bench.options import DEFAULT_CONCURRENCY

    if threads_deprecated is not None:
        click.echo("note: --threads is deprecated; use --http-threads (server request threads)", err=True)
        threads = threads if threads is not None else threads_deprecated
    from ..errors import BenchFailed

    if concurrency is not None and (rate or slo):
        raise OptionError(f"{'--rate' if rate else '--slo'} (open loop) and --concurrency (closed loop) "
                          "exclude each other; give one")
    opts = BenchOptions(
        models=list(models), urls=list(urls), names=list(names),
        ports=_ints(ports, "--ports") if ports else [], host=host,
        concurrency=_ints(concurrency, "--concurrency") if concurrency else list(DEFAULT_CONCURRENCY),
        requests=requests_, duration_s=duration, repeats=repeats, rate=_floats(rate), arrivals=arrivals,
        slo=list(slo), slo_precision=slo_precision, slo_budget_s=slo_budget, slo_start=slo_start,
        slo_max_rate=slo_max_rate, slo_min_duration_s=slo_min_duration, slo_min_queries=slo_min_queries,
        engine=engine, protocol=protocol, locust_workers=locust_workers, locust_master=locust_master, expect_workers=expect_workers,
        data=data, dims=dims, warmup=warmup, server_workers=workers, server_threads=threads,
        ort_threads=ort_threads, pin=pin, accuracy=not no_accuracy, ready_timeout_s=ready_timeout,
        send=send, min_cosine=min_cosine, rank_budget_s=rank_budget)
    opts.validate()  # every option checked before a server starts or a file is written
    shown = None if as_json else _Progress()
    failed = None
    try:
        report = run_bench(opts, progress=shown and shown.say, live=shown and shown.live)
    except BenchFailed as exc:
        if exc.report is None:
            raise
        report, failed = exc.report, exc
    except KeyboardInterrupt:
        if shown is not None:
            shown.clear()
        click.echo("interrupted: the servers bench started are stopped; nothing was written", err=True)
        raise SystemExit(130) from None
    if shown is not None:
        shown.clear()
    if csv_prefix:
        from ..bench.output import write_csv

        write_csv(report, csv_prefix)
    if write_locustfile:
        from ..bench.engines.locust import write_locustfile as write_lf

        target = report.targets[-1]
        write_lf(write_locustfile, list(target.requests.bodies), source=f"requests for {target.name}")
    if out_dir:
        write_outputs(report, out_dir)
    emit(report, as_json=as_json, report_path=report_path, render=render)
    if failed is not None:
        raise failed
