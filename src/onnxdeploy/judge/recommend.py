"""Optimize's recommendation: verified, and not measured slower than its input."""

from __future__ import annotations

import math
from typing import Any

from ..measure.latency import MIN_MARGIN
from . import inprocess
from .words import speed_words

#: the name optimize's result has in its latency measurement (the pipeline's name too)
RESULT = "float32-opt"
#: below this speedup a result "measured slower" even when the run's noise margin is wider:
#: two sessions of one file have not been measured further apart than MIN_MARGIN here, and a
#: fused MiniLM that was 0.89-0.96x in every one of five runs sat inside 20-50% margins
SLOWER_THAN = 1 / (1 + MIN_MARGIN)


def recommendation(passed: bool | None, latency: Any | None,
                   name: str = RESULT) -> tuple[bool | None, str]:
    """``(recommended, sentence)``: False when the check failed or the result measured slower.

    Measured slower: slower beyond the run's margin at any batch size (``Latency.speed``
    "slower" or "mixed"), or a speedup below ``SLOWER_THAN`` at any batch size even inside a
    wide margin. Keeping the input costs nothing, recommending a slower graph does: so "equal
    within the noise" only recommends a result whose ratio is at least ``SLOWER_THAN``. None
    when there is nothing to go on (no exercised output, not timed, or a too noisy run).
    """
    if passed is False:
        return False, "the result failed the check against the input; keep the input"
    if passed is None:
        return None, "no output was exercised by this data, so nothing proves the result right"
    speedups = latency.speedup(name) if latency is not None else {}
    if not speedups:
        return None, ("verified; speed not measured in this step (--latency-rounds 0; the pipeline "
                      "times every variant later), so not recommended either way")
    margin = latency.margin
    # the ratio itself always shows: "equal within the noise" must not hide a 0.89x
    where = ", ".join(f"{s:.2f}x the input's speed at {k.replace('_', ' ')}: {speed_words(s, margin)}"
                      for k, s in speedups.items())
    worst_key = min(speedups, key=speedups.get)
    worst = speedups[worst_key]
    at = worst_key.replace("_", " ")
    if inprocess.speed(latency, name) in ("slower", "mixed"):
        return False, f"the optimized model measured {worst:.2f}x the input's speed at {at} ({where}); keep the input"
    if worst < SLOWER_THAN and not math.isclose(worst, SLOWER_THAN):
        return False, (f"the optimized model measured {worst:.2f}x the input's speed at {at}: inside "
                       f"this run's {100 * margin:.0f}% noise margin, but not shown to be as fast "
                       f"({where}); keep the input")
    if latency.too_noisy:
        return None, (f"verified, but the timing was too noisy to tell the speeds apart (A/A noise "
                      f"{100 * latency.noise:.0f}%): {where}; measure again on a quieter machine")
    return True, f"verified and not slower than the input ({where})"
