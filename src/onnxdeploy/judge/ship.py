"""The shipping rule: which served variant to ship, and why, in one sentence.

Ship the fastest admissible variant on the served workload; among the variants within the noise of
the fastest, the smallest (sizes within ``SAME_SIZE`` tie); then the simplest (``SIMPLICITY``).
A variant that was not served cannot ship. When the served speed comparison is ``undecided`` the
decision rests on size and quality, and the sentence says so (``rested_on``). The one rule serves
bench's two-target verdict and the pipeline's; nothing else says "Ship".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .http import Speed
from .words import UNDECIDED, times

#: simplest first: the float model, its optimized graph, int8 recipes, then other runtimes
SIMPLICITY = ("float32", "float32-opt", "int8-dynamic", "int8", "float32-openvino", "bf16-openvino")
#: files within this factor of the smallest count as the same size
SAME_SIZE = 1.05


@dataclass
class Contender:
    """What the rule knows about one variant."""

    name: str
    size_bytes: int | None
    #: within its quality bound (accuracy, agreement or min cosine), in process and served
    admissible: bool = True
    why_not: str = ""
    served: bool = True
    #: against the baseline on the served workload; the baseline's own is ``http.same``
    speed: Speed | None = None
    #: the in-process evidence in words ("equal at batch 1, 1.4x faster at batch 32")
    in_process: str = ""
    label: str = ""
    accuracy_delta: float | None = None
    quality: str = ""
    #: how the sentence names it when not by ``name`` and ``label``: a variant on another runtime
    #: ("float32 on OpenVINO (bf16)")
    shown: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size_bytes": self.size_bytes, "admissible": self.admissible,
                "why_not": self.why_not or None, "served": self.served,
                "speed": self.speed.to_dict() if self.speed else None,
                "in_process": self.in_process or None, "accuracy_delta": self.accuracy_delta}


@dataclass
class Decision:
    """``ship`` names a contender; ``rested_on`` is "speed", "size", "simplicity" or "size and quality"."""

    ship: str
    text: str
    rested_on: str
    speed: str
    considered: list[Contender] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ship": self.ship, "text": self.text, "rested_on": self.rested_on, "speed": self.speed,
                "considered": [c.to_dict() for c in self.considered]}


def _rank(name: str, order: tuple[str, ...]) -> int:
    return order.index(name) if name in order else len(order)


def decide(contenders: list[Contender], *, baseline: str = "float32",
           simplicity: tuple[str, ...] = SIMPLICITY) -> Decision:
    """Apply the rule. ``contenders`` must hold the baseline, which is always admissible and served."""
    base = next(c for c in contenders if c.name == baseline)
    pool = [c for c in contenders if c.admissible and c.served] or [base]
    order = tuple(simplicity) if baseline in simplicity else (baseline, *simplicity)
    undecided = any(c.speed is None or c.speed.word == UNDECIDED for c in pool if c.name != baseline)
    if undecided:
        ties = list(pool)
    else:
        def score(c: Contender) -> float:
            return 1.0 if c.name == baseline else float(c.speed.speedup or 0.0)

        fastest = max(pool, key=score)
        margin = max((c.speed.margin or 0.0) for c in pool if c.speed is not None) if pool else 0.0
        ties = [c for c in pool if score(c) * (1 + margin) >= score(fastest)]
    sized = [c.size_bytes for c in ties if c.size_bytes]
    smallest = min(sized) if sized else None
    by_size = [c for c in ties if smallest is None or not c.size_bytes or c.size_bytes <= smallest * SAME_SIZE]
    best = min(by_size, key=lambda c: _rank(c.name, order))
    if undecided:
        rested_on = "size and quality"
    elif len(ties) == 1:
        rested_on = "speed"
    elif len(by_size) == 1:
        rested_on = "size"
    else:
        rested_on = "simplicity"
    speed_word = "equal" if best.name == baseline else (best.speed.word if best.speed else UNDECIDED)
    if best.name == baseline and undecided:
        speed_word = UNDECIDED
    text = _sentence(best, base, contenders, ties, rested_on, undecided)
    return Decision(best.name, text, rested_on, speed_word, list(contenders))


def _facts(best: Contender, base: Contender) -> list[str]:
    out = []
    if best.name != base.name and best.size_bytes and base.size_bytes and best.size_bytes != base.size_bytes:
        r = base.size_bytes / best.size_bytes
        out.append(f"{times(r)} smaller" if r > 1 else f"{times(1 / r)} larger")
    if best.accuracy_delta is not None and best.name != base.name:
        out.append(f"accuracy {100 * best.accuracy_delta:+.1f} pp".replace("-", "\u2212"))
    if best.quality:
        out.append(best.quality)
    return out


def _sentence(best: Contender, base: Contender, cands: list[Contender], ties: list[Contender],
              rested_on: str, undecided: bool) -> str:
    label = f" ({best.label})" if best.label else ""
    parts: list[str] = []
    if undecided:
        speeds = [c.speed.text(base.name) for c in cands
                  if c.name != base.name and c.served and c.speed is not None and c.speed.word == UNDECIDED]
        parts.append("; ".join(speeds) or "speed over the served workload undecided")
        parts.append("so the decision rests on size and quality")
    elif best.name == base.name:
        parts.append(f"the baseline, and no admissible served variant beats it ({'; '.join(_not_shipped(cands, base, base.name)) or 'no other variant'})")
    else:
        parts.append(best.speed.text(base.name))
        if rested_on != "speed":
            parts.append(f"the {'smallest' if rested_on == 'size' else 'simplest'} of {len(ties)} "
                         "variants within the noise of the fastest")
    parts.extend(_facts(best, base))
    if best.in_process:
        parts.append(f"in process {best.in_process}")
    others = [] if best.name == base.name and not undecided else _not_shipped(cands, best, base.name)
    text = f"Ship {best.shown or best.name + label}: " + ", ".join(parts) + "."
    if others:
        text += " Not shipped: " + "; ".join(others) + "."
    if undecided:
        text += " To rank speed, rerun with more repeats (--repeats) on a quieter machine."
    return text


def _why(c: Contender, base: str) -> str:
    if not c.admissible:
        return f"{c.name} {c.why_not or 'misses its quality bound'}"
    if not c.served:
        return f"{c.name} was not served" + (f" (in process {c.in_process})" if c.in_process else "")
    if c.speed is not None:
        return f"{c.name} {c.speed.text(base)}"
    return f"{c.name} not compared"


def _not_shipped(cands: list[Contender], best: Contender, base: str) -> list[str]:
    return [_why(c, base) for c in cands if c.name != best.name and c.name != base]


__all__ = ["SAME_SIZE", "SIMPLICITY", "Contender", "Decision", "decide"]
