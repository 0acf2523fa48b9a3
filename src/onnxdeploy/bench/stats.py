"""Latency and throughput statistics: percentiles of one run, medians and spread across repeats."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the percentiles every run reports, by report key
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}
#: a run with more than this fraction of failed requests is a failed run
MAX_ERROR_RATE = 0.01
LATENCY_KEYS = (*PERCENTILES, "max")


def latency_summary(latencies_us: Sequence[int] | np.ndarray) -> dict[str, float | None]:
    """``{p50, p90, p95, p99, max}`` in milliseconds from per-request latencies in microseconds.

    Percentiles are nearest-rank (numpy's "inverted_cdf": the smallest latency that at least
    p% of requests did not exceed), so each is an observed request, never an interpolation, and
    p50 <= p90 <= p95 <= p99 <= max holds by construction.
    """
    arr = np.asarray(latencies_us, dtype=np.float64)
    if arr.size == 0:
        return {key: None for key in LATENCY_KEYS}
    arr = np.sort(arr)
    # rank ceil(p * n), with a tolerance so 99.9% of 1000 is rank 999 despite float rounding
    ranks = [max(1, math.ceil(p / 100.0 * arr.size - 1e-9)) for p in PERCENTILES.values()]
    out = {key: float(arr[r - 1]) / 1000.0 for key, r in zip(PERCENTILES, ranks)}
    out["max"] = float(arr.max()) / 1000.0
    return out


@dataclass
class RunResult:
    """One load run against one target: counts, rate, latency, and how it was produced."""

    target: str
    concurrency: int
    requests: int
    errors: dict[str, int]
    elapsed_s: float
    latency_ms: dict[str, float | None]
    mode: str = "closed"
    repeat: int = 0
    rate: float | None = None
    engine: str = "native"
    cpu_percent: float | None = None
    generator_bound: bool = False
    latencies_us: np.ndarray | None = field(default=None, repr=False)
    server: dict[str, float | None] = field(default_factory=dict)
    first_error: str | None = None
    early_stop: str | None = None
    late_sends: int | None = None
    scheduled: int | None = None
    arrivals: str | None = None
    send_slip_s: float | None = None
    #: open loop: 99th percentile of how late sends left against their schedule (ms)
    late_p99_ms: float | None = None
    #: open loop: latency percentiles from the actual send (without the generator's lateness)
    service_ms: dict[str, float | None] | None = None
    service_us: np.ndarray | None = field(default=None, repr=False)

    @property
    def error_count(self) -> int:
        """Failed requests of every kind."""
        return int(sum(self.errors.values()))

    @property
    def error_rate(self) -> float:
        """Failed requests as a fraction of all answered or failed ones."""
        n = self.requests + self.error_count
        return self.error_count / n if n else 0.0

    @property
    def failed(self) -> bool:
        """More than ``MAX_ERROR_RATE`` of the requests failed (or none succeeded)."""
        return self.error_rate > MAX_ERROR_RATE or self.requests == 0

    @property
    def rps(self) -> float:
        """Successful requests per second of wall time."""
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def level(self) -> float:
        """The load level runs are grouped by: concurrency (closed) or requested rate (open)."""
        return float(self.rate) if self.mode == "open" and self.rate is not None else float(self.concurrency)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": dict(self.errors),
            "error_count": self.error_count,
            "error_rate": self.error_rate,
            "rps": self.rps,
            "elapsed_s": self.elapsed_s,
            "latency_ms": dict(self.latency_ms),
            "mode": self.mode,
            "repeat": self.repeat,
            "engine": self.engine,
            "cpu_percent": self.cpu_percent,
            "generator_bound": self.generator_bound,
        }
        if self.rate is not None:
            out["rate"] = self.rate
        for key in ("first_error", "early_stop", "late_sends", "scheduled", "arrivals", "send_slip_s", "late_p99_ms",
                    "service_ms"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.server:
            out["server"] = dict(self.server)
        return out


def spread(values: Iterable[float | None]) -> dict[str, float | None]:
    """Median, min, max and relative spread ``(max - min) / median`` of repeated measurements."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "rel_spread": None, "values": []}
    med = statistics.median(vals)
    lo, hi = min(vals), max(vals)
    # the repeats themselves, in run order: the judge pairs them (bench alternates the targets)
    return {"median": med, "min": lo, "max": hi, "rel_spread": (hi - lo) / med if med else None,
            "values": vals}


def aggregate(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Group runs by target and load level; median and spread across repeats of each figure."""
    groups: dict[tuple[str, str, float], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.target, run.mode, run.level), []).append(run)
    out = []
    for (target, mode, _level), group in groups.items():
        first = group[0]
        errors: dict[str, int] = {}
        for run in group:
            for kind, n in run.errors.items():
                errors[kind] = errors.get(kind, 0) + n
        entry: dict[str, Any] = {
            "target": target,
            "mode": mode,
            "concurrency": first.concurrency if mode == "closed" else max(r.concurrency for r in group),
            "repeats": len(group),
            "requests": sum(r.requests for r in group),
            "errors": errors,
            "rps": spread(r.rps for r in group),
            "latency_ms": {k: spread(r.latency_ms.get(k) for r in group) for k in LATENCY_KEYS},
            "generator_bound": any(r.generator_bound for r in group),
        }
        if mode == "open":
            entry["rate"] = first.rate
        shares = [r.server.get("compute_share") for r in group if r.server]
        if any(s is not None for s in shares):
            entry["compute_share"] = spread(shares)["median"]
        out.append(entry)
    return out
