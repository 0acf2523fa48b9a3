"""The verdict: which target to ship and why, in one sentence, never more confident than the data.

Ratios stay in JSON as they were (``rps_ratio`` B/A, ``p50_ratio``/``p99_ratio`` latency B/A);
``speedup`` says the same the other way round (A time / B time, B rps / A rps: above 1 means B is
faster). Text uses words: "2.1x faster", "5.2x slower", "equal (within 6% noise)". Fewer than
``MIN_REPEATS`` repeats never rank two targets; a difference within the run-to-run spread is
equal. Shipping: the smallest target within the accuracy bound and not slower beyond the noise.
For an embedding model quality is the candidate's min cosine to the baseline's in-process
embeddings (``quality``): below ``min_cosine`` it is out, as a candidate past the accuracy bound is.
"""

from __future__ import annotations

from typing import Any

from ..report.fmt import speed_phrase as speed_words
from ..report.fmt import times
from .stats import overlaps

#: why a capacity is only a lower bound, in words
LIMIT_WORDS = {"time_budget": "the time budget ran out", "generator": "the load generator's ceiling",
               "max_rate": "the --slo-max-rate cap"}
#: runs per target and level a speed ranking needs
MIN_REPEATS = 3
#: the accuracy a smaller target may lose and still ship (a fraction: 0.01 is one point)
DEFAULT_MAX_ACCURACY_DROP = 0.01


def _ratio(b: float | None, a: float | None) -> float | None:
    return b / a if a and b is not None else None


def _pp(delta: float) -> str:
    return f"accuracy {100 * delta:+.1f} pp".replace("-", "\u2212")


def _size_words(sizes: dict[str, int | None], ship: str, other: str) -> str | None:
    a, b = sizes.get(ship), sizes.get(other)
    if not a or not b or a == b:
        return None
    return f"{times(b / a)} smaller" if a < b else f"{times(a / b)} larger"


def quality_miss(quality: dict[str, dict[str, Any]] | None, name: str) -> str | None:
    """Why ``name`` misses its embedding-quality bound (min cosine to the baseline), else None."""
    q = (quality or {}).get(name) or {}
    if q.get("kind") != "cosine" or q.get("passed") is not False:
        return None
    return (f"{name}'s min cosine to {q['reference']} is {q['min_cosine']:.4f} "
            f"(bound {q['min_cosine_bound']:g})")


def _cosine_words(quality: dict[str, dict[str, Any]] | None, names: tuple[str, str]) -> str | None:
    """"min cosine 0.9871 to float32 (mean 0.9958)" for the target that is not the reference."""
    for name in names[::-1]:
        q = (quality or {}).get(name) or {}
        if q.get("kind") == "cosine" and q.get("min_cosine") is not None and q.get("reference") != name:
            return (f"{name} min cosine {q['min_cosine']:.4f} to {q['reference']} (mean {q['mean_cosine']:.4f}"
                    + (f", nearest neighbours {100 * q['nn_agreement']:.0f}% agree" if q.get("nn_agreement")
                       is not None else "") + ")")
    return None


def _cosines(quality: dict[str, dict[str, Any]] | None) -> dict[str, float | None] | None:
    found = {n: q.get("min_cosine") for n, q in (quality or {}).items() if q and q.get("kind") == "cosine"}
    return found or None


def _bound(quality: dict[str, dict[str, Any]] | None) -> str:
    return "quality" if _cosines(quality) else "accuracy"


def choose(names: tuple[str, str], *, b_speed: int, acc_delta: float | None, sizes: dict[str, int | None],
           max_accuracy_drop: float, quality_fail: str | None = None, bound: str = "accuracy") -> tuple[str, str]:
    """``(ship, reason)``; ``b_speed`` is +1 (B faster beyond noise), -1 (slower) or 0 (equal/unranked).

    ``quality_fail`` says why B misses a quality bound other than accuracy (an embedding's min
    cosine): such a B is out exactly like one past the accuracy bound. ``bound`` names the bound
    in the reason ("accuracy", or "quality" for embeddings).
    """
    a_name, b_name = names
    acc_ok = acc_delta is None or acc_delta >= -max_accuracy_drop
    keep = [n for n, slower in ((a_name, b_speed > 0), (b_name, b_speed < 0)) if not slower]
    if (not acc_ok or quality_fail) and b_name in keep:
        keep.remove(b_name)
    miss = (quality_fail if quality_fail and acc_ok else
            f"{b_name} loses {100 * -(acc_delta or 0):.1f} pp of accuracy (bound {100 * max_accuracy_drop:g} pp)")
    if not keep:
        return a_name, miss
    big = float("inf")
    ship = min(keep, key=lambda n: (sizes.get(n) or big, n != a_name))
    if ship == a_name and b_name not in keep:
        why = miss if (not acc_ok or quality_fail) else f"{b_name} is slower beyond the noise"
    elif sizes.get(a_name) and sizes.get(b_name) and sizes[a_name] != sizes[b_name]:
        why = f"smallest within the {bound} bound and not slower"
    else:
        why = "the baseline; the other does not beat it beyond the noise"
    return ship, why


def make_verdict(
    aggregated: list[dict[str, Any]], names: tuple[str, str], accuracy: dict[str, float | None],
    *, sizes: dict[str, int | None] | None = None, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    quality: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """B against A at the highest common load level: ratios, speedups, which to ship and why."""
    a_name, b_name = names
    sizes = sizes or {}
    by = {(e["target"], e.get("rate", e["concurrency"])): e for e in aggregated}
    levels = sorted({lvl for (t, lvl) in by if t == a_name} & {lvl for (t, lvl) in by if t == b_name})
    acc_a, acc_b = accuracy.get(a_name), accuracy.get(b_name)
    acc_delta = acc_b - acc_a if acc_a is not None and acc_b is not None else None
    if not levels:
        ship, why = choose(names, b_speed=0, acc_delta=acc_delta, sizes=sizes, max_accuracy_drop=max_accuracy_drop,
                           quality_fail=quality_miss(quality, b_name), bound=_bound(quality))
        return {"rps_ratio": None, "p50_ratio": None, "p99_ratio": None, "speedup": {}, "accuracy_delta": acc_delta,
                "min_cosine": _cosines(quality), "ship": ship, "within_noise": True, "ranked": False,
                "text": f"Ship {ship}: {why}; no load level was measured for both targets."}
    level = levels[-1]
    a, b = by[(a_name, level)], by[(b_name, level)]
    rps_ratio = _ratio(b["rps"]["median"], a["rps"]["median"])
    p50_ratio = _ratio(b["latency_ms"]["p50"]["median"], a["latency_ms"]["p50"]["median"])
    p99_ratio = _ratio(b["latency_ms"]["p99"]["median"], a["latency_ms"]["p99"]["median"])
    speedup = {"rps": rps_ratio, "p50": _ratio(1.0, p50_ratio), "p99": _ratio(1.0, p99_ratio)}
    repeats = min(a["repeats"], b["repeats"])
    ranked = repeats >= MIN_REPEATS
    mode = a["mode"]
    # closed loop: requests/s tells the two apart; open loop offers both the same rate, so p99 does
    key_a, key_b = (a["latency_ms"]["p99"], b["latency_ms"]["p99"]) if mode == "open" else (a["rps"], b["rps"])
    within_noise = overlaps(key_a, key_b)
    spreads = [s for s in (key_a.get("rel_spread"), key_b.get("rel_spread")) if s is not None]
    noise = max(spreads) if spreads else None
    where = f"rate {level:g}/s" if mode == "open" else f"concurrency {int(level)}"
    lead = speedup["p99"] if mode == "open" else rps_ratio
    b_speed = 0 if (not ranked or within_noise or lead is None) else (1 if lead > 1 else -1)
    ship, why = choose(names, b_speed=b_speed, acc_delta=acc_delta, sizes=sizes, max_accuracy_drop=max_accuracy_drop,
                       quality_fail=quality_miss(quality, b_name), bound=_bound(quality))
    other = b_name if ship == a_name else a_name
    if not ranked:
        speed = f"not enough repeats to rank speed ({repeats} per target, {MIN_REPEATS} needed)"
    else:
        word = speed_words(lead if ship == b_name else _ratio(1.0, lead), equal=b_speed == 0, noise=noise)
        what = "p99" if mode == "open" else "requests/s"
        speed = f"{word} over HTTP ({what} at {where})"
    facts = [f for f in (_size_words(sizes, ship, other),
                         _pp(acc_delta if ship == b_name else -acc_delta) if acc_delta is not None else None,
                         _cosine_words(quality, names), speed) if f]
    text = f"Ship {ship} ({why}): " + ", ".join(facts) + f" against {other}"
    share = b.get("compute_share")
    if share is not None:
        text += f"; model compute is {100 * share:.0f}% of a request's time in the server"
    if a.get("generator_bound") or b.get("generator_bound"):
        text += "; the load generator was near its own ceiling, so rates are a lower bound"
    return {
        "rps_ratio": rps_ratio, "p50_ratio": p50_ratio, "p99_ratio": p99_ratio, "speedup": speedup,
        "accuracy_delta": acc_delta, "min_cosine": _cosines(quality), "text": text + ".",
        "within_noise": within_noise or not ranked,
        "ranked": ranked and not within_noise, "noise": noise, "repeats": repeats, "ship": ship,
        "level": level, "mode": mode, "baseline": a_name, "candidate": b_name,
    }


def capacity_verdict(
    capacity: dict[str, dict[str, Any]], names: tuple[str, str], accuracy: dict[str, float | None], *,
    bounds_label: str, precision: float, sizes: dict[str, int | None] | None = None,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP, quality: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """B against A by the traffic each sustains within the SLO ("2.3x the traffic ... (840 vs 365 req/s)")."""
    a_name, b_name = names
    sizes = sizes or {}
    ca, cb = capacity[a_name], capacity[b_name]
    ra, rb = ca.get("rps"), cb.get("rps")
    acc_a, acc_b = accuracy.get(a_name), accuracy.get(b_name)
    acc_delta = acc_b - acc_a if acc_a is not None and acc_b is not None else None
    ratio = _ratio(rb, ra)

    def fig(c):
        return "-" if c.get("rps") is None else ("at least " if c["lower_bound"] else "") + f"{c['rps']:,.0f}"

    equal = ratio is not None and 1 / (1 + precision) <= ratio <= 1 + precision
    # a lower bound only ranks when it is the higher figure (the other one is a measured limit)
    rankable = ratio is not None and not equal and (
        (ratio > 1 and not ca["lower_bound"]) or (ratio < 1 and not cb["lower_bound"]))
    b_speed = 0 if not rankable else (1 if ratio > 1 else -1)
    ship, why = choose(names, b_speed=b_speed, acc_delta=acc_delta, sizes=sizes, max_accuracy_drop=max_accuracy_drop,
                       quality_fail=quality_miss(quality, b_name), bound=_bound(quality))
    figures = f"({fig(cb)} vs {fig(ca)} req/s)"
    if ratio is None:
        traffic = f"capacity at {bounds_label} could not be compared ({a_name} {fig(ca)}, {b_name} {fig(cb)} req/s)"
    elif equal:
        traffic = (f"{b_name} and {a_name} sustain the same traffic at {bounds_label} within the search's "
                   f"{100 * precision:.0f}% precision {figures}")
    elif not rankable:
        low = a_name if ca["lower_bound"] else b_name
        traffic = (f"cannot rank the traffic at {bounds_label}: {low}'s capacity is only a lower bound "
                   f"({LIMIT_WORDS.get(capacity[low]['limited_by'], capacity[low]['limited_by'])}) {figures}")
    elif ratio > 1:
        traffic = (f"{b_name} sustains {'at least ' if cb['lower_bound'] else ''}{times(ratio)} the traffic "
                   f"of {a_name} at {bounds_label} {figures}")
    else:
        traffic = (f"{a_name} sustains {'at least ' if ca['lower_bound'] else ''}{times(1 / ratio)} the traffic "
                   f"of {b_name} at {bounds_label} ({fig(ca)} vs {fig(cb)} req/s)")
    other = b_name if ship == a_name else a_name
    extra = [f for f in (_size_words(sizes, ship, other),
                         _pp(acc_delta if ship == b_name else -acc_delta) if acc_delta is not None else None,
                         _cosine_words(quality, names)) if f]
    text = f"{traffic[0].upper()}{traffic[1:]}. Ship {ship} ({why}" + (": " + ", ".join(extra) if extra else "") + ")."
    return {"capacity_ratio": ratio, "speedup": {"capacity": ratio}, "accuracy_delta": acc_delta,
            "min_cosine": _cosines(quality), "ship": ship,
            "within_noise": not rankable, "ranked": rankable, "text": text, "baseline": a_name,
            "candidate": b_name, "mode": "slo", "rps_ratio": None, "p50_ratio": None, "p99_ratio": None}
