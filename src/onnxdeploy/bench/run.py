"""``run_bench``: servers up, warm-up, generator ceiling, alternating repeated runs, accuracy, verdict."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OptionError, ServerError
from . import engines
from .accuracy import api_accuracy
from .httpclient import is_up
from .scrape import scrape, server_split
from .servers import (
    DEFAULT_READY_TIMEOUT_S,
    LIVE_PATH,
    ServerPool,
    ServerSpec,
    free_port,
    signals_as_interrupt,
)
from .stats import RunResult, aggregate
from .targets import Target, default_names, file_signature, prepare, url_signature
from .verdict import make_verdict

DEFAULT_CONCURRENCY = (1, 8, 32)
DEFAULT_REQUESTS = 2000
DEFAULT_WARMUP = 200
#: a result at or above this fraction of the generator's ceiling is flagged generator-bound
BOUND_FRACTION = 0.7
CEILING_DURATION_S = 1.0
ENGINES = ("native", "locust", "wrk")


@dataclass
class BenchOptions:
    """Everything ``run_bench`` needs; give ``models`` (files to serve) or ``urls`` (running servers)."""

    models: Sequence[str] = ()
    urls: Sequence[str] = ()
    names: Sequence[str] = ()
    ports: Sequence[int] = ()
    host: str = "127.0.0.1"
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY
    requests: int | None = None
    duration_s: float | None = None
    repeats: int = 3
    rate: Sequence[float] = ()
    engine: str = "native"
    data: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    warmup: int = DEFAULT_WARMUP
    server_workers: int | None = None
    server_threads: int | None = None
    ort_threads: int | None = None
    pin: bool = False
    accuracy: bool = True
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    timeout_s: float = 30.0
    bound_fraction: float = BOUND_FRACTION

    def validate(self) -> None:
        """Raise OptionError for combinations that cannot run."""
        if bool(self.models) == bool(self.urls):
            raise OptionError("give model files (A.onnx B.onnx) or --url URL (repeatable), not both")
        n = len(self.models) or len(self.urls)
        if not 1 <= n <= 2:
            raise OptionError(f"bench takes one or two targets (A and B), got {n}")
        if self.names and len(self.names) != n:
            raise OptionError(f"--name given {len(self.names)} times for {n} targets")
        if self.ports and (self.urls or len(self.ports) != n):
            raise OptionError(f"--ports needs one port per model file ({n}), got {len(self.ports)}")
        if self.requests is not None and self.duration_s is not None:
            raise OptionError("give --requests or --duration, not both")
        if self.engine not in ENGINES:
            raise OptionError(f"--engine {self.engine}: expected one of {', '.join(ENGINES)}")
        if self.rate and self.engine != "native":
            raise OptionError(f"--rate (open loop) needs --engine native; {self.engine} is closed-loop only")
        if self.repeats < 1 or any(c < 1 for c in self.concurrency) or not self.concurrency:
            raise OptionError("--repeats and every --concurrency level must be >= 1")
        if any(r <= 0 for r in self.rate):
            raise OptionError("every --rate must be > 0 requests/s")


@dataclass
class BenchReport:
    """What a bench measured; ``to_dict`` holds the DESIGN.md keys."""

    targets: list[Target]
    runs: list[RunResult]
    aggregated: list[dict[str, Any]]
    accuracy: dict[str, float | None]
    accuracy_delta: float | None
    verdict: dict[str, Any] | None
    generator: dict[str, Any]
    mode: str
    data: str
    samples: int
    settings: dict[str, Any]

    @property
    def server_split(self) -> list[dict[str, Any]]:
        """Per target and level: model compute vs everything else (medians across repeats)."""
        groups: dict[tuple[str, float], list[dict]] = {}
        for run in self.runs:
            if run.server:
                groups.setdefault((run.target, run.level), []).append(run.server)
        out = []
        for (target, level), items in groups.items():
            entry: dict[str, Any] = {"target": target, "level": level}
            for key in ("client_ms", "server_ms", "compute_ms", "queue_ms", "other_ms", "compute_share"):
                vals = [i[key] for i in items if i.get(key) is not None]
                entry[key] = float(np.median(vals)) if vals else None
            out.append(entry)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "targets": [t.to_dict() for t in self.targets],
            "mode": self.mode,
            "data": self.data,
            "samples": self.samples,
            "runs": [r.to_dict() for r in self.runs],
            "aggregated": self.aggregated,
            "accuracy": self.accuracy,
            "accuracy_delta": self.accuracy_delta,
            "verdict": self.verdict,
            "generator": self.generator,
            "server_split": self.server_split,
            "settings": self.settings,
        }


def _split_cpus(pin: bool) -> tuple[list[int] | None, list[int] | None]:
    """(generator CPUs, server CPUs): half each, the generator taking the smaller half."""
    if not pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise OptionError(f"--pin needs at least 2 CPUs, this process may use {len(cpus)}")
    gen = cpus[: len(cpus) // 2]
    return gen, cpus[len(gen):]


def run_bench(options: BenchOptions, progress: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark the targets and return the report; servers it started are always stopped."""
    say = progress or (lambda _msg: None)
    options.validate()
    gen_cpus, server_cpus = _split_cpus(options.pin)
    targets: list[Target] = []
    if options.models:
        names = list(options.names) or default_names(list(options.models))
        for model, name in zip(options.models, names):
            target = Target(name, "", str(model), sig=file_signature(model))
            prepare(target, options.data, options.dims)  # bad data fails before any server starts
            targets.append(target)
    with signals_as_interrupt(), ServerPool(ready_timeout_s=options.ready_timeout_s) as pool:
        if options.models:
            ports = list(options.ports) or []
            specs = []
            for i, target in enumerate(targets):
                port = ports[i] if ports else free_port(options.host)
                specs.append(ServerSpec(
                    target.model, target.name, port, host=options.host, workers=options.server_workers,
                    threads=options.server_threads, ort_threads=options.ort_threads, cpus=server_cpus))
                target.url = specs[-1].url
            say(f"starting {len(specs)} server(s): " + ", ".join(f"{s.name} on :{s.port}" for s in specs))
            pool.start_all(specs)
        else:
            for i, url in enumerate(options.urls):
                if not is_up(url.rstrip("/"), LIVE_PATH):
                    raise ServerError(f"--url {url}: no answer 200 from {LIVE_PATH}; is the server running?")
                served, sig = url_signature(url.rstrip("/"), options.names[i] if options.names else None)
                target = Target(options.names[i] if options.names else served, url.rstrip("/"), None, sig=sig)
                prepare(target, options.data, options.dims)
                targets.append(target)
        previous_affinity = os.sched_getaffinity(0) if gen_cpus else None
        if gen_cpus:
            os.sched_setaffinity(0, gen_cpus)
        try:
            return _measure(options, targets, say, gen_cpus, server_cpus)
        finally:
            if previous_affinity:
                os.sched_setaffinity(0, previous_affinity)


def _measure(options: BenchOptions, targets: list[Target], say, gen_cpus, server_cpus) -> BenchReport:
    engine = engines.get(options.engine, timeout_s=options.timeout_s)
    open_loop = bool(options.rate)
    levels: list[float] = list(options.rate) if open_loop else [float(c) for c in options.concurrency]
    top_c = max(options.concurrency)
    for target in targets:
        if options.warmup:
            say(f"warming up {target.name} ({options.warmup} requests)")
            engine.run(target, concurrency=top_c, total=options.warmup)
    say("measuring the generator's ceiling against the liveness endpoint")
    ceiling = engine.ceiling(targets[0], concurrency=top_c, duration_s=CEILING_DURATION_S)
    total = options.requests if options.duration_s is None else None
    if total is None and options.duration_s is None:
        total = DEFAULT_REQUESTS
    runs: list[RunResult] = []
    cpu_total = wall_total = 0.0
    for repeat in range(options.repeats):
        for level in levels:
            order = targets if repeat % 2 == 0 else targets[::-1]  # alternate so drift hits both
            for target in order:
                what = f"rate {level:g}/s" if open_loop else f"c={int(level)}"
                say(f"repeat {repeat + 1}/{options.repeats} {target.name} {what}")
                before = scrape(target.url)
                run = engine.run(
                    target, concurrency=int(level) if not open_loop else min(top_c, 64),
                    total=total, duration_s=options.duration_s, rate=level if open_loop else None)
                after = scrape(target.url)
                run.repeat = repeat
                mean_ms = (float(np.mean(run.latencies_us)) / 1000.0
                           if run.latencies_us is not None and run.latencies_us.size else run.latency_ms.get("p50"))
                run.server = server_split(before, after, mean_ms)
                cpu_total += (run.cpu_percent or 0.0) * run.elapsed_s / 100.0
                wall_total += run.elapsed_s
                runs.append(run)
    # a second look after the load: the max of both is the ceiling (noise only ever lowers it)
    ceiling = max(ceiling, engine.ceiling(targets[0], concurrency=top_c, duration_s=CEILING_DURATION_S))
    for run in runs:
        run.generator_bound = bool(ceiling and run.rps >= options.bound_fraction * ceiling)
    accuracy: dict[str, float | None] = {}
    if options.accuracy:
        for target in targets:
            if target.data is not None and target.data.labels is not None:
                say(f"accuracy of {target.name} through {target.url}/predict")
                accuracy[target.name] = api_accuracy(target.url, target.sig, target.data)
    aggregated = aggregate(runs)
    verdict = None
    acc_delta = None
    if len(targets) == 2:
        verdict = make_verdict(aggregated, (targets[0].name, targets[1].name), accuracy)
        acc_delta = verdict["accuracy_delta"]
    generator = {
        "engine": options.engine,
        "ceiling_rps": ceiling,
        "ceiling_endpoint": LIVE_PATH,
        "cpu_percent": 100.0 * cpu_total / wall_total if wall_total else None,
        "bound_fraction": options.bound_fraction,
        "bound_runs": sum(r.generator_bound for r in runs),
        "any_bound": any(r.generator_bound for r in runs),
        "pinned": {"generator": gen_cpus, "servers": server_cpus} if gen_cpus else None,
    }
    data = targets[0].data
    return BenchReport(
        targets=targets, runs=runs, aggregated=aggregated, accuracy=accuracy, accuracy_delta=acc_delta,
        verdict=verdict, generator=generator, mode="open" if open_loop else "closed",
        data=data.name if data else "", samples=len(data) if data else 0,
        settings={"requests": total, "duration_s": options.duration_s, "repeats": options.repeats,
                  "levels": levels, "warmup": options.warmup, "time": time.strftime("%Y-%m-%dT%H:%M:%S")},
    )
