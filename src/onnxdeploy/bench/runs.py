"""The runs of a bench: warm-up, one measured run, repeated fixed runs, the capacity search's
probes, failure accounting and the per-second progress line."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BenchFailed
from .httpclient import request
from .scrape import scrape, server_split
from .slo import CapacitySearch, SearchSettings, judge
from .stats import RunResult
from .targets import Target

if TYPE_CHECKING:
    from .options import BenchOptions

#: requests per fixed run when neither --requests nor --duration is given
DEFAULT_REQUESTS = 2000


def first_error_text(target: Target) -> str | None:
    """The answer to one request, when an engine counted errors but kept no text (wrk, Locust)."""
    if target.url.startswith("grpc://"):
        return None
    try:
        status, body = request(target.url, "POST", target.requests.path, target.requests.bodies[0], timeout=10)
    except OSError as exc:
        return f"connection failed: {exc}"
    return f"HTTP {status}: {body[:300].decode(errors='replace').strip()}" if status >= 400 else None


def describe(run: RunResult) -> str:
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(run.errors.items())) or "no answers"
    text = f"{run.error_count} of {run.requests + run.error_count} requests failed ({kinds})"
    return text + (f"; first error: {run.first_error}" if run.first_error else "")


def fill_first_error(run: RunResult, target: Target) -> None:
    if run.error_count and not run.first_error:
        run.first_error = first_error_text(target)


def eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Live:
    """Formats the per-second progress of a run: where it is, its rate, p99 so far, the ETA."""

    def __init__(self, sink: Callable[[str], None] | None):
        self.sink = sink
        self.label = ""
        self.eta_after_run: float | None = None  # seconds of bench left after this run
        self.run_s: float | None = None

    def tick(self, info: dict) -> None:
        if self.sink is None:
            return
        p99 = "-" if info["p99_ms"] is None else f"{info['p99_ms']:.2f} ms"
        left_run = None if self.run_s is None else max(0.0, self.run_s - info["elapsed_s"])
        eta = None if left_run is None or self.eta_after_run is None else left_run + self.eta_after_run
        self.sink(f"{self.label}: {info['elapsed_s']:.0f}s, {info['rps']:,.0f} req/s, p99 so far {p99}, "
                  f"{info['errors']} errors, ETA {eta(eta)}")


def warm_up(options: BenchOptions, engine, targets: list[Target], say, concurrency: int) -> dict[str, float]:
    """Warm every target up; BenchFailed if a warm-up had more than 1% errors. Returns its req/s."""
    rates: dict[str, float] = {}
    for target in targets:
        if not options.warmup:
            continue
        say(f"warming up {target.name} ({options.warmup} requests)")
        run = engine.run(target, concurrency=concurrency, total=options.warmup)
        fill_first_error(run, target)
        if run.failed:
            raise BenchFailed(f"warm-up of {target.name} failed: {describe(run)}")
        rates[target.name] = run.rps
    return rates


def one_run(engine, target: Target, *, level: float, open_loop: bool, top_c: int, total, duration_s,
             options: BenchOptions, live: Live, stop=None, seed: int = 0) -> RunResult:
    before = scrape(target.url)
    kwargs = {}
    if options.engine == "native":
        kwargs = {"arrivals": options.arrivals, "stop": stop, "on_tick": live.tick, "seed": seed}
    run = engine.run(target, concurrency=int(level) if not open_loop else min(top_c, 64),
                     total=total, duration_s=duration_s, rate=level if open_loop else None, **kwargs)
    after = scrape(target.url)
    mean_ms = (float(np.mean(run.latencies_us)) / 1000.0
               if run.latencies_us is not None and run.latencies_us.size else run.latency_ms.get("p50"))
    run.server = server_split(before, after, mean_ms)
    fill_first_error(run, target)
    return run


def fixed_runs(options, engine, targets, say, live: Live, top_c: int) -> list[RunResult]:
    """Repeated runs at each level, alternating the targets' order so drift hits both."""
    open_loop = bool(options.rate)
    levels: list[float] = list(options.rate) if open_loop else [float(c) for c in options.concurrency]
    total = requests_per_run(options)
    runs: list[RunResult] = []
    n_runs = options.repeats * len(levels) * len(targets)
    for repeat in range(options.repeats):
        for level in levels:
            order = targets if repeat % 2 == 0 else targets[::-1]
            for target in order:
                what = f"rate {level:g}/s" if open_loop else f"c={int(level)}"
                say(f"repeat {repeat + 1}/{options.repeats} {target.name} {what}")
                live.label = f"  {target.name} {what}"
                done = len(runs)
                per_run = (options.duration_s or (float(np.mean([r.elapsed_s for r in runs])) if runs else None))
                if per_run is None and open_loop and total:
                    per_run = total / level
                live.run_s = per_run
                live.eta_after_run = None if per_run is None else per_run * (n_runs - done - 1)
                run = one_run(engine, target, level=level, open_loop=open_loop, top_c=top_c, total=total,
                              duration_s=options.duration_s, options=options, live=live, seed=len(runs))
                run.repeat = repeat
                runs.append(run)
    return runs


def repeat_while_undecided(options, engine, targets, say, live: Live, top_c: int,
                           runs: list[RunResult]) -> list[RunResult]:
    """More repeats at the top level while the judge cannot rank the targets, within a time budget.

    The judge calls a comparison undecided when a target's repeats spread past its cap
    (``judge/http.py``); a few more repeats often settle a spread that one slow moment caused.
    Stops when every comparison is decided, when the next round would end past
    ``options.rank_budget_s``, or after three times the planned repeats.
    """
    from ..judge import http as judge_http

    if len(targets) < 2 or options.rank_budget_s <= 0 or any(r.failed for r in runs):
        return runs  # failing runs decide nothing: bench fails on them, more repeats would not help
    open_loop = bool(options.rate)
    level = max(options.rate) if open_loop else float(max(options.concurrency))
    total = requests_per_run(options)
    t0 = time.monotonic()
    repeat = options.repeats
    while repeat < 3 * options.repeats:
        def values(name: str) -> list[float]:
            mine = [r for r in runs if r.target == name and r.level == level]
            return [r.latency_ms.get("p99") for r in mine] if open_loop else [r.rps for r in mine]

        base = values(targets[0].name)
        # only a spread too wide to rank earns more repeats; too few repeats is what was asked for
        undecided = [t for t in targets[1:]
                     if (s := judge_http.compare(base, values(t.name), higher_is_better=not open_loop)).word
                     == judge_http.UNDECIDED and s.repeats >= judge_http.MIN_REPEATS]
        if not undecided:
            break
        mine = [r.elapsed_s for r in runs if r.level == level]
        per_round = (float(np.mean(mine)) if mine else 1.0) * len(targets)
        if time.monotonic() - t0 + per_round > options.rank_budget_s:
            say(f"speed still undecided after {repeat} repeats; the {options.rank_budget_s:g} s budget "
                "for extra repeats is spent")
            break
        say(f"speed undecided (repeats spread too wide): extra repeat {repeat + 1}")
        order = targets if repeat % 2 == 0 else targets[::-1]
        for target in order:
            live.label = f"  {target.name} extra repeat {repeat + 1}"
            run = one_run(engine, target, level=level, open_loop=open_loop, top_c=top_c, total=total,
                          duration_s=options.duration_s, options=options, live=live, seed=len(runs))
            run.repeat = repeat
            runs.append(run)
        repeat += 1
    return runs


def search(options, engine, targets, say, live: Live, start: dict[str, float], ceiling: float
           ) -> tuple[list[RunResult], dict[str, CapacitySearch], SearchSettings]:
    """The capacity search of every target, one probe each in turn (alternating order)."""
    settings = options.search_settings()
    gen_limit = options.bound_fraction * ceiling if ceiling else None
    searches = {t.name: CapacitySearch(t.name, settings,
                                       settings.start_rate or max(1.0, round(start.get(t.name, 20.0) / 2)),
                                       generator_limit=gen_limit) for t in targets}
    runs: list[RunResult] = []
    t0 = time.monotonic()
    step = 0
    while True:
        pending = [t for t in (targets if step % 2 == 0 else targets[::-1]) if not searches[t.name].done]
        if not pending:
            break
        step += 1
        for target in pending:
            hunt = searches[target.name]
            rate = hunt.next_rate()
            if rate is None:
                continue
            elapsed = time.monotonic() - t0
            if elapsed + settings.seconds(rate) > settings.budget_s:
                hunt.stop("time_budget", f"the {settings.budget_s:g} s budget ran out before {rate:g} req/s "
                            f"could be run ({elapsed:.0f} s used)")
                continue
            total = settings.queries(rate)
            say(f"{target.name}: rate {rate:g}/s, {total} queries ({settings.seconds(rate):.1f} s)")
            live.label = f"  {target.name} rate {rate:g}/s"
            live.run_s = settings.seconds(rate)
            left = sum(s.remaining_probes() * settings.seconds(s.lo or rate) for s in searches.values())
            live.eta_after_run = min(max(0.0, settings.budget_s - elapsed - live.run_s), left)
            run = one_run(engine, target, level=rate, open_loop=True, top_c=8, total=total, duration_s=None,
                          options=options, live=live, stop=settings.stop_rule(total), seed=len(runs))
            run.repeat = len(hunt.probes)
            runs.append(run)
            probe = judge(run, settings, total)
            hunt.record(probe)
            say(f"{target.name}: rate {rate:g}/s {'met' if probe.passed else 'missed'}: {probe.reason}")
    return runs, searches, settings


def failures_by_target(runs: list[RunResult], targets: list[Target]) -> dict[str, dict[str, Any]]:
    """Errors by kind per target, failed runs, and the first error's text."""
    out: dict[str, dict[str, Any]] = {}
    for target in targets:
        mine = [r for r in runs if r.target == target.name]
        errors: dict[str, int] = {}
        for run in mine:
            for kind, n in run.errors.items():
                errors[kind] = errors.get(kind, 0) + n
        first = next((r.first_error for r in mine if r.first_error), None)
        out[target.name] = {
            "errors": errors, "error_count": sum(errors.values()), "requests": sum(r.requests for r in mine),
            "runs": len(mine), "failed_runs": sum(r.failed for r in mine), "first_error": first,
        }
    return out


def requests_per_run(options: BenchOptions) -> int | None:
    """Requests per fixed run: ``--requests``, else the default unless ``--duration`` is given."""
    if options.duration_s is not None:
        return None
    return options.requests or DEFAULT_REQUESTS
