"""Capacity at a latency SLO: the highest open-loop arrival rate whose percentile latency holds.

Each probe is one open-loop run with rules modelled on MLPerf LoadGen's Server scenario: Poisson
arrivals, latency counted from the scheduled send time, a minimum duration and a minimum query
count that make the percentile mean something, and an early stop once a run can no longer meet
its bound. The search brackets the crossing by doubling the rate, bisects it to ``precision``,
then repeats the highest passing rate until ``confirm_runs`` runs passed there; a capacity that
rests on fewer runs, or that the generator, the rate cap or the time budget limited, is reported
as a lower bound ("at least X").
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OptionError
from .engines.native import StopRule
from .stats import MAX_ERROR_RATE, RunResult

#: percentiles a bound may name, by report key
SLO_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}
#: a percentile needs this many requests beyond it: p99 needs 2,000 queries, p99.9 20,000
TAIL_SAMPLES = 20
MIN_DURATION_S = 2.0
MAX_RUN_S = 30.0
DEFAULT_PRECISION = 0.1
CONFIRM_RUNS = 3
DEFAULT_BUDGET_S = 600.0
#: halvings below the first rate before the search says even a low rate misses the bound
MAX_HALVINGS = 3
#: the last send left later than this fraction of the run's planned length: the generator fell behind
MAX_SLIP_FRACTION = 0.1
_SLO = re.compile(r"^\s*(p(?:50|90|95|99|99\.9))\s*(?:=|<=|<)\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*$", re.I)


@dataclass(frozen=True)
class Bound:
    """One latency bound: ``key`` (p99) at most ``ms`` milliseconds."""

    key: str
    ms: float

    @property
    def percentile(self) -> float:
        return SLO_PERCENTILES[self.key]

    @property
    def label(self) -> str:
        return f"{self.key} \u2264 {self.ms:g} ms"

    def to_dict(self) -> dict[str, Any]:
        return {"percentile": self.key, "ms": self.ms}


def parse_slo(texts: Sequence[str]) -> list[Bound]:
    """``["p99=20ms", "p50=5"]`` as bounds (a bare number is ms); OptionError naming a bad one."""
    bounds: dict[str, Bound] = {}
    for text in texts:
        match = _SLO.match(text)
        if not match:
            raise OptionError(f"--slo {text!r}: expected PERCENTILE=LATENCY, e.g. p99=20ms "
                              f"(percentiles {', '.join(SLO_PERCENTILES)}; a bare number is ms)")
        key, value, unit = match.group(1).lower(), float(match.group(2)), (match.group(3) or "ms").lower()
        ms = value * 1000.0 if unit == "s" else value
        if ms <= 0:
            raise OptionError(f"--slo {text!r}: the latency bound must be > 0")
        if key in bounds and bounds[key].ms != ms:
            raise OptionError(f"--slo gives {key} twice ({bounds[key].ms:g} and {ms:g} ms)")
        bounds[key] = Bound(key, ms)
    return sorted(bounds.values(), key=lambda b: b.percentile)


def min_queries(bounds: Sequence[Bound]) -> int:
    """Queries a run needs so that ``TAIL_SAMPLES`` requests lie beyond its highest percentile."""
    top = max(b.percentile for b in bounds)
    return math.ceil(round(TAIL_SAMPLES / (1.0 - top / 100.0), 6))


@dataclass
class SearchSettings:
    """How the capacity search runs; ``min_queries`` defaults to what the bounds need."""

    bounds: list[Bound]
    precision: float = DEFAULT_PRECISION
    min_duration_s: float = MIN_DURATION_S
    min_queries: int | None = None
    max_run_s: float = MAX_RUN_S
    confirm_runs: int = CONFIRM_RUNS
    start_rate: float | None = None
    max_rate: float | None = None
    budget_s: float = DEFAULT_BUDGET_S

    def __post_init__(self):
        if not self.bounds:
            raise OptionError("--slo: give at least one bound, e.g. p99=20ms")
        if not 0 < self.precision < 1:
            raise OptionError(f"--slo-precision {self.precision}: expected a fraction between 0 and 1, e.g. 0.1")
        if self.min_queries is None:
            self.min_queries = min_queries(self.bounds)

    def queries(self, rate: float) -> int:
        """Queries one probe at ``rate`` sends: enough for the percentile and the minimum duration."""
        wanted = max(self.min_queries, math.ceil(rate * self.min_duration_s))
        return max(1, min(wanted, math.ceil(rate * self.max_run_s)))

    def seconds(self, rate: float) -> float:
        """Expected length of one probe at ``rate``."""
        return self.queries(rate) / rate

    def stop_rule(self, total: int) -> StopRule:
        """Stop a run once more requests are over a bound than its percentile allows over ``total``."""
        pairs = tuple((int(b.ms * 1000), total - math.ceil(b.percentile / 100.0 * total)) for b in self.bounds)
        return StopRule(bounds=pairs, max_errors=int(MAX_ERROR_RATE * total))

    def to_dict(self) -> dict[str, Any]:
        return {"bounds": [b.to_dict() for b in self.bounds], "precision": self.precision,
                "min_duration_s": self.min_duration_s, "min_queries": self.min_queries,
                "max_run_s": self.max_run_s, "confirm_runs": self.confirm_runs,
                "start_rate": self.start_rate, "max_rate": self.max_rate, "budget_s": self.budget_s,
                "tail_samples": TAIL_SAMPLES, "max_error_rate": MAX_ERROR_RATE}


@dataclass
class Probe:
    """One run of the search and what it showed."""

    rate: float
    run: RunResult
    passed: bool
    valid: bool
    limited_by: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        r = self.run
        return {"rate": self.rate, "achieved_rps": r.rps, "requests": r.requests, "errors": dict(r.errors),
                "error_rate": r.error_rate, "latency_ms": dict(r.latency_ms), "passed": self.passed,
                "valid": self.valid, "limited_by": self.limited_by, "reason": self.reason,
                "early_stop": r.early_stop, "late_sends": r.late_sends, "late_p99_ms": r.late_p99_ms,
                "service_ms": r.service_ms,
                "scheduled": r.scheduled,
                "elapsed_s": r.elapsed_s}


def judge(run: RunResult, settings: SearchSettings, planned: int) -> Probe:
    """Whether one run met every bound with at most 1% errors, and whether it counts as valid."""
    rate = float(run.rate or 0.0)
    problems = []
    if run.scheduled is not None and run.scheduled < planned and not run.early_stop:
        problems.append(f"sent {run.scheduled} of {planned} queries")
    if run.requests < settings.min_queries and not run.early_stop:
        problems.append(f"{run.requests} queries < {settings.min_queries} a "
                        f"{max(settings.bounds, key=lambda b: b.percentile).key} needs")
    if run.elapsed_s < settings.min_duration_s * 0.95 and not run.early_stop:
        problems.append(f"{run.elapsed_s:.1f} s < the minimum {settings.min_duration_s:g} s")
    planned_s = planned / rate if rate else 0.0
    slip = run.send_slip_s or 0.0
    valid = not problems
    if run.error_rate > MAX_ERROR_RATE:
        what = ", ".join(f"{k}: {v}" for k, v in sorted(run.errors.items()))
        text = f"{100 * run.error_rate:.1f}% errors ({what})"
        if run.first_error:
            text += f"; first: {run.first_error}"
        if run.early_stop:
            text += f"; stopped early: {run.early_stop}"
        return Probe(rate, run, False, valid, "errors", text)
    if run.early_stop:  # counted from when the generator reached each request: the server's doing
        key = next((b.key for b in settings.bounds if f"over {b.ms:g} ms" in run.early_stop), settings.bounds[0].key)
        return Probe(rate, run, False, True, key, f"stopped early: {run.early_stop}")
    if run.requests == 0:
        return Probe(rate, run, False, valid, settings.bounds[0].key, "no request was answered")
    missed = [(b, run.latency_ms.get(b.key)) for b in settings.bounds
              if run.latency_ms.get(b.key) is None or run.latency_ms[b.key] > b.ms]
    if missed:
        text = ", ".join(f"{b.key} {'-' if got is None else f'{got:.2f}'} ms > {b.ms:g} ms" for b, got in missed)
        if _generator_to_blame(run, settings):
            return Probe(rate, run, False, valid, "generator", _late_text(run, text))
        return Probe(rate, run, False, valid, missed[0][0].key, text)
    if planned_s and slip > MAX_SLIP_FRACTION * planned_s:
        return Probe(rate, run, False, valid, "generator",
                     f"the last send left {slip:.2f} s behind its schedule of {planned_s:.1f} s: "
                     "the generator could not offer this rate")
    return Probe(rate, run, True, valid, None,
                 "met " + ", ".join(f"{b.key} {run.latency_ms[b.key]:.2f} ms" for b in settings.bounds)
                 + ("" if valid else " (not valid: " + "; ".join(problems) + ")"))


def _generator_to_blame(run: RunResult, settings: SearchSettings) -> bool:
    """True when the server met every bound counted from when the generator reached each request:
    the misses came from sends that left late (the generator starved of CPU), not the server."""
    if run.service_ms is None or not run.late_p99_ms:
        return False
    return all((run.service_ms.get(b.key) or 0.0) <= b.ms for b in settings.bounds)


def _late_text(run: RunResult, what: str) -> str:
    return (f"{what}, but from the actual sends the server met the bound: the generator sent late "
            f"(p99 {run.late_p99_ms:.1f} ms behind schedule), so this rate could not be offered")


@dataclass
class CapacitySearch:
    """The search for one target: ask ``next_rate``, run it, ``record`` the probe; until ``done``."""

    target: str
    settings: SearchSettings
    start_rate: float
    generator_limit: float | None = None
    probes: list[Probe] = field(default_factory=list)
    lo: float | None = None
    hi: float | None = None
    done: bool = False
    limited_by: str | None = None
    note: str = ""
    _halvings: int = 0
    _capped: bool = False

    def _cap(self) -> float | None:
        caps = [c for c in (self.settings.max_rate, self.generator_limit) if c]
        return min(caps) if caps else None

    def _passes_at(self, rate: float) -> list[Probe]:
        return [p for p in self.probes if p.rate == rate]

    def _finish(self, limited_by: str, note: str = "") -> None:
        self.done, self.limited_by, self.note = True, limited_by, note

    def next_rate(self) -> float | None:
        """The rate to probe next, or None when the search is over."""
        if self.done:
            return None
        cap = self._cap()
        if not self.probes:
            return min(self.start_rate, cap) if cap else self.start_rate
        if self._capped:
            return self._confirm_or_none()
        if self.hi is None:  # bracketing upwards
            if cap and self.lo >= cap * 0.999:
                which = "max_rate" if cap == self.settings.max_rate else "generator"
                self._capped, self.limited_by = True, which
                self.note = f"{self.lo:g} req/s met the bound at the {which.replace('_', ' ')} limit"
                return self._confirm_or_none()
            return min(self.lo * 2, cap) if cap else self.lo * 2
        if self.lo is None:  # bracketing downwards
            return _round_rate(self.hi / 2)
        if (self.hi - self.lo) / self.lo > self.settings.precision:
            return _round_rate((self.lo + self.hi) / 2)
        return self._confirm_or_none()

    def _confirm_or_none(self) -> float | None:
        at_lo = self._passes_at(self.lo) if self.lo is not None else []
        if at_lo and len(at_lo) < self.settings.confirm_runs and all(p.passed for p in at_lo):
            return self.lo
        self.done = True
        if not self.limited_by:
            failing = [p for p in self.probes if p.rate == self.hi and not p.passed]
            self.limited_by = failing[-1].limited_by if failing else None
        return None

    def record(self, probe: Probe) -> None:
        """Move the bracket by one probe's result."""
        self.probes.append(probe)
        rate = probe.rate
        if probe.passed:
            if self.lo is None or rate > self.lo:
                self.lo = rate
            return
        if probe.limited_by == "generator" and self.lo is not None:
            # the server kept up but the generator did not: what passed so far is a lower bound
            self._finish("generator", probe.reason)
            return
        self._capped, self.limited_by, self.note = False, None, ""
        if self.lo is not None and rate <= self.lo:
            # a repeat at the best passing rate failed: that rate is past capacity after all
            passing = sorted({p.rate for p in self.probes if p.rate < rate
                              and all(q.passed for q in self._passes_at(p.rate))})
            self.lo = passing[-1] if passing else None
        self.hi = rate if self.hi is None else min(self.hi, rate)
        if self.lo is None:
            self._halvings += 1
            if self._halvings > MAX_HALVINGS:
                self._finish(probe.limited_by or "slo", f"even {rate:g} req/s missed: {probe.reason}")

    def remaining_probes(self) -> int:
        """A guess at the probes still to run (for the ETA)."""
        if self.done:
            return 0
        confirm = self.settings.confirm_runs
        if self.lo is None or self.hi is None:
            return 2 + math.ceil(math.log2(1 / self.settings.precision)) + confirm
        gap = (self.hi - self.lo) / self.lo
        bisect = max(0, math.ceil(math.log2(max(gap, 1e-9) / self.settings.precision)))
        return bisect + max(0, confirm - len(self._passes_at(self.lo)))

    def stop(self, limited_by: str, note: str) -> None:
        """End the search from outside (time budget)."""
        if not self.done:
            self._finish(limited_by, note)

    def result(self) -> dict[str, Any]:
        """The ``capacity`` entry: rps, latency at that rate, valid, lower_bound, limited_by, runs."""
        runs = [p.to_dict() for p in self.probes]
        if self.lo is None:
            return {"rps": None, "latency_ms": None, "valid": False, "lower_bound": False,
                    "limited_by": self.limited_by, "runs": runs, "upper_rps": self.hi,
                    "confirmations": 0, "note": self.note or "no rate met the bound"}
        at = [p for p in self._passes_at(self.lo) if p.passed]
        lat = {b.key: float(np.median([p.run.latency_ms[b.key] for p in at])) for b in self.settings.bounds}
        measured = self.limited_by not in ("generator", "max_rate", "time_budget")
        confirmed = len(at) >= self.settings.confirm_runs
        return {
            "rps": self.lo,
            "achieved_rps": float(np.median([p.run.rps for p in at])),
            "latency_ms": lat,
            "valid": bool(confirmed and measured and all(p.valid for p in at)),
            "lower_bound": not (confirmed and measured),
            "limited_by": self.limited_by,
            "upper_rps": self.hi,
            "confirmations": len(at),
            "runs": runs,
            "note": self.note,
        }


def _round_rate(rate: float) -> float:
    """Rates to three significant figures, so reports and repeats name the same rate."""
    if rate <= 0:
        return rate
    digits = 3 - int(math.floor(math.log10(rate))) - 1
    return float(round(rate, max(0, digits)))
