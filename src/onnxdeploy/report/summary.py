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


def _compute_share(bench: dict[str, Any] | None, target: str) -> float | None:
    shares = [s.get("compute_share") for s in (bench or {}).get("server_split", [])
              if s.get("target") == target and s.get("compute_share") is not None]
    return max(shares) if shares else None


def summarize(report: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for every variant of the run, plus the verdict ``{ship, text, ...}``."""
    from ..measure import speed_words
    from ..shipping import candidates, decide

    ctx = report.context
    m, names, latency = ctx.get("measurement"), ctx.get("names", {}), ctx.get("latency")
    bench = report.reports.get("bench")
    quant = report.reports.get("quantize") or {}
    chosen = _get(quant, "chosen", "name")
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
    if m is None or latency is None:
        return rows, {"ship": "float32", "text": "Ship float32: no variant was measured against it."}
    ok = within_bounds(report.reports, names, m.results)
    served = bool(bench)
    cands = candidates(_Renamed(m, names, latency), names, bench, ok,
                       {"int8": chosen or ""})
    verdict = decide(cands, margin=latency.margin, compute_share=_compute_share(bench, "int8"),
                     served=served, too_noisy=latency.too_noisy)
    return rows, verdict


def within_bounds(reports: dict[str, Any], names: dict[str, str], results: dict[str, Any]
                  ) -> dict[str, bool]:
    """Per variant: within its quality bound, in process and (when bench judged it) served."""
    quant = reports.get("quantize") or {}
    bench = reports.get("bench")
    ok = {"float32": True, "float32-opt": (reports.get("optimize") or {}).get(
        "comparison", {}).get("passed") is not False}
    for name, key in names.items():
        if name.startswith("int8"):
            ok[name] = quant_admissible(quant, key, results[key])
        # quality measured through the API on the served model counts too: a variant whose
        # served embeddings miss the bound does not ship, whatever the in-process check said
        if _get(bench, "quality", name, "passed") is False:
            ok[name] = False
    return ok


def quant_admissible(quant: dict[str, Any], key: str, result: Any) -> bool:
    """An int8 variant is within the accuracy bound when auto found its candidate admissible."""
    for c in quant.get("candidates") or []:
        if c.get("name") == key:
            return bool(c.get("admissible"))
    return result.comparison is not None and result.comparison.passed is not False and result.int8_ops > 0


class _Renamed:
    """A measurement seen under the pipeline's variant names (latency already renamed)."""

    def __init__(self, m: Any, names: dict[str, str], latency: Any):
        self.reference = m.reference
        self.results = {name: m.results[key] for name, key in names.items()}
        self.latency = latency
