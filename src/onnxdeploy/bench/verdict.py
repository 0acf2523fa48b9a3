"""Bench's findings and, for two targets, its verdict: the judge's rule on what bench measured.

Ratios stay in JSON as they were (``rps_ratio`` B/A, ``p50_ratio``/``p99_ratio`` latency B/A);
``speedup`` says the same the other way round (above 1 means B is faster). Whether B is faster,
equal, slower or undecided is the judge's (``judge/http.py``: the repeats' spread is the noise,
a spread past its cap is ``undecided``), and so is which target ships (``judge/ship.py``: the
fastest admissible; within the noise, the smallest). For an embedding model quality is the
candidate's min cosine to the baseline's in-process embeddings: below the bound it is out, as a
candidate past the accuracy bound is. With ``decide=False`` (the pipeline, which decides once for
the whole run) the verdict holds the findings and no ``ship``.
"""

from __future__ import annotations

from typing import Any

from ..judge import http as judge_http
from ..judge.ship import Contender, decide
from ..judge.words import UNDECIDED, times

#: why a capacity is only a lower bound, in words
LIMIT_WORDS = {"time_budget": "the time budget ran out", "generator": "the load generator's ceiling",
               "max_rate": "the --slo-max-rate cap"}
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


def _contenders(names: tuple[str, ...], speeds: dict[str, judge_http.Speed], *, accuracy, sizes,
                max_accuracy_drop: float, quality) -> list[Contender]:
    """One Contender per target: the first is the baseline; quality and accuracy bounds decide who may ship."""
    a_name = names[0]
    acc_a = accuracy.get(a_name)
    out = []
    for name in names:
        acc = accuracy.get(name)
        delta = acc - acc_a if acc is not None and acc_a is not None else None
        why = ""
        if name != a_name:
            miss = quality_miss(quality, name)
            if miss:
                why = f"misses its quality bound: {miss}"
            elif delta is not None and delta < -max_accuracy_drop:
                why = (f"loses {100 * -delta:.1f} pp of accuracy (bound {100 * max_accuracy_drop:g} pp)")
        cos = _cosine_words(quality, (a_name, name)) if name != a_name else None
        out.append(Contender(name, sizes.get(name), admissible=not why, why_not=why, served=True,
                             speed=speeds.get(name), accuracy_delta=delta, quality=cos or ""))
    return out


def make_verdict(
    aggregated: list[dict[str, Any]], names: tuple[str, ...], accuracy: dict[str, float | None],
    *, sizes: dict[str, int | None] | None = None, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    quality: dict[str, dict[str, Any]] | None = None, decide_ship: bool = True,
) -> dict[str, Any]:
    """Every target against the first at the highest common load level; with two targets and
    ``decide_ship``, which to ship and why."""
    a_name, b_name = names[0], names[1]
    sizes = sizes or {}
    by = {(e["target"], e.get("rate", e["concurrency"])): e for e in aggregated}
    common = set.intersection(*({lvl for (t, lvl) in by if t == n} for n in names))
    acc_a, acc_b = accuracy.get(a_name), accuracy.get(b_name)
    acc_delta = acc_b - acc_a if acc_a is not None and acc_b is not None else None
    if not common:
        speeds = {n: judge_http.Speed(UNDECIDED, None, None, None, 0) for n in names[1:]}
        speeds[a_name] = judge_http.same(0)
        out = _decided(names, speeds, accuracy, sizes, max_accuracy_drop, quality, decide_ship,
                       extra="no load level was measured for every target")
        out.update({"rps_ratio": None, "p50_ratio": None, "p99_ratio": None, "speedup": {},
                    "accuracy_delta": acc_delta, "min_cosine": _cosines(quality), "within_noise": True,
                    "ranked": False})
        return out
    level = max(common)
    a, b = by[(a_name, level)], by[(b_name, level)]
    mode = a["mode"]
    # closed loop: requests/s tells the targets apart; open loop offers all the same rate, so p99 does
    where = f"rate {level:g}/s" if mode == "open" else f"concurrency {int(level)}"
    speeds: dict[str, judge_http.Speed] = {}
    for name in names:
        e = by[(name, level)]
        if mode == "open":
            speeds[name] = judge_http.compare(_values(a["latency_ms"]["p99"]), _values(e["latency_ms"]["p99"]),
                                              higher_is_better=False, what="p99", where=where)
        else:
            speeds[name] = judge_http.compare(_values(a["rps"]), _values(e["rps"]), what="requests/s", where=where)
    speeds[a_name] = judge_http.same(a["repeats"], speeds[a_name].what, where)
    rps_ratio = _ratio(b["rps"]["median"], a["rps"]["median"])
    p50_ratio = _ratio(b["latency_ms"]["p50"]["median"], a["latency_ms"]["p50"]["median"])
    p99_ratio = _ratio(b["latency_ms"]["p99"]["median"], a["latency_ms"]["p99"]["median"])
    out = _decided(names, speeds, accuracy, sizes, max_accuracy_drop, quality, decide_ship)
    sb = speeds[b_name]
    share = b.get("compute_share")
    notes = []
    if share is not None:
        notes.append(f"model compute is {100 * share:.0f}% of a request's time in the server")
    if any(by[(n, level)].get("generator_bound") for n in names):
        notes.append("the load generator was near its own ceiling, so rates are a lower bound")
    if notes:
        out["text"] = out["text"].rstrip(".") + "; " + "; ".join(notes) + "."
    out.update({
        "rps_ratio": rps_ratio, "p50_ratio": p50_ratio, "p99_ratio": p99_ratio,
        "speedup": {"rps": rps_ratio, "p50": _ratio(1.0, p50_ratio), "p99": _ratio(1.0, p99_ratio)},
        "accuracy_delta": acc_delta, "min_cosine": _cosines(quality),
        "within_noise": sb.word != "faster" and sb.word != "slower",
        "ranked": sb.word in ("faster", "slower"), "noise": sb.spread, "margin": sb.margin,
        "repeats": min(by[(n, level)]["repeats"] for n in names), "level": level, "mode": mode,
        "baseline": a_name, "candidate": b_name,
    })
    return out


def _values(fig: dict[str, Any]) -> list[float]:
    vals = fig.get("values")
    if vals:
        return list(vals)
    return [v for v in (fig.get("median"),) if v is not None]


def _decided(names, speeds, accuracy, sizes, max_accuracy_drop, quality, decide_ship, extra: str = ""):
    """The judge's decision (two targets, ``decide_ship``) or the findings alone."""
    cands = _contenders(names, speeds, accuracy=accuracy, sizes=sizes, max_accuracy_drop=max_accuracy_drop,
                        quality=quality)
    a_name = names[0]
    comparisons = {c.name: c.speed.to_dict() for c in cands if c.speed is not None and c.name != a_name}
    b_speed = speeds.get(names[1])
    out: dict[str, Any] = {"speed": b_speed.word if b_speed else UNDECIDED, "comparisons": comparisons}
    findings = []
    for c in cands[1:]:
        line = f"{c.name} {c.speed.text(a_name)}" if c.speed else f"{c.name} not compared"
        if not c.admissible:
            line += f"; {c.name} {c.why_not}"
        findings.append(line)
    cos = _cosine_words(quality, tuple(names[:2]))
    if cos:
        findings.append(cos)
    if extra:
        findings.append(extra)
    if decide_ship:
        d = decide(cands, baseline=a_name, simplicity=tuple(names))
        out.update({"ship": d.ship, "rested_on": d.rested_on, "text": d.text + (f" ({extra})" if extra else "")})
    else:
        out["text"] = "; ".join(findings) + "."
    out["findings"] = findings
    return out


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
    word = "equal" if equal else (UNDECIDED if not rankable else ("faster" if ratio > 1 else "slower"))
    where = f"capacity at {bounds_label}"
    speed = judge_http.Speed(word, ratio, precision, None, min(len(ca.get("runs") or []), len(cb.get("runs") or [])) or 3,
                             what="sustained req/s", where=bounds_label)
    cands = _contenders(names, {a_name: judge_http.same(3, "sustained req/s", bounds_label), b_name: speed},
                        accuracy=accuracy, sizes=sizes, max_accuracy_drop=max_accuracy_drop, quality=quality)
    d = decide(cands, baseline=a_name, simplicity=tuple(names))
    ship = d.ship
    figures = f"({fig(cb)} vs {fig(ca)} req/s)"
    if ratio is None:
        traffic = f"{where} could not be compared ({a_name} {fig(ca)}, {b_name} {fig(cb)} req/s)"
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
    why = {"speed": "the fastest admissible", "size": "the smallest within the noise of the fastest",
           "simplicity": "the baseline; the other does not beat it beyond the noise",
           "size and quality": "speed undecided: rests on size and quality"}[d.rested_on]
    if ship == a_name and not cands[1].admissible:
        why = f"{b_name} {cands[1].why_not}"
    text = f"{traffic[0].upper()}{traffic[1:]}. Ship {ship} ({why}" + (": " + ", ".join(extra) if extra else "") + ")."
    return {"capacity_ratio": ratio, "speedup": {"capacity": ratio}, "accuracy_delta": acc_delta,
            "min_cosine": _cosines(quality), "ship": ship, "speed": word, "rested_on": d.rested_on,
            "within_noise": not rankable, "ranked": rankable, "text": text, "baseline": a_name,
            "candidate": b_name, "mode": "slo", "rps_ratio": None, "p50_ratio": None, "p99_ratio": None}
