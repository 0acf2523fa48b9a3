"""Whether optimize recommends its result: verified, and not measured slower than its input."""

from __future__ import annotations

from ..measure import Latency, speed_words

#: the name optimize's result has in its latency measurement (the pipeline's name too)
RESULT = "float32-opt"


def recommendation(passed: bool | None, latency: Latency | None,
                   name: str = RESULT) -> tuple[bool | None, str]:
    """``(recommended, sentence)``: False when the check failed or the result measured slower.

    Slower means beyond the measurement's margin (its A/A noise, at least 5%) at any batch size;
    a result faster at one batch size and slower at another is not recommended either, and the
    sentence says where. None when there is nothing to go on (no exercised output, or verified
    but not timed).
    """
    if passed is False:
        return False, "the result failed the check against the input; keep the input"
    if passed is None:
        return None, "no output was exercised by this data, so nothing proves the result right"
    if latency is None:
        return None, "verified; speed not measured (--latency-rounds 0), so not recommended either way"
    speedups = latency.speedup(name)
    if not speedups:
        return None, "verified; speed not measured, so not recommended either way"
    margin = latency.margin
    # the ratio itself always shows: "equal within the noise" must not hide a 0.89x
    where = ", ".join(f"{s:.2f}x the input's speed at {k.replace('_', ' ')}: {speed_words(s, margin)}"
                      for k, s in speedups.items())
    call = latency.speed(name)
    if latency.too_noisy and call not in ("slower", "mixed"):
        return None, (f"verified, but the timing was too noisy to tell the speeds apart (A/A noise "
                      f"{100 * latency.noise:.0f}%): {where}; measure again on a quieter machine")
    if call in ("slower", "mixed"):
        worst_key = min(speedups, key=speedups.get)
        return False, (f"the optimized model measured {speedups[worst_key]:.2f}x the input's speed at "
                       f"{worst_key.replace('_', ' ')} ({where}); keep the input")
    return True, f"verified and not slower than the input ({where})"
