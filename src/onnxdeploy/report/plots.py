"""Pipeline summary plots (matplotlib, Agg backend, written atomically as PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..errors import require


def summary_plot(path: str | Path, variants: list[dict[str, Any]]) -> Path | None:
    """Bars of size, batch-1 latency and accuracy per variant; None when there is nothing to plot."""
    rows = [v for v in variants if v.get("size_bytes")]
    if not rows:
        return None
    matplotlib = require("matplotlib", "bench")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v["variant"] for v in rows]
    unit, scale = ("MiB", 2**20) if max(v["size_bytes"] for v in rows) >= 2**20 else ("KiB", 2**10)
    panels = [
        (f"size ({unit})", [v["size_bytes"] / scale for v in rows]),
        ("in-process latency, batch 1 (ms)", [_first_latency(v) for v in rows]),
        ("accuracy (%)", [None if v.get("accuracy") is None else 100 * v["accuracy"] for v in rows]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), constrained_layout=True)
    colors = ["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860"]
    for ax, (title, values) in zip(axes, panels):
        shown = [(n, v) for n, v in zip(names, values) if v is not None]
        if shown:
            ax.barh([n for n, _ in shown], [v for _, v in shown], color=colors[: len(shown)])
            for i, (_, v) in enumerate(shown):
                ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
    target = Path(path)
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return target


def _first_latency(variant: dict[str, Any]) -> float | None:
    lat = variant.get("latency_ms")
    if isinstance(lat, dict):
        return lat.get("batch_1")
    return lat
