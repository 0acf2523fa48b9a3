"""Files of a bench: ``report.json`` (atomic), ``report.md`` and PNG plots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..report.jsonio import write_json


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _range(s: dict[str, float | None], digits: int = 2) -> str:
    return f"{_f(s['median'], digits)} ({_f(s['min'], digits)}–{_f(s['max'], digits)})"


def markdown(report: Any) -> str:
    """The report as Markdown: targets, the per-level table, server split, trust checks, verdict."""
    gen = report.generator
    lines = ["# onnxdeploy bench", ""]
    if report.verdict:
        lines += [f"**Verdict:** {report.verdict['text']}", ""]
    lines += ["| target | URL | model |", "|---|---|---|"]
    lines += [f"| {t.name} | {t.url} | {t.model or '-'} |" for t in report.targets]
    level = "rate (req/s)" if report.mode == "open" else "concurrency"
    lines += ["", f"Mode: **{report.mode}-loop**, data `{report.data}` ({report.samples} samples), "
              f"{report.settings['repeats']} repeats, alternating targets. Figures are medians across "
              "repeats with (min–max).", "",
              f"| target | {level} | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms | gen-bound |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for e in report.aggregated:
        lat = e["latency_ms"]
        errors = ", ".join(f"{k}: {v}" for k, v in e["errors"].items()) or "0"
        lines.append(
            f"| {e['target']} | {e.get('rate', e['concurrency'])} | {e['requests']} | {errors} | "
            f"{_range(e['rps'], 0)} | {_range(lat['p50'])} | {_range(lat['p90'])} | {_range(lat['p99'])} | "
            f"{_f(lat['max']['median'])} | {'yes' if e['generator_bound'] else 'no'} |")
    split = report.server_split
    if split:
        lines += ["", "Server side (from /metrics deltas, mean ms per request):", "",
                  "| target | level | client | in server view | model compute | other | compute share |",
                  "|---|---|---|---|---|---|---|"]
        for s in split:
            share = "-" if s["compute_share"] is None else f"{100 * s['compute_share']:.0f}%"
            lines.append(f"| {s['target']} | {s['level']:g} | {_f(s['client_ms'], 3)} | {_f(s['server_ms'], 3)} | "
                         f"{_f(s['compute_ms'], 3)} | {_f(s['other_ms'], 3)} | {share} |")
    if report.accuracy:
        lines += ["", "Accuracy through the HTTP API: " + ", ".join(
            f"{k} {_f(None if v is None else 100 * v)}%" for k, v in report.accuracy.items())]
    lines += ["", f"Generator: engine `{gen['engine']}`, ceiling {_f(gen['ceiling_rps'], 0)} req/s against "
              f"`{gen['ceiling_endpoint']}`, CPU {_f(gen['cpu_percent'], 0)}% of one core while loading; "
              f"{gen['bound_runs']} run(s) at ≥ {100 * gen['bound_fraction']:.0f}% of the ceiling "
              "(flagged generator-bound)."]
    if gen.get("pinned"):
        lines.append(f"Pinned: generator on CPUs {gen['pinned']['generator']}, servers on {gen['pinned']['servers']}.")
    return "\n".join(lines) + "\n"


def write_outputs(report: Any, out_dir: str | os.PathLike) -> list[Path]:
    """Write report.json, report.md and the plots into ``out_dir``; return the written paths."""
    from .plots import latency_distribution, rate_and_p99

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "report.json", report), atomic_write(out / "report.md", markdown(report))]
    dist = latency_distribution(report, out / "latency_distribution.png")
    if dist is not None:
        written.append(dist)
    written.append(rate_and_p99(report, out / "rps_p99_by_level.png"))
    return written
