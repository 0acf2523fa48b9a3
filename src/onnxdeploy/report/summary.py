"""The cross-step summary of a pipeline run: one row per model variant, and the verdict."""

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
    }


def summarize(reports: dict[str, Any], artifacts: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
    """Rows for float32, dynamic int8, the chosen int8 and the optimized float model, plus the verdict."""
    quant = reports.get("quantize") or {}
    dyn = reports.get("quantize_dynamic") or {}
    opt = reports.get("optimize") or {}
    bench = reports.get("bench")
    export = reports.get("export") or {}

    float_row = {
        "variant": "float32",
        "file": artifacts.get("float"),
        "size_bytes": _get(quant, "size_bytes", "before") or export.get("size_bytes"),
        "accuracy": _get(quant, "comparison", "accuracy_before"),
        "latency_ms": _get(quant, "latency_ms", "before"),
        **served_figures(bench, "float32"),
    }
    rows = [float_row]
    if dyn:
        rows.append({
            "variant": "int8 dynamic",
            "file": artifacts.get("int8_dynamic"),
            "size_bytes": _get(dyn, "size_bytes", "after"),
            "accuracy": _get(dyn, "comparison", "accuracy_after"),
            "latency_ms": _get(dyn, "latency_ms", "after"),
        })
    if quant:
        chosen = quant.get("chosen")
        label = chosen.get("name") if isinstance(chosen, dict) else chosen
        rows.append({
            "variant": f"int8 auto: {label}" if label else "int8 auto",
            "file": artifacts.get("int8"),
            "size_bytes": _get(quant, "size_bytes", "after"),
            "accuracy": _get(quant, "comparison", "accuracy_after"),
            "latency_ms": _get(quant, "latency_ms", "after"),
            **served_figures(bench, "int8"),
        })
    if opt:
        rows.append({
            "variant": "float32 optimized",
            "file": artifacts.get("optimized"),
            "size_bytes": _get(opt, "size_bytes", "after"),
            "accuracy": None,
            "latency_ms": _get(opt, "latency_ms", "after"),
        })
    # one side-by-side measurement of every variant beats each step's own figures when present
    side_by_side = _get(reports, "latency", "variants") or {}
    keys = {"float32": "float", "int8 dynamic": "int8_dynamic", "float32 optimized": "optimized"}
    for row in rows:
        key = "int8" if row["variant"].startswith("int8 auto") else keys.get(row["variant"])
        if key in side_by_side:
            row["latency_ms"] = side_by_side[key]
    verdict = _get(bench, "verdict", "text") or ""
    return rows, verdict
