"""Files of a bench: ``report.json`` (atomic), ``report.md``, PNG plots, and CSV (``--csv PREFIX``)."""

from __future__ import annotations

import csv
import io
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
    if report.failure:
        lines += [f"**Failed:** {report.failure}", ""]
    if report.verdict:
        lines += [f"**Verdict:** {report.verdict['text']}", ""]
    lines += ["| target | URL | model |", "|---|---|---|"]
    lines += [f"| {t.name} | {t.url} | {t.model or '-'} |" for t in report.targets]
    if report.capacity is not None:
        lines += ["", *_capacity_markdown(report)]
    level = "rate (req/s)" if report.mode in ("open", "slo") else "concurrency"
    how = (f"Every probe of the capacity search, data `{report.data}` ({report.samples} samples); figures are "
           "medians across the probes at one rate with (min–max)." if report.mode == "slo" else
           f"Mode: **{report.mode}-loop**, data `{report.data}` ({report.samples} samples), "
           f"{report.settings['repeats']} repeats, alternating targets. Figures are medians across "
           "repeats with (min–max).")
    lines += ["", how, "",
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
    lines += ["", "Requests carried " + ("**texts**, one a request (the server tokenized them)."
                                         if report.send == "texts" else "**tensors** (token ids for a text model), "
                                         "one sample a request.")]
    if report.accuracy:
        lines += ["", "Accuracy through the HTTP API: " + ", ".join(
            f"{k} {_f(None if v is None else 100 * v)}%" for k, v in report.accuracy.items())]
    cosine = {k: q for k, q in report.quality.items() if q.get("kind") == "cosine"}
    if cosine:
        lines += ["", "Embedding quality through the HTTP API (cosine of each served embedding to the "
                  "baseline's in-process one):", "",
                  "| target | reference | samples | min cosine | mean cosine | nearest-neighbour agreement | within bound |",
                  "|---|---|---|---|---|---|---|"]
        for k, q in cosine.items():
            nn = q.get("nn_agreement")
            ok = "-" if q["passed"] is None else ("yes" if q["passed"] else "no")
            lines.append(f"| {k} | {q['reference']} | {q['samples']} | {_f(q['min_cosine'], 4)} | "
                         f"{_f(q['mean_cosine'], 4)} | {'-' if nn is None else f'{100 * nn:.1f}%'} | "
                         f"{ok} (≥ {q['min_cosine_bound']:g}) |")
    lines += ["", f"Generator: engine `{gen['engine']}`, ceiling {_f(gen['ceiling_rps'], 0)} req/s against "
              f"`{gen['ceiling_endpoint']}`, CPU {_f(gen['cpu_percent'], 0)}% of one core while loading; "
              f"{gen['bound_runs']} run(s) at ≥ {100 * gen['bound_fraction']:.0f}% of the ceiling "
              "(flagged generator-bound)."]
    if gen.get("pinned"):
        lines.append(f"Pinned: generator on CPUs {gen['pinned']['generator']}, servers on {gen['pinned']['servers']}.")
    return "\n".join(lines) + "\n"


def _capacity_markdown(report: Any) -> list[str]:
    slo = report.slo
    keys = [b["percentile"] for b in slo["bounds"]]
    bounds = ", ".join(f"{b['percentile']} ≤ {b['ms']:g} ms" for b in slo["bounds"])
    lines = [f"Capacity at **{bounds}**: the highest Poisson arrival rate meeting every bound with at most "
             f"{100 * slo['max_error_rate']:g}% errors, bisected to {100 * slo['precision']:.0f}%, confirmed by "
             f"{slo['confirm_runs']} runs; each probe ran at least {slo['min_duration_s']:g} s and "
             f"{slo['min_queries']} queries ({slo['tail_samples']} beyond the percentile).", "",
             f"| target | capacity (req/s) | {' | '.join(k + ' ms' for k in keys)} | valid | limited by | runs |",
             "|---|---|" + "---|" * len(keys) + "---|---|---|"]
    for name, c in report.capacity.items():
        rps = "-" if c["rps"] is None else ("at least " if c["lower_bound"] else "") + f"{c['rps']:,.0f}"
        lat = c["latency_ms"] or {}
        lines.append(f"| {name} | {rps} | " + " | ".join(_f(lat.get(k)) for k in keys)
                     + f" | {'yes' if c['valid'] else 'no'} | {c['limited_by'] or '-'} | {len(c['runs'])} |")
    lines += ["", "| target | offered req/s | achieved | " + " | ".join(k + " ms" for k in keys)
              + " | errors | late sends | result |", "|---|---|---|" + "---|" * len(keys) + "---|---|---|"]
    for name, c in report.capacity.items():
        for r in c["runs"]:
            lines.append(f"| {name} | {r['rate']:g} | {_f(r['achieved_rps'], 0)} | "
                         + " | ".join(_f(r["latency_ms"].get(k)) for k in keys)
                         + f" | {sum(r['errors'].values())} | {r['late_sends'] or 0} | "
                         f"{'met' if r['passed'] else 'missed'}: {r['reason']} |")
    return lines


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buf.getvalue()


def write_csv(report: Any, prefix: str | os.PathLike) -> list[Path]:
    """``PREFIX_runs.csv`` (one row a run), ``PREFIX_stats.csv`` (per target and level, plus
    capacity rows at an SLO) and ``PREFIX_failures.csv`` (errors by kind), Locust's habit."""
    from .stats import LATENCY_KEYS

    base = str(prefix)
    runs = [[r.target, r.mode, r.level, r.repeat, r.requests, r.error_count, f"{r.error_rate:.4f}", f"{r.rps:.2f}",
             f"{r.elapsed_s:.3f}", *(r.latency_ms.get(k) for k in LATENCY_KEYS), r.late_sends, r.early_stop,
             r.engine] for r in report.runs]
    stats = []
    for e in report.aggregated:
        lat = e["latency_ms"]
        stats.append([e["target"], e["mode"], e.get("rate", e["concurrency"]), e["repeats"], e["requests"],
                      sum(e["errors"].values()), e["rps"]["median"], e["rps"]["min"], e["rps"]["max"],
                      *(lat[k]["median"] for k in LATENCY_KEYS), ""])
    for name, c in (report.capacity or {}).items():
        lat = c["latency_ms"] or {}
        stats.append([name, "capacity", c["rps"], c.get("confirmations"), "", "", c.get("achieved_rps"), "", "",
                      *(lat.get(k) for k in LATENCY_KEYS),
                      ("lower bound; " if c["lower_bound"] else "") + f"limited by {c['limited_by']}"])
    failures = [[name, kind, n, f["first_error"] or ""] for name, f in report.failures.items()
                for kind, n in sorted(f["errors"].items())]
    lat_cols = [f"{k}_ms" for k in LATENCY_KEYS]
    return [
        atomic_write(f"{base}_runs.csv", _csv_text(
            ["target", "mode", "level", "repeat", "requests", "errors", "error_rate", "rps", "elapsed_s",
             *lat_cols, "late_sends", "early_stop", "engine"], runs)),
        atomic_write(f"{base}_stats.csv", _csv_text(
            ["target", "mode", "level", "repeats", "requests", "errors", "rps_median", "rps_min", "rps_max",
             *lat_cols, "note"], stats)),
        atomic_write(f"{base}_failures.csv", _csv_text(["target", "error", "occurrences", "first_error"], failures)),
    ]


def write_outputs(report: Any, out_dir: str | os.PathLike) -> list[Path]:
    """Write report.json, report.md and the plots into ``out_dir``; return the written paths."""
    from .plots import capacity_plot, latency_distribution, rate_and_p99

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "report.json", report), atomic_write(out / "report.md", markdown(report))]
    dist = latency_distribution(report, out / "latency_distribution.png")
    if dist is not None:
        written.append(dist)
    written.append(rate_and_p99(report, out / "rps_p99_by_level.png"))
    if report.capacity is not None:
        written.append(capacity_plot(report, out / "latency_vs_rate.png"))
    return written
