"""One interface over the load engines: ``run`` a load on a target, measure the ``ceiling``."""

from __future__ import annotations

import numpy as np

from ..bodies import TEXTS, encode_all, http_request
from ..servers import LIVE_PATH
from ..stats import RunResult, latency_summary
from .locust import run_locust
from .native import LoadSpec, StopRule, run_load
from .wrk import DEFAULT_DURATION_S, run_wrk


class NativeEngine:
    """Our asyncio engine, in this process."""

    name = "native"

    def __init__(self, timeout_s: float = 30.0):
        self.timeout_s = timeout_s

    def run(self, target, *, concurrency: int, total: int | None = None,
            duration_s: float | None = None, rate: float | None = None, arrivals: str = "poisson",
            stop: StopRule | None = None, on_tick=None, seed: int = 0) -> RunResult:
        """One closed- or open-loop run of the target's requests."""
        if getattr(target, "grpc", None):
            return self._run_grpc(target, concurrency=concurrency, total=total,
                                  duration_s=duration_s, rate=rate)
        host, port = target.host_port
        spec = LoadSpec(host, port, encode_all(target.requests, f"{host}:{port}"),
                        concurrency=concurrency, total=total, duration_s=duration_s, rate=rate,
                        timeout_s=self.timeout_s, arrivals=arrivals, stop=stop, on_tick=on_tick,
                        seed=seed)
        res = run_load(spec)
        return RunResult(
            target=target.name, concurrency=res.connections if rate else concurrency,
            requests=res.ok, errors=res.errors, elapsed_s=res.elapsed_s,
            latency_ms=latency_summary(res.latencies_us), mode=res.mode, rate=rate,
            engine=self.name, cpu_percent=100.0 * res.cpu_s / res.elapsed_s,
            latencies_us=res.latencies_us, first_error=res.first_error, early_stop=res.early_stop,
            late_sends=res.late if rate else None, scheduled=res.scheduled if rate else None,
            arrivals=res.arrivals, send_slip_s=res.slip_s if rate else None,
            late_p99_ms=(float(np.percentile(res.lateness_us, 99)) / 1000.0
                         if rate and res.lateness_us.size else None),
            service_ms=latency_summary(res.service_us) if rate else None,
            service_us=res.service_us if rate else None,
        )

    def _run_grpc(self, target, *, concurrency, total, duration_s, rate) -> RunResult:
        from ..grpcload import encode_infer, run_grpc_load

        cache = getattr(target, "_grpc_bodies", None)
        if cache is None:
            cache = encode_infer(target.requests.bodies, target.sig, target.served or target.name,
                                 texts=target.requests.kind == TEXTS)
            target._grpc_bodies = cache
        res = run_grpc_load(target.grpc, cache, concurrency=concurrency, total=total,
                            duration_s=duration_s, rate=rate, timeout_s=self.timeout_s)
        return RunResult(
            target=target.name, concurrency=concurrency, requests=res.ok, errors=res.errors,
            elapsed_s=res.elapsed_s, latency_ms=latency_summary(res.latencies_us), mode=res.mode,
            rate=None, engine=self.name, cpu_percent=100.0 * res.cpu_s / res.elapsed_s,
            latencies_us=res.latencies_us, first_error=res.first_error)

    def ceiling(self, target, *, concurrency: int, duration_s: float) -> float:
        """Requests/s this engine reaches against the server's do-almost-nothing liveness check."""
        if getattr(target, "grpc", None):
            from ..grpcload import LIVE, run_grpc_load

            res = run_grpc_load(target.grpc, [b""], concurrency=concurrency,
                                duration_s=duration_s, timeout_s=self.timeout_s, path=LIVE)
            return res.ok / res.elapsed_s
        host, port = target.host_port
        raw = http_request("GET", LIVE_PATH, f"{host}:{port}")
        res = run_load(LoadSpec(host, port, [raw], concurrency=concurrency, duration_s=duration_s,
                                timeout_s=self.timeout_s))
        return res.ok / res.elapsed_s


class LocustEngine:
    """Locust in a child process, latencies recorded by the generated locustfile."""

    name = "locust"

    def __init__(self, timeout_s: float = 30.0, *, workers: int = 0, master: str | None = None,
                 expect_workers: int | None = None):
        self.timeout_s = timeout_s
        self.workers = workers
        self.master = master
        self.expect_workers = expect_workers
        self.say = None

    def run(self, target, *, concurrency: int, total: int | None = None,
            duration_s: float | None = None, rate: float | None = None, **_open_loop) -> RunResult:
        """One closed-loop Locust run with ``concurrency`` users (over the workers, if any)."""
        res = run_locust(target.url, list(target.requests.bodies), concurrency=concurrency,
                         total=total, duration_s=duration_s, workers=self.workers, master=self.master,
                         expect_workers=self.expect_workers, say=self.say)
        return RunResult(
            target=target.name, concurrency=concurrency, requests=int(res.latencies_us.size),
            errors=res.errors, elapsed_s=res.elapsed_s, latency_ms=latency_summary(res.latencies_us),
            engine=self.name, cpu_percent=100.0 * res.cpu_s / res.elapsed_s, latencies_us=res.latencies_us,
            first_error=res.first_error,
        )

    def ceiling(self, target, *, concurrency: int, duration_s: float) -> float:
        """Locust's rate against the liveness endpoint, with the same workers."""
        res = run_locust(target.url, [], concurrency=concurrency, duration_s=max(2.0, duration_s),
                         path=LIVE_PATH, workers=self.workers, master=self.master,
                         expect_workers=self.expect_workers)
        return res.latencies_us.size / res.elapsed_s


class WrkEngine:
    """wrk, when on the PATH; duration-based, percentiles only (no raw latencies)."""

    name = "wrk"

    def __init__(self, timeout_s: float = 30.0):
        self.timeout_s = timeout_s

    def run(self, target, *, concurrency: int, total: int | None = None,
            duration_s: float | None = None, rate: float | None = None, **_open_loop) -> RunResult:
        """One wrk run; a request count becomes a short fixed duration (wrk has no count mode)."""
        seconds = duration_s if duration_s is not None else DEFAULT_DURATION_S
        res = run_wrk(target.url, target.requests.path, list(target.requests.bodies),
                      concurrency=concurrency, duration_s=seconds, timeout_s=self.timeout_s)
        return RunResult(
            target=target.name, concurrency=concurrency, requests=res.requests, errors=res.errors,
            elapsed_s=res.elapsed_s, latency_ms=res.latency_ms, engine=self.name,
            cpu_percent=100.0 * res.cpu_s / res.elapsed_s,
        )

    def ceiling(self, target, *, concurrency: int, duration_s: float) -> float:
        """wrk's rate against the liveness endpoint."""
        res = run_wrk(target.url, LIVE_PATH, None, concurrency=concurrency, duration_s=max(1.0, duration_s))
        return res.requests / res.elapsed_s


def get(name: str, *, timeout_s: float = 30.0, workers: int = 0, master: str | None = None,
        expect_workers: int | None = None):
    """The engine called ``name`` (Locust takes its worker settings)."""
    if name == "locust":
        return LocustEngine(timeout_s, workers=workers, master=master, expect_workers=expect_workers)
    return {"native": NativeEngine, "wrk": WrkEngine}[name](timeout_s)
