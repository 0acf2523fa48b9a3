"""The cross-step summary of a pipeline run: one row per variant, and the verdict.

Built from the typed objects the steps hand on (the measurement, the lineage, the bench
report), not by re-reading any section's JSON; every latency is the one measurement's figure.
"""

from __future__ import annotations

from typing import Any


def _get(d: Any, *keys: str) -> Any:
    """Nested lookup that answers None when any key is missing."""
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _median(value: Any) -> Any:
    """Aggregated bench figures are ``{median, min, max, rel_spread}``; plain numbers pass through."""
    return value.get("median") if isinstance(value, dict) else value


def served_figures(bench: dict[str, Any] | None, target: str) -> dict[str, Any]:
    """req/s, p50 and p99 (medians across repeats) of a served target at its highest closed-loop level."""
    if not bench:
        return {}
    rows = [r for r in bench.get("aggregated", [])
            if r.get("target") == target and r.get("mode", "closed") == "closed"]
    if not rows:
        return {}
    top = max(rows, key=lambda r: r.get("concurrency", 0))
    return {
        "concurrency": top.get("concurrency"),
        "rps": _median(top.get("rps")),
        "p50_ms": _median(_get(top, "latency_ms", "p50")),
        "p99_ms": _median(_get(top, "latency_ms", "p99")),
        "api_accuracy": _get(bench, "accuracy", target),
        # an embedding model's served quality: min cosine to the baseline's in-process output
        "api_min_cosine": _get(bench, "quality", target, "min_cosine"),
    }


def summarize(report: Any) -> list[dict[str, Any]]:
    """Rows for every variant of the run: size, quality, the one latency measurement, served figures.

    The verdict is not made here: the pipeline asks the judge (``pipeline.decide_verdict``).
    """
    from ..judge.words import speed_words

    ctx = report.context
    m, names, latency = ctx.get("measurement"), ctx.get("names", {}), ctx.get("latency")
    bench_report = report.results.get("bench")
    bench = bench_report.to_dict() if bench_report is not None else None
    quant = report.results.get("quantize")
    chosen = quant.chosen if quant is not None else None
    rows = []
    for entry in report.lineage:
        name = entry["name"]
        key = names.get(name)
        result = m.results.get(key) if (m is not None and key) else None
        row: dict[str, Any] = {
            "variant": name + (f" ({chosen})" if name == "int8" and chosen else ""),
            "name": name, "file": entry["path"], "size_bytes": entry["size_bytes"],
            "accuracy": None if result is None else result.accuracy,
            "min_cosine": None if result is None or result.comparison is None else result.comparison.min_cosine,
        }
        if latency is not None and name in latency.figures:
            row["latency_ms"] = latency.median(name)
            row["latency"] = {k: f.to_dict() for k, f in latency.figures[name].items()}
            row["speedup"] = latency.speedup(name)
            row["speed"] = {k: speed_words(s, latency.margin) for k, s in row["speedup"].items()}
        row.update(served_figures(bench, name))
        rows.append(row)
    return rows
