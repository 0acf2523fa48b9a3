"""Number formatting shared by every renderer (terminal, Markdown, HTML); no rendering library."""

from __future__ import annotations

from typing import Any


def fmt_bytes(n: int | float | None) -> str:
    """Human-readable size, e.g. ``1.5 MiB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def fmt_num(x: Any, digits: int = 3) -> str:
    """Numbers compactly: None as '-', small floats in scientific notation."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    return str(x)


def fmt_pct(x: float | None, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage."""
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def fmt_quality(row: dict[str, Any]) -> str:
    """A variant's quality: accuracy where labels exist, else the min cosine to float32."""
    if row.get("accuracy") is not None:
        return fmt_pct(row["accuracy"])
    if row.get("min_cosine") is not None:
        return f"cos {row['min_cosine']:.4f}"
    return "-"


def fmt_figure(fig: dict[str, Any] | None, digits: int = 3) -> str:
    """A latency figure as ``median (min–max)`` in ms."""
    if not fig:
        return "-"
    return f"{fig['median_ms']:.{digits}f} ({fig['min_ms']:.{digits}f}–{fig['max_ms']:.{digits}f})"
