"""Auto's choice among int8 candidates, judged the way the shipping rule judges: on every batch size.

A candidate is *ship-admissible in process* when it is within the quality bound, has an int8
operator, and is not slower than the float model at any batch size measured (``faster`` or
``equal``; ``mixed`` is not). Among those, the ones no other beats at every batch size (the
two ran side by side, so their ratio is fair) are the fastest; among them the smallest file, then
the simplest recipe. Only when no candidate is ship-admissible does the choice fall back to the
best worst-case speed, and it says what it gave up. So whenever some candidate could ship, the
chosen one can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import inprocess
from .words import EQUAL, FASTER, UNDECIDED

#: candidates of equal speed whose files are within this factor of the smallest count as a tie
SIZE_TIE = 1.10


@dataclass
class Choice:
    """The chosen name (None when nothing is admissible), the sentence, and whether it keeps pace."""

    name: str | None
    reason: str
    #: False when the chosen candidate is slower or mixed against float (the caller decides
    #: whether that is allowed); True for faster, equal or undecided
    keeps_pace: bool


def ship_admissible(latency: Any, name: str) -> bool:
    """Not slower than float at any batch size (undecided counts: nothing showed it slower)."""
    return inprocess.speed(latency, name) in (FASTER, EQUAL, UNDECIDED)


def choose(candidates: Sequence[Any], latency: Any, *, simplicity: Sequence[str],
           criterion: str = "accuracy", tolerance: float = 0.0) -> Choice:
    """``candidates`` have ``name``, ``size_bytes`` and ``admissible``; ``latency`` may be None."""
    order = list(simplicity)

    def rank(c) -> int:
        return order.index(c.name) if c.name in order else len(order)

    admissible = [c for c in candidates if c.admissible]
    if not admissible:
        return Choice(None, f"no candidate kept {criterion.replace('_', ' ')} within {tolerance} with an "
                            "int8 operator in it; no model written", False)
    if latency is None:
        best = min(admissible, key=rank)
        return Choice(best.name, f"Chose {best.name}, the simplest admissible candidate (latency not measured).",
                      True)
    pool = [c for c in admissible if ship_admissible(latency, c.name)]
    fallback = not pool
    if fallback:
        # nothing keeps pace at every batch size: the best worst case, and say so
        top = max(inprocess.worst_speedup(latency, c.name) for c in admissible)
        front = [c for c in admissible
                 if inprocess.worst_speedup(latency, c.name) * (1 + latency.margin) >= top]
    else:
        front = [c for c in pool if not any(inprocess.dominates(latency, o.name, c.name)
                                            for o in pool if o is not c)]
    smallest = min((c.size_bytes or 0) for c in front)
    ties = [c for c in front if (c.size_bytes or 0) <= smallest * SIZE_TIE] or front
    best = min(ties, key=rank)
    evidence = inprocess.speed_text(latency, best.name)
    tie_note = (f"; {len(front)} candidates are not separable by speed at every batch size, "
                "the smallest and then the simplest wins" if len(front) > 1 else "")
    if fallback:
        return Choice(best.name, (
            f"No int8 candidate is as fast as the float model at every batch size (best: {best.name}, "
            f"{evidence}, vs float{tie_note})."), False)
    left_out = [c.name for c in admissible if c not in pool]
    out_note = (f"; left out as slower at some batch size: {', '.join(left_out)}" if left_out else "")
    return Choice(best.name, (
        f"Chose {best.name}, the fastest of {len(pool)} candidate(s) that are admissible and not slower "
        f"at any batch size{tie_note}{out_note} ({evidence}, vs float)."), True)


__all__ = ["SIZE_TIE", "Choice", "choose", "ship_admissible"]
