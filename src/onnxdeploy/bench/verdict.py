"""The verdict: B against A at the highest load level, with the noise and trust caveats."""

from __future__ import annotations

from typing import Any

from .stats import overlaps


def _ratio(b: float | None, a: float | None) -> float | None:
    return b / a if a and b is not None else None


def make_verdict(
    aggregated: list[dict[str, Any]], names: tuple[str, str], accuracy: dict[str, float | None],
) -> dict[str, Any]:
    """Ratios of B to A (rps, p50, p99) at the highest common level, accuracy delta, and a sentence."""
    a_name, b_name = names
    by = {(e["target"], e.get("rate", e["concurrency"])): e for e in aggregated}
    levels = sorted({lvl for (t, lvl) in by if t == a_name} & {lvl for (t, lvl) in by if t == b_name})
    if not levels:
        return {"rps_ratio": None, "p50_ratio": None, "p99_ratio": None, "accuracy_delta": None,
                "text": "no load level measured for both targets", "within_noise": True}
    level = levels[-1]
    a, b = by[(a_name, level)], by[(b_name, level)]
    rps_ratio = _ratio(b["rps"]["median"], a["rps"]["median"])
    p50_ratio = _ratio(b["latency_ms"]["p50"]["median"], a["latency_ms"]["p50"]["median"])
    p99_ratio = _ratio(b["latency_ms"]["p99"]["median"], a["latency_ms"]["p99"]["median"])
    acc_a, acc_b = accuracy.get(a_name), accuracy.get(b_name)
    acc_delta = acc_b - acc_a if acc_a is not None and acc_b is not None else None
    within_noise = overlaps(a["rps"], b["rps"]) and overlaps(a["latency_ms"]["p99"], b["latency_ms"]["p99"])
    mode = a["mode"]
    where = f"rate {level:g}/s" if mode == "open" else f"concurrency {int(level)}"

    parts = [f"{b_name}: {rps_ratio:.2f}x requests/s" if rps_ratio else f"{b_name}: requests/s -"]
    if p50_ratio:
        parts.append(f"p50 {p50_ratio:.2f}x")
    if p99_ratio:
        parts.append(f"p99 {p99_ratio:.2f}x")
    if acc_delta is not None:
        parts.append(f"accuracy {100 * acc_delta:+.1f} pp".replace("-", "\u2212"))
    text = ", ".join(parts) + f" vs {a_name}"
    share = b.get("compute_share")
    if share is not None:
        text += f"; model compute is {100 * share:.0f}% of latency at {where}"
    else:
        text += f" (at {where})"
    notes = []
    if within_noise:
        notes.append("the difference is within the run-to-run spread (min–max ranges of requests/s "
                     "and p99 overlap across repeats): treat the two as equal speed")
    if a.get("generator_bound") or b.get("generator_bound"):
        notes.append("the load generator was near its own ceiling: rates are a lower bound for the server")
    if notes:
        text += ". Note: " + "; ".join(notes)
    return {
        "rps_ratio": rps_ratio, "p50_ratio": p50_ratio, "p99_ratio": p99_ratio,
        "accuracy_delta": acc_delta, "text": text, "within_noise": within_noise,
        "level": level, "mode": mode, "baseline": a_name, "candidate": b_name,
    }
