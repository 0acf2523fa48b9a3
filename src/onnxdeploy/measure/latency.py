"""In-process latency: every variant timed in one interleaved measurement, with an A/A control.

The float model is timed twice, as two sessions of the same file (``control``). How far those two
come apart is the noise of this machine right now; ``Latency.margin`` is the resolution that noise
allows (no difference smaller than it, or than ``MIN_MARGIN``, is real). This module measures
only: the words (faster, equal, slower, mixed, undecided) are the judge's (``judge/inprocess.py``).

Timing has a budget: a round of a session lasts at least ``MIN_ROUND_MS`` (a model answering in
20 µs is timed over hundreds of runs), the number of runs per round shrinks for slow models so a
variant costs about ``budget_s`` over all batch sizes, and a candidate whose fastest round is
already ``DROP_FACTOR`` times the reference's slowest is dropped early (its figure stays, marked).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: batch sizes every latency is measured at (the larger one only for models with a batch axis)
DEFAULT_LATENCY_BATCH = 32
#: seconds of timing each variant may cost, over all batch sizes (``--latency-budget``)
DEFAULT_BUDGET_S = 3.0
#: a round of one session lasts at least this long, so tiny models are timed over many runs
MIN_ROUND_MS = 15.0
MIN_ROUNDS = 3
MAX_ROUNDS = 9
MAX_ITERS = 5000
#: differences smaller than this fraction are never called a difference, however quiet the A/A:
#: two sessions of one file were measured up to 4% apart on a quiet machine here
MIN_MARGIN = 0.05
#: one A/A pair underestimates the spread between any two sessions (identical copies came out 4%
#: apart while the A/A pair was 3% apart): the margin is this many times the A/A noise
MARGIN_FACTOR = 2.0
#: an A/A difference beyond this fraction makes a run too noisy to rank variants
NOISY_THRESHOLD = 0.25
#: after MIN_ROUNDS rounds, a candidate whose fastest round is this many times the reference's
#: slowest round stops being timed: it is clearly slower
DROP_FACTOR = 1.5
REFERENCE = "float32"
CONTROL = "float32 (A/A control)"


@dataclass
class Figure:
    """One latency: median of the per-round medians, the spread across rounds, what it rests on."""

    median_ms: float
    min_ms: float
    max_ms: float
    runs: int
    rounds: int
    dropped_early: bool = False
    #: the per-round medians, in round order (the reference's round i ran next to this one's)
    samples: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {"median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
               "runs": self.runs, "rounds": self.rounds}
        if self.dropped_early:
            out["dropped_early"] = True
        return out


@dataclass
class Latency:
    """The one measurement: figures per variant and batch key, the A/A noise, what was dropped."""

    figures: dict[str, dict[str, Figure]]
    noise_by_batch: dict[str, float]
    budget_s: float
    threads: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def noise(self) -> float:
        """The largest relative A/A difference over the batch sizes (0.06 = 6%)."""
        return max(self.noise_by_batch.values()) if self.noise_by_batch else 0.0

    @property
    def margin(self) -> float:
        """Relative differences within this are called equal."""
        return max(MIN_MARGIN, MARGIN_FACTOR * self.noise)

    @property
    def too_noisy(self) -> bool:
        return self.noise > NOISY_THRESHOLD

    def renamed(self, names: dict[str, str]) -> Latency:
        """The same measurement under other names (``{new: old}``); variants not named dropped.

        The reference and the control always stay. Used to show one measurement under the
        names a report uses (auto's ``dynamic`` is both the pipeline's ``int8-dynamic`` and,
        when auto chose it, its ``int8``).
        """
        keep = {REFERENCE: REFERENCE, CONTROL: CONTROL, **names}
        figures = {new: self.figures[old] for new, old in keep.items() if old in self.figures}
        return Latency(figures, dict(self.noise_by_batch), self.budget_s, self.threads, list(self.notes))

    def median(self, name: str) -> dict[str, float]:
        """``{batch_N: median_ms}`` of one variant."""
        return {k: f.median_ms for k, f in self.figures.get(name, {}).items()}

    def speedup(self, name: str, reference: str = REFERENCE) -> dict[str, float]:
        """``{batch_N: reference time / variant time}`` (above 1 is faster).

        The median of the per-round ratios: the two ran next to each other in every round, so
        a burst of load from another process mostly hits both and cancels out of the ratio.
        """
        ref = self.figures.get(reference, {})
        out = {}
        for k, f in self.figures.get(name, {}).items():
            if k not in ref or f.median_ms <= 0:
                continue
            pairs = [a / b for a, b in zip(ref[k].samples, f.samples) if b > 0]
            out[k] = statistics.median(pairs) if pairs else ref[k].median_ms / f.median_ms
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "median of per-round medians; all variants interleaved in one measurement, "
                      "the float model twice (A/A control)",
            "noise": self.noise,
            "noise_by_batch": self.noise_by_batch,
            "margin": self.margin,
            "too_noisy": self.too_noisy,
            "budget_s": self.budget_s,
            "threads": self.threads,
            "speedup": {name: self.speedup(name) for name in self.figures if name not in (REFERENCE, CONTROL)},
            "variants": {name: {k: f.to_dict() for k, f in figs.items()}
                         for name, figs in self.figures.items() if name != CONTROL},
            "control": {k: f.to_dict() for k, f in self.figures.get(CONTROL, {}).items()},
            "notes": self.notes,
        }


#: untimed runs before each timed block: the session before it evicted this one's weights and
#: buffers from the caches, which otherwise taxes whichever session follows a big one
BLOCK_WARMUP = 2


def _time(session, names, feeds, iters: int) -> float:
    """Median milliseconds of ``iters`` runs, after ``BLOCK_WARMUP`` untimed ones."""
    for _ in range(BLOCK_WARMUP):
        session.run(names, feeds)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        session.run(names, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(
    sessions: dict[str, Any],
    feeds: dict[str, dict[int, dict[str, np.ndarray]]],
    *,
    budget_s: float = DEFAULT_BUDGET_S,
    reference: str = REFERENCE,
    threads: int | None = None,
    droppable: set[str] | None = None,
) -> Latency:
    """Time every session at every batch size in one interleaved measurement.

    ``sessions`` maps a variant name to a session; it must hold ``reference`` and ``CONTROL``
    (a second session of the reference file). ``feeds[name][batch]`` are the inputs of each
    variant at each batch size (variants may name inputs apart). ``droppable`` names the
    variants that may be dropped early when clearly slower (auto's candidates).
    """
    names = list(sessions)
    outputs = {n: [o.name for o in s.get_outputs()] for n, s in sessions.items()}
    batches = sorted(set.intersection(*(set(feeds[n]) for n in names)))
    figures: dict[str, dict[str, Figure]] = {n: {} for n in names}
    noise: dict[str, float] = {}
    notes: list[str] = []
    per_batch_budget = budget_s / max(1, len(batches))
    for batch in batches:
        key = f"batch_{batch}"
        single = {}
        for n in names:  # warm-up, then a short calibration of one run's cost
            sessions[n].run(outputs[n], feeds[n][batch])
            single[n] = max(1e-6, _time(sessions[n], outputs[n], feeds[n][batch], 3))
        plan = {n: _plan(single[n], per_batch_budget) for n in names}
        rounds = min(p[0] for p in plan.values())
        iters = {n: plan[n][1] for n in names}
        results: dict[str, list[float]] = {n: [] for n in names}
        active = list(names)
        rng = random.Random(batch)  # a fixed shuffle: reproducible, and no variant always follows another
        for r in range(rounds):
            order = active if r % 2 == 0 else active[::-1]
            if r >= 2:
                order = rng.sample(active, len(active))
            for n in order:
                results[n].append(_time(sessions[n], outputs[n], feeds[n][batch], iters[n]))
            if r + 1 >= MIN_ROUNDS and droppable:
                slowest_ref = max(results[reference])
                for n in list(active):
                    if n in droppable and min(results[n]) > DROP_FACTOR * slowest_ref:
                        active.remove(n)
        for n in names:
            vals = results[n]
            figures[n][key] = Figure(
                median_ms=statistics.median(vals), min_ms=min(vals), max_ms=max(vals),
                runs=len(vals) * iters[n], rounds=len(vals), dropped_early=len(vals) < rounds,
                samples=tuple(vals))
        noise[key] = _aa_noise(results[reference], results[CONTROL])
    dropped = sorted({n for n in names for f in figures[n].values() if f.dropped_early})
    if dropped:
        notes.append(f"dropped early as clearly slower (fastest round > {DROP_FACTOR}x the float "
                     f"model's slowest): {', '.join(dropped)}")
    return Latency(figures, noise, budget_s, threads, notes)


def _aa_noise(a: list[float], b: list[float]) -> float:
    """Relative A/A difference, measured the way variants are compared (median of per-round
    ratios), or of the two medians, whichever is larger.

    The two sessions run the same file side by side in every round, so any gap between them is
    the machine's noise; one lucky pair of medians must not make a loaded machine look quiet.
    """
    ma, mb = statistics.median(a), statistics.median(b)
    of_medians = abs(ma - mb) / min(ma, mb) if min(ma, mb) > 0 else 0.0
    ratios = [x / y for x, y in zip(a, b) if y > 0 and x > 0]
    paired = abs(math.exp(abs(math.log(statistics.median(ratios)))) - 1) if ratios else 0.0
    spread = statistics.median(abs(math.log(r)) for r in ratios) if ratios else 0.0
    return max(of_medians, paired, math.expm1(spread))


def _plan(single_ms: float, budget_s: float) -> tuple[int, int]:
    """``(rounds, runs per round)`` for a session whose one run costs ``single_ms``."""
    iters = max(1, int(math.ceil(MIN_ROUND_MS / single_ms)))
    iters = min(iters, MAX_ITERS)
    per_round_ms = iters * single_ms
    rounds = int(budget_s * 1e3 // per_round_ms) if per_round_ms > 0 else MAX_ROUNDS
    if rounds < MIN_ROUNDS:
        # a slow model: fewer runs per round before fewer rounds; never under MIN_ROUNDS rounds
        iters = max(1, int(budget_s * 1e3 // (MIN_ROUNDS * single_ms)))
        rounds = MIN_ROUNDS
    return min(MAX_ROUNDS, rounds), iters
