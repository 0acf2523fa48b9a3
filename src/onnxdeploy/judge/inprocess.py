"""In-process speed: a variant against the float model, per batch size, from one interleaved measurement.

The measurement (``measure.latency.Latency``) gives per-round ratios and the A/A noise; its
``margin`` is the resolution that noise allows. Here that becomes a word: ``equal`` within the
margin at every batch size, ``faster``/``slower`` beyond it, ``mixed`` when the batch sizes
disagree, ``undecided`` where the A/A control itself came apart by more than the noisy threshold
and the difference stays within that (wide) margin.
"""

from __future__ import annotations

from typing import Any

from .words import EQUAL, UNDECIDED, call, combine, ratio_words, speed_words

REFERENCE = "float32"


def speed(latency: Any, name: str, reference: str = REFERENCE) -> str:
    """One word for ``name`` against ``reference`` over every batch size measured."""
    speedups = latency.speedup(name, reference)
    if not speedups:
        return EQUAL if name == reference else UNDECIDED
    words = [call(s, latency.margin) for s in speedups.values()]
    if latency.too_noisy:
        # a run whose A/A came apart cannot call anything equal, but a difference far beyond
        # even that margin (22x against a 64% margin) is still a finding
        words = [UNDECIDED if w == EQUAL else w for w in words]
    return combine(words)


def worst_speedup(latency: Any, name: str, reference: str = REFERENCE) -> float:
    """The smallest speedup over the batch sizes: how this variant does at its worst."""
    s = latency.speedup(name, reference)
    return min(s.values()) if s else 0.0


def speed_text(latency: Any, name: str, reference: str = REFERENCE) -> str:
    """"1.07x slower at batch 1, 1.4x faster at batch 32" (every batch size, with the noise)."""
    parts = [f"{speed_words(s, latency.margin)} at {k.replace('_', ' ')}"
             for k, s in latency.speedup(name, reference).items()]
    text = ", ".join(parts) or "not timed"
    if latency.too_noisy:
        text += f" (A/A control {100 * latency.noise:.0f}% apart: undecided)"
    return text


def short_text(latency: Any, name: str, reference: str = REFERENCE) -> str:
    """The same without the noise figure: "equal at batch 1, 1.4x faster at batch 32"."""
    return ", ".join(f"{ratio_words(s, call(s, latency.margin))} at {k.replace('_', ' ')}"
                     for k, s in latency.speedup(name, reference).items()) or "not timed"


def dominates(latency: Any, a: str, b: str) -> bool:
    """True when ``a`` is at least as fast as ``b`` at every batch size (within the margin) and
    faster beyond it at one: the two ran side by side, so the ratio of their speedups is fair."""
    sa, sb = latency.speedup(a), latency.speedup(b)
    keys = set(sa) & set(sb)
    if not keys or latency.too_noisy:
        return False
    words = [call(sa[k] / sb[k], latency.margin) for k in keys if sb[k] > 0]
    return "slower" not in words and "faster" in words


__all__ = ["UNDECIDED", "dominates", "short_text", "speed", "speed_text", "worst_speedup"]
