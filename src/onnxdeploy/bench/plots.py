"""PNG plots of a bench (matplotlib, Agg backend): latency distribution, rate and p99 by level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import require


def _pyplot():
    matplotlib = require("matplotlib", "bench")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def latency_distribution(report: Any, path: Path) -> Path | None:
    """Latency CDF per target at the highest load level (all repeats pooled); None without raw data."""
    plt = _pyplot()
    top: dict[str, float] = {}
    for run in report.runs:
        top[run.target] = max(top.get(run.target, 0.0), run.level)
    pooled: dict[str, np.ndarray] = {}
    for run in report.runs:
        if run.latencies_us is not None and run.latencies_us.size and run.level == top[run.target]:
            pooled[run.target] = np.concatenate([pooled.get(run.target, np.zeros(0)), run.latencies_us])
    if not pooled:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, lat in pooled.items():
        ms = np.sort(lat) / 1000.0
        ax.plot(ms, np.arange(1, ms.size + 1) / ms.size, label=f"{name} (n={ms.size})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests ≤ latency")
    ax.set_title("Latency distribution at the highest load level")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def rate_and_p99(report: Any, path: Path) -> Path:
    """Requests/s and p99 against load level per target, medians with min–max bars."""
    plt = _pyplot()
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(10, 4))
    for target in report.targets:
        rows = sorted((e for e in report.aggregated if e["target"] == target.name),
                      key=lambda e: e.get("rate", e["concurrency"]))
        if not rows:
            continue
        x = [e.get("rate", e["concurrency"]) for e in rows]
        for ax, get in ((ax_rps, lambda e: e["rps"]), (ax_p99, lambda e: e["latency_ms"]["p99"])):
            med = np.array([get(e)["median"] or np.nan for e in rows], dtype=float)
            lo = np.array([get(e)["min"] or np.nan for e in rows], dtype=float)
            hi = np.array([get(e)["max"] or np.nan for e in rows], dtype=float)
            ax.errorbar(x, med, yerr=[med - lo, hi - med], marker="o", capsize=3, label=target.name)
    xlabel = "requested rate (req/s)" if report.mode in ("open", "slo") else "concurrency"
    ax_rps.set(xlabel=xlabel, ylabel="requests/s", title="Throughput")
    ax_p99.set(xlabel=xlabel, ylabel="p99 latency (ms)", title="Tail latency")
    ceiling = report.generator.get("ceiling_rps")
    if ceiling:
        ax_rps.axhline(ceiling, linestyle="--", color="grey", label="generator ceiling")
    for ax in (ax_rps, ax_p99):
        ax.grid(True, alpha=0.3)
        ax.legend()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def capacity_plot(report: Any, path: Path) -> Path:
    """Latency percentiles against offered rate for every probe of the search, the SLO lines, capacity."""
    plt = _pyplot()
    bounds = report.slo["bounds"]
    keys = sorted({"p50", *(b["percentile"] for b in bounds)}, key=lambda k: float(k[1:]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {k: s for k, s in zip(keys, ("o", "s", "^", "v", "D"))}
    for i, (name, cap) in enumerate(report.capacity.items()):
        color = colors[i % len(colors)]
        runs = cap["runs"]
        for key in keys:
            pts = [(r["rate"], r["latency_ms"].get(key), r["passed"]) for r in runs
                   if r["latency_ms"].get(key) is not None]
            if not pts:
                continue
            # every probe as a point (a cross where it missed), the median per rate as the line
            met = [(x, y) for x, y, ok in pts if ok]
            missed = [(x, y) for x, y, ok in pts if not ok]
            if met:
                ax.scatter(*zip(*met), marker=styles[key], color=color, alpha=0.5, s=18)
            if missed:
                ax.scatter(*zip(*missed), marker="x", color=color, alpha=0.8, s=40)
            rates = sorted({x for x, _, _ in pts})
            medians = [float(np.median([y for x, y, _ in pts if x == rate])) for rate in rates]
            ax.plot(rates, medians, linestyle="-" if key != "p50" else ":", color=color, alpha=0.8,
                    label=f"{name} {key} (median per rate)")
        if cap["rps"]:
            ax.axvline(cap["rps"], color=color, linestyle="--", alpha=0.6,
                       label=f"{name} capacity {'≥ ' if cap['lower_bound'] else ''}{cap['rps']:,.0f}/s")
    for b in bounds:
        ax.axhline(b["ms"], color="red", linestyle="-", linewidth=1.5, alpha=0.7, label=f"SLO {b['percentile']} ≤ {b['ms']:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (req/s, Poisson arrivals)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Latency percentiles against offered rate (x: probe missed the SLO)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
