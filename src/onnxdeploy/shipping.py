"""The verdict of a pipeline run: which variant to ship, and why, in one sentence.

Ship the smallest variant that is within the accuracy bound and not slower beyond the noise, in
process and (where it was served) over HTTP; ties go to the simplest. Never empty: when nothing
beats the float model, the answer is the float model and the sentence says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .measure import Measurement, speed_words
from .measure.latency import REFERENCE

#: simplest first
SIMPLICITY = ("float32", "float32-opt", "int8-dynamic", "int8")
SAME_SIZE = 1.05


@dataclass
class Candidate:
    """What the verdict knows about one variant."""

    name: str
    size_bytes: int
    accuracy_ok: bool
    accuracy_delta: float | None
    in_process: str  # faster | equal | slower | mixed | not measured
    http: str | None  # faster | equal | slower | None when not served
    label: str = ""


def http_speed(bench: dict[str, Any] | None, target: str, baseline: str = REFERENCE) -> str | None:
    """``faster``/``equal``/``slower`` of a served target against the baseline, from bench's verdict."""
    if not bench or target == baseline:
        return "equal" if bench and target == baseline else None
    v = bench.get("verdict") or {}
    if v.get("candidate") != target or v.get("baseline") != baseline:
        return None  # not served in this bench
    if v.get("within_noise") or v.get("rps_ratio") is None:
        return "equal"
    return "faster" if v["rps_ratio"] > 1 else "slower"


def candidates(m: Measurement, names: dict[str, str], bench: dict[str, Any] | None,
               accuracy_ok: dict[str, bool], labels: dict[str, str]) -> list[Candidate]:
    """One Candidate per variant name of ``names``, looked up in ``m`` under that name."""
    out = []
    ref_acc = m.reference.accuracy
    for name in names:
        r = m.results[name]
        delta = None if ref_acc is None or r.accuracy is None else r.accuracy - ref_acc
        speed = "equal" if name == REFERENCE else (m.latency.speed(name) if m.latency else "not measured")
        out.append(Candidate(name, r.variant.size_bytes, accuracy_ok.get(name, True), delta, speed,
                             http_speed(bench, name), labels.get(name, "")))
    return out


def decide(cands: list[Candidate], *, margin: float, compute_share: float | None,
           served: bool, too_noisy: bool = False) -> dict[str, Any]:
    """``{ship, text, considered}``: the smallest admissible variant that is not slower."""
    def ok(c: Candidate) -> bool:
        if not c.accuracy_ok or c.in_process in ("slower", "mixed"):
            return False
        if served:
            return c.http in ("equal", "faster")
        return True

    pool = [c for c in cands if ok(c)] or [c for c in cands if c.name == REFERENCE]
    rank = {n: i for i, n in enumerate(SIMPLICITY)}
    # sizes within SAME_SIZE of the smallest count as equal (float32-opt vs float32): the simplest wins
    smallest = min(c.size_bytes for c in pool)
    best = min((c for c in pool if c.size_bytes <= smallest * SAME_SIZE), key=lambda c: rank.get(c.name, 99))
    ref = next(c for c in cands if c.name == REFERENCE)
    text = _sentence(best, ref, cands, margin, compute_share, served)
    if too_noisy:
        text += (f" In-process timing was noisy: differences under {100 * margin:.0f}% (twice the A/A "
                 "control's gap) were called equal; rerun on a quieter machine to tell them apart.")
    return {"ship": best.name, "text": text, "too_noisy": too_noisy,
            "considered": [c.__dict__ for c in cands]}


def _sentence(best: Candidate, ref: Candidate, cands: list[Candidate], margin: float,
              compute_share: float | None, served: bool) -> str:
    label = f" ({best.label})" if best.label else ""
    if best.name == REFERENCE:
        reasons = []
        for c in cands:
            if c.name == REFERENCE:
                continue
            if not c.accuracy_ok:
                reasons.append(f"{c.name} misses the quality bound (accuracy, or min cosine to float32)")
            elif c.in_process in ("slower", "mixed"):
                reasons.append(f"{c.name} is slower in process")
            elif served and c.http == "slower":
                reasons.append(f"{c.name} is slower over HTTP")
            elif served and c.http is None:
                reasons.append(f"{c.name} was not served")
            else:
                reasons.append(f"{c.name} is no smaller")
        return f"Ship float32: {'; '.join(reasons) or 'no other variant'}."
    parts = [f"{ref.size_bytes / best.size_bytes:.1f}x smaller" if best.size_bytes else "same size"]
    if best.accuracy_delta is not None:
        parts.append(f"accuracy {100 * best.accuracy_delta:+.1f} pp".replace("-", "\u2212"))
    parts.append(f"{best.in_process} in process" if best.in_process != "equal"
                 else f"equal speed in process (within {100 * margin:.0f}% noise)")
    if served and best.http is not None:
        http = f"{best.http} speed over HTTP" if best.http == "equal" else f"{best.http} over HTTP"
        if compute_share is not None:
            http += f" (model compute is {100 * compute_share:.0f}% of a request's time in the server)"
        parts.append(http)
    return f"Ship {best.name}{label}: " + ", ".join(parts) + "."


__all__ = ["Candidate", "candidates", "decide", "http_speed", "speed_words"]
