"""``run_bench``: servers up, warm-up, generator ceiling, alternating repeated runs or a capacity
search at an SLO, failure accounting, accuracy, verdict."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..environment import environment
from ..errors import BenchFailed, OptionError, ServerError
from ..modelfile import model_size
from . import engines
from .accuracy import api_accuracy
from .httpclient import is_up
from .options import BenchOptions
from .quality import ACCURACY, COSINE, InProcess, embedding_quality, quality_kind
from .runs import (
    Live,
    describe,
    failures_by_target,
    fixed_runs,
    repeat_while_undecided,
    requests_per_run,
    search,
    warm_up,
)
from .servers import (
    LIVE_PATH,
    ServerPool,
    ServerSpec,
    free_port,
    signals_as_interrupt,
)
from .slo import CapacitySearch
from .stats import MAX_ERROR_RATE, RunResult, aggregate
from .targets import Target, default_names, file_signature, prepare, url_signature
from .verdict import capacity_verdict, make_verdict

CEILING_DURATION_S = 1.0


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
    capacity: dict[str, dict[str, Any]] | None = None
    slo: dict[str, Any] | None = None
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    #: seconds from the start of run_bench (servers included) to the report
    wall_s: float | None = None
    #: seconds the capacity search took (its probes, one target after the other)
    search_s: float | None = None
    #: what the request bodies carried: ``texts`` (the server tokenized them) or ``tokens`` (tensors)
    send: str = "tokens"
    #: quality through the API per target: ``{kind: accuracy, accuracy}`` or ``{kind: cosine, ...}``
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)

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
        out = {
            "targets": [t.to_dict() for t in self.targets],
            "mode": self.mode,
            "data": self.data,
            "samples": self.samples,
            "runs": [r.to_dict() for r in self.runs],
            "aggregated": self.aggregated,
            "send": self.send,
            "accuracy": self.accuracy,
            "accuracy_delta": self.accuracy_delta,
            "quality": self.quality,
            "verdict": self.verdict,
            "generator": self.generator,
            "server_split": self.server_split,
            "settings": self.settings,
            "failures": self.failures,
            "failure": self.failure,
            "environment": self.environment,
            "wall_s": self.wall_s,
            "search_s": self.search_s,
        }
        if self.capacity is not None:
            out["capacity"] = self.capacity
            out["slo"] = self.slo
        return out


def _split_cpus(pin: bool) -> tuple[list[int] | None, list[int] | None]:
    """(generator CPUs, server CPUs): half each, the generator taking the smaller half."""
    if not pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise OptionError(f"--pin needs at least 2 CPUs, this process may use {len(cpus)}")
    gen = cpus[: len(cpus) // 2]
    return gen, cpus[len(gen):]


def run_bench(options: BenchOptions, progress: Callable[[str], None] | None = None,
              live: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark the targets and return the report; servers it started are always stopped.

    ``progress`` gets one line per step, ``live`` a line about every second while a run goes
    (rate, p99 so far, ETA). Raises BenchFailed (with the report) when a run had more than 1%
    errors, a warm-up failed, or no rate met the SLO.
    """
    say = progress or (lambda _msg: None)
    t_start = time.monotonic()
    options.validate()
    gen_cpus, server_cpus = _split_cpus(options.pin)
    targets: list[Target] = []
    if options.models:
        names = list(options.names) or default_names(list(options.models))
        for model, name in zip(options.models, names):
            target = Target(name, "", str(model), sig=file_signature(model))
            prepare(target, options.data, options.dims, options.send)  # bad data fails before any server starts
            targets.append(target)
    with signals_as_interrupt(), ServerPool(ready_timeout_s=options.ready_timeout_s) as pool:
        if options.models:
            ports = list(options.ports) or []
            specs = []
            for i, target in enumerate(targets):
                port = ports[i] if ports else free_port(options.host)
                extra: tuple[str, ...] = ()
                if options.protocol == "grpc":  # the load over gRPC; ready and accuracy: HTTP
                    grpc_port = free_port(options.host)
                    extra = ("--grpc-port", str(grpc_port))
                    target.grpc = f"{options.host}:{grpc_port}"
                specs.append(ServerSpec(
                    target.model, target.name, port, host=options.host, workers=options.server_workers,
                    threads=options.server_threads, ort_threads=options.ort_threads, cpus=server_cpus,
                    extra_args=extra))
                target.url = specs[-1].url
            say(f"starting {len(specs)} server(s): " + ", ".join(f"{s.name} on :{s.port}" for s in specs))
            pool.start_all(specs)
        else:
            for i, url in enumerate(options.urls):
                if url.startswith("grpc://"):  # readiness and metadata over gRPC itself
                    from .grpcload import served_model, split_grpc_url
                    from .targets import signature_from_metadata

                    address = split_grpc_url(url)
                    served, meta = served_model(address, options.names[i] if options.names else None)
                    target = Target(options.names[i] if options.names else served, url.rstrip("/"),
                                    None, sig=signature_from_metadata(meta), grpc=address,
                                    served=served)
                    prepare(target, options.data, options.dims, options.send)
                    targets.append(target)
                    continue
                if not is_up(url.rstrip("/"), LIVE_PATH):
                    raise ServerError(f"--url {url}: no answer 200 from {LIVE_PATH}; is the server running?")
                served, sig = url_signature(url.rstrip("/"), options.names[i] if options.names else None)
                target = Target(options.names[i] if options.names else served, url.rstrip("/"), None, sig=sig)
                prepare(target, options.data, options.dims, options.send)
                targets.append(target)
        previous_affinity = os.sched_getaffinity(0) if gen_cpus else None
        if gen_cpus:
            os.sched_setaffinity(0, gen_cpus)
        try:
            report = _measure(options, targets, say, live, gen_cpus, server_cpus)
        finally:
            if previous_affinity:
                os.sched_setaffinity(0, previous_affinity)
    report.wall_s = time.monotonic() - t_start
    if report.failure:
        raise BenchFailed(report.failure, report)
    return report


def _measure(options: BenchOptions, targets: list[Target], say, live_sink, gen_cpus, server_cpus) -> BenchReport:
    engine = engines.get(options.engine, timeout_s=options.timeout_s, workers=options.locust_workers,
                         master=options.locust_master, expect_workers=options.expect_workers)
    live = Live(live_sink)
    settings = options.search_settings()
    open_loop = bool(options.rate) or settings is not None
    top_c = max(options.concurrency)
    start = warm_up(options, engine, targets, say, 1 if settings else top_c)
    say("measuring the generator's ceiling against the liveness endpoint")
    ceiling = engine.ceiling(targets[0], concurrency=top_c, duration_s=CEILING_DURATION_S)
    searches: dict[str, CapacitySearch] = {}
    search_s = None
    if settings is not None:
        t_search = time.monotonic()
        runs, searches, settings = search(options, engine, targets, say, live, start, ceiling)
        search_s = time.monotonic() - t_search
    else:
        runs = fixed_runs(options, engine, targets, say, live, top_c)
        runs = repeat_while_undecided(options, engine, targets, say, live, top_c, runs)
    # a second look after the load: the max of both is the ceiling (noise only ever lowers it)
    ceiling = max(ceiling, engine.ceiling(targets[0], concurrency=top_c, duration_s=CEILING_DURATION_S))
    for run in runs:
        run.generator_bound = bool(ceiling and run.rps >= options.bound_fraction * ceiling)
    failures = failures_by_target(runs, targets)
    failure = None
    capacity = None
    if settings is not None:
        capacity = {name: s.result() for name, s in searches.items()}
        bounds = ", ".join(b.label for b in settings.bounds)
        missed = [(n, s) for n, s in searches.items() if s.lo is None and s.limited_by != "time_budget"]
        if missed:
            failure = "; ".join(
                f"{n}: could not measure {bounds}, the generator could not offer the load: {s.note}"
                if s.limited_by == "generator" else f"{n}: no rate met {bounds}: {s.note or 'every probe missed'}"
                for n, s in missed)
    else:
        bad = [(t.name, [r for r in runs if r.target == t.name and r.failed]) for t in targets]
        bad = [(n, rs) for n, rs in bad if rs]
        if bad:
            failure = "; ".join(
                f"{n}: {len(rs)} of {failures[n]['runs']} runs had more than {100 * MAX_ERROR_RATE:g}% errors "
                f"(worst: {describe(max(rs, key=lambda r: r.error_rate))})" for n, rs in bad)
    accuracy, quality = _quality(options, targets, failures, say, searched=settings is not None)
    aggregated = aggregate(runs)
    verdict = None
    acc_delta = None
    sizes = {t.name: (model_size(t.model) if t.model else None) for t in targets}
    if len(targets) >= 2:
        names = tuple(t.name for t in targets)
        if failure:
            verdict = _failed_verdict(names, failures, failure)
        elif settings is not None:
            verdict = capacity_verdict(capacity, names[:2], accuracy, bounds_label=bounds, precision=settings.precision,
                                       sizes=sizes, max_accuracy_drop=options.max_accuracy_drop, quality=quality)
        else:
            verdict = make_verdict(aggregated, names, accuracy, sizes=sizes,
                                   max_accuracy_drop=options.max_accuracy_drop, quality=quality,
                                   decide_ship=options.decide)
        acc_delta = verdict["accuracy_delta"]
    generator = {
        "engine": options.engine,
        "ceiling_rps": ceiling,
        "ceiling_endpoint": LIVE_PATH,
        "cpu_percent": _cpu_percent(runs),
        "bound_fraction": options.bound_fraction,
        "bound_runs": sum(r.generator_bound for r in runs),
        "any_bound": any(r.generator_bound for r in runs),
        "late_sends": sum(r.late_sends or 0 for r in runs) if open_loop else None,
        "arrivals": options.arrivals if open_loop else None,
        "pinned": {"generator": gen_cpus, "servers": server_cpus} if gen_cpus else None,
    }
    if options.engine == "locust":
        generator["locust_workers"] = options.locust_workers
        generator["locust_master"] = options.locust_master
    data = targets[0].data
    mode = "slo" if settings is not None else ("open" if open_loop else "closed")
    levels = sorted({r.level for r in runs}) if settings is not None else (
        list(options.rate) if options.rate else [float(c) for c in options.concurrency])
    return BenchReport(
        targets=targets, runs=runs, aggregated=aggregated, accuracy=accuracy, accuracy_delta=acc_delta,
        verdict=verdict, generator=generator, mode=mode,
        data=data.name if data else "", samples=len(data) if data else 0,
        settings={"requests": None if settings else requests_per_run(options),
                  "duration_s": options.duration_s, "repeats": options.repeats if settings is None else None,
                  "levels": levels, "warmup": options.warmup, "arrivals": options.arrivals if open_loop else None,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S")},
        capacity=capacity, slo=settings.to_dict() if settings is not None else None,
        failures=failures, failure=failure, environment=environment(options.ort_threads),
        search_s=search_s, send=targets[0].requests.kind, quality=quality,
    )


def _quality(options: BenchOptions, targets: list[Target], failures: dict[str, dict], say, *, searched: bool
             ) -> tuple[dict[str, float | None], dict[str, dict[str, Any]]]:
    """Accuracy (classifiers) and quality (embeddings: cosine to the baseline in process) through the API."""
    accuracy: dict[str, float | None] = {}
    quality: dict[str, dict[str, Any]] = {}
    if not options.accuracy:
        return accuracy, quality
    baseline = None
    for target in targets:
        if failures[target.name]["failed_runs"] and not searched:
            continue  # a target that fails its requests fails the quality pass too; said above
        if target.data is None:
            continue
        if target.url.startswith("grpc://"):
            say(f"no accuracy for {target.name}: it is measured through /predict, and "
                f"{target.url} is gRPC only")
            continue
        kind = quality_kind(target.meta, target.data.labels is not None)
        if kind == ACCURACY:
            say(f"accuracy of {target.name} through {target.url}/predict")
            accuracy[target.name] = api_accuracy(target.url, target.sig, target.data, texts=target.texts)
            quality[target.name] = {"kind": ACCURACY, "accuracy": accuracy[target.name]}
        elif kind == COSINE and targets[0].model:
            if baseline is None:  # the baseline (A) in process: every target is judged against it
                say(f"running {targets[0].name} in process to judge served embeddings against it")
                baseline = InProcess.build(targets[0].model, data=options.data, dims=options.dims,
                                           threads=options.ort_threads, texts=target.texts is not None)
            say(f"embedding quality of {target.name} through {target.url}/predict")
            found = embedding_quality(target.url, target.sig, target.data, target.texts, baseline,
                                      reference_name=targets[0].name, min_cosine=options.min_cosine)
            if found is not None:
                quality[target.name] = found
    return accuracy, quality


def _cpu_percent(runs: list[RunResult]) -> float | None:
    wall = sum(r.elapsed_s for r in runs)
    cpu = sum((r.cpu_percent or 0.0) * r.elapsed_s / 100.0 for r in runs)
    return 100.0 * cpu / wall if wall else None


def _failed_verdict(names: tuple[str, str], failures: dict[str, dict], failure: str) -> dict[str, Any]:
    """No speed verdict from failing runs: ship the target that did not fail (else the baseline)."""
    a_name, b_name = names[:2]
    ok = [n for n in (a_name, b_name) if not failures[n]["failed_runs"]]
    ship = ok[0] if len(ok) == 1 else a_name
    why = (f"{b_name if ship == a_name else a_name} failed its requests" if len(ok) == 1
           else "both failed their requests" if not ok else "the baseline")
    return {"rps_ratio": None, "p50_ratio": None, "p99_ratio": None, "speedup": {}, "accuracy_delta": None,
            "ship": ship, "within_noise": True, "ranked": False, "failed": True,
            "text": f"No speed verdict: {failure}. Until a bench passes, ship {ship} ({why}).",
            "baseline": a_name, "candidate": b_name}
