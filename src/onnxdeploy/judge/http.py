"""Speed over HTTP (or gRPC): two served targets from repeated runs, with the repeats as the A/A.

Repeated runs of one target spread for reasons that have nothing to do with the model (another
process on the cores, the kernel's scheduling of connections onto workers). That spread plays the
part the A/A control plays in process: a difference within it is ``equal``. When either target's
repeats spread by more than ``MAX_SPREAD`` nothing can be ranked, and the answer is
``undecided`` with the spread in the text, never "equal within 80% noise".
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .words import EQUAL, UNDECIDED, call, times

#: runs per target a speed ranking needs
MIN_REPEATS = 3
#: differences smaller than this are never called a difference over HTTP
MIN_MARGIN = 0.05
#: a target whose repeats spread by more than this ((max - min) / median) cannot be ranked
MAX_SPREAD = 0.30


@dataclass(frozen=True)
class Speed:
    """One target against the baseline: the word, the speedup (above 1 is faster), and its evidence."""

    word: str
    speedup: float | None
    margin: float | None
    spread: float | None
    repeats: int
    what: str = "requests/s"
    where: str = ""

    @property
    def ranked(self) -> bool:
        return self.word != UNDECIDED

    def text(self, against: str) -> str:
        """"1.6x faster than float32 over HTTP (requests/s at concurrency 8, 3 repeats, margin 7%)"."""
        at = f" at {self.where}" if self.where else ""
        if self.word == UNDECIDED:
            if self.repeats < MIN_REPEATS:
                return (f"speed against {against} undecided: {self.repeats} repeat(s), "
                        f"{MIN_REPEATS} needed to rank")
            return (f"speed against {against} undecided (spread {100 * (self.spread or 0):.0f}% across "
                    f"{self.repeats} repeats of {self.what}{at}, more than the {100 * MAX_SPREAD:.0f}% "
                    "that can be ranked)")
        evidence = (f"{self.what}{at}, {self.repeats} repeats, margin {100 * (self.margin or 0):.0f}%")
        if self.word == EQUAL:
            return f"equal to {against} over HTTP ({times(self.speedup or 1.0)} its speed; {evidence})"
        s = self.speedup or 1.0
        words = f"{times(s)} faster than" if s >= 1 else f"{times(1 / s)} slower than"
        return f"{words} {against} over HTTP ({evidence})"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Speed:
        return cls(d["speed"], d.get("speedup"), d.get("margin"), d.get("spread"), int(d.get("repeats") or 0),
                   d.get("what") or "requests/s", d.get("where") or "")

    def to_dict(self) -> dict[str, Any]:
        return {"speed": self.word, "speedup": self.speedup, "margin": self.margin,
                "spread": self.spread, "repeats": self.repeats, "what": self.what, "where": self.where}


def rel_spread(values: Sequence[float]) -> float | None:
    """``(max - min) / median`` of repeated figures, or None for no figures."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    med = statistics.median(vals)
    return (max(vals) - min(vals)) / med if med else None


def compare(baseline: Sequence[float], target: Sequence[float], *, higher_is_better: bool = True,
            what: str = "requests/s", where: str = "") -> Speed:
    """``target`` against ``baseline`` from their repeated figures (requests/s, or a latency).

    The speedup is the median of the per-repeat ratios when both ran the same number of repeats
    (bench alternates their order, so a slow moment hits both), else the ratio of the medians.
    """
    a = [float(v) for v in baseline if v is not None and v > 0]
    b = [float(v) for v in target if v is not None and v > 0]
    n = min(len(a), len(b))
    spreads = [s for s in (rel_spread(a), rel_spread(b)) if s is not None]
    spread = max(spreads) if spreads else None
    if n == 0:
        return Speed(UNDECIDED, None, None, spread, 0, what, where)
    if len(a) == len(b):
        ratios = [y / x for x, y in zip(a, b)]
        ratio = statistics.median(ratios)
    else:
        ratio = statistics.median(b) / statistics.median(a)
    speedup = ratio if higher_is_better else 1.0 / ratio
    if n < MIN_REPEATS or spread is None or spread > MAX_SPREAD:
        return Speed(UNDECIDED, speedup, None, spread, n, what, where)
    spread_a, spread_b = rel_spread(a) or 0.0, rel_spread(b) or 0.0
    margin = max(MIN_MARGIN, (spread_a + spread_b) / 2)
    return Speed(call(speedup, margin), speedup, margin, spread, n, what, where)


def same(repeats: int, what: str = "requests/s", where: str = "") -> Speed:
    """The baseline against itself."""
    return Speed(EQUAL, 1.0, 0.0, 0.0, repeats, what, where)


__all__ = ["MAX_SPREAD", "MIN_MARGIN", "MIN_REPEATS", "Speed", "compare", "rel_spread", "same"]
