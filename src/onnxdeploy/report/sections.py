"""A pipeline report as renderer-neutral sections (tables, notes, images).

Markdown and HTML render the same ``Section`` list, so both always show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .summary import _get
from .terminal import fmt_bytes, fmt_num, fmt_pct


@dataclass
class TableData:
    """A titled table of already formatted cells."""

    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """One step of the path, as the reader sees it."""

    id: str
    title: str
    lead: str = ""
    tables: list[TableData] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: list[tuple[str, Path]] = field(default_factory=list)


def _ms(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _lat(lat: Any, key: str = "batch_1") -> str:
    if isinstance(lat, dict):
        return _ms(lat.get(key))
    return _ms(lat)


def summary_section(variants: list[dict[str, Any]], verdict: str, plot: Path | None) -> Section:
    """The summary table across variants and the verdict."""
    rows = []
    for v in variants:
        rows.append([
            v["variant"], fmt_bytes(v.get("size_bytes")), fmt_pct(v.get("accuracy")),
            _lat(v.get("latency_ms")), fmt_pct(v.get("api_accuracy")),
            "-" if v.get("rps") is None else f"{v['rps']:.0f}",
            _ms(v.get("p50_ms")), _ms(v.get("p99_ms")),
        ])
    conc = next((v.get("concurrency") for v in variants if v.get("concurrency")), None)
    sec = Section(
        "summary", "Summary",
        lead=verdict or "No HTTP verdict (the bench step did not run).",
        tables=[TableData(
            "Variants",
            ["variant", "size", "accuracy (in-process)", "latency b=1 (ms)", "accuracy (HTTP)",
             f"req/s (c={conc})" if conc else "req/s", "p50 (ms)", "p99 (ms)"],
            rows)],
    )
    if plot is not None:
        sec.images.append(("Size, latency and accuracy per variant", plot))
    return sec


def export_section(d: dict[str, Any]) -> Section:
    parity = d.get("parity", {})
    rows = [
        ["ONNX file", str(d.get("onnx_path"))],
        ["opset", str(d.get("opset"))],
        ["size", fmt_bytes(d.get("size_bytes"))],
        ["inputs", "; ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in d.get("inputs", []))],
        ["outputs", "; ".join(f"{o['name']} {o['dtype']} {o['shape']}" for o in d.get("outputs", []))],
        ["parity batch sizes", ", ".join(str(b) for b in parity.get("batch_sizes", []))],
        ["parity max abs diff", fmt_num(parity.get("max_abs_diff"))],
        ["parity passed", fmt_num(parity.get("passed"))],
    ]
    for key in ("exporter", "test_accuracy", "accuracy"):
        if key in d and not isinstance(d[key], (dict, list)):
            rows.append([key.replace("_", " "), fmt_pct(d[key]) if "accuracy" in key else str(d[key])])
    return Section("export", "1. Export: PyTorch to ONNX",
                   lead="ONNX Runtime and PyTorch ran the same inputs at several batch sizes.",
                   tables=[TableData("Export", ["", ""], rows)])


def quantize_section(dyn: dict[str, Any], auto: dict[str, Any]) -> Section:
    sec = Section("quantize", "2. Quantize: float32 to int8",
                  lead="Dynamic int8 is the textbook path; auto measures every candidate and keeps "
                       "the fastest whose accuracy stays within the allowed drop.")
    rows = []
    for label, d in (("dynamic", dyn), ("auto", auto)):
        if not d:
            continue
        rows.append([
            label, fmt_bytes(_get(d, "size_bytes", "before")), fmt_bytes(_get(d, "size_bytes", "after")),
            fmt_num(d.get("size_ratio"), 2), fmt_pct(_get(d, "comparison", "accuracy_before")),
            fmt_pct(_get(d, "comparison", "accuracy_after")), fmt_pct(_get(d, "comparison", "top1_agreement")),
            _lat(_get(d, "latency_ms", "before")), _lat(_get(d, "latency_ms", "after")),
        ])
    sec.tables.append(TableData(
        "Quantization results",
        ["mode", "size before", "size after", "ratio", "acc before", "acc after", "top-1 agreement",
         "latency b=1 before (ms)", "after (ms)"], rows))
    cands = auto.get("candidates") or []
    if cands:
        crow = []
        for c in cands:
            crow.append([
                str(c.get("name")), fmt_bytes(c.get("size_bytes")),
                _lat(c.get("latency_ms")), _lat(c.get("latency_ms"), _larger_batch(c.get("latency_ms"))),
                fmt_pct(c.get("accuracy")), fmt_pct(c.get("top1_agreement")),
                fmt_num(c.get("admissible")), str(c.get("reason", "")),
            ])
        sec.tables.append(TableData(
            "Auto candidates",
            ["candidate", "size", "latency b=1 (ms)", "latency large batch (ms)", "accuracy",
             "top-1 agreement", "admissible", "why"], crow))
    chosen = auto.get("chosen")
    if isinstance(chosen, dict) and chosen.get("reason"):
        sec.notes.append(f"Choice: {chosen['reason']}")
    elif auto.get("reason"):
        sec.notes.append(f"Choice: {auto['reason']}")
    for w in list(dyn.get("warnings", [])) + list(auto.get("warnings", [])):
        sec.notes.append(f"Warning: {w}")
    return sec


def _larger_batch(lat: Any) -> str:
    if isinstance(lat, dict):
        keys = sorted((k for k in lat if k.startswith("batch_") and k != "batch_1"),
                      key=lambda k: int(k.split("_")[1]))
        if keys:
            return keys[-1]
    return "batch_32"


def optimize_section(d: dict[str, Any]) -> Section:
    rows = []
    for p in d.get("passes", []):
        delta = p.get("op_delta") or {}
        rows.append([
            str(p.get("name")), str(p.get("nodes_before")), str(p.get("nodes_after")),
            ", ".join(f"{'+' if n > 0 else '−'}{abs(n)} {op}" for op, n in delta.items()) or "-",
            str(p.get("note") or ""),
        ])
    before, after = _get(d, "op_counts", "before") or {}, _get(d, "op_counts", "after") or {}
    ops = sorted(set(before) | set(after))
    cmp_ = d.get("comparison", {})
    return Section(
        "optimize", "3. Optimize: graph passes",
        lead=f"Outputs before and after: max abs diff {fmt_num(cmp_.get('max_abs_diff'))} "
             f"(tolerance {fmt_num(cmp_.get('tolerance'))}), passed: {fmt_num(cmp_.get('passed'))}.",
        tables=[
            TableData("Per pass", ["pass", "nodes before", "nodes after", "op delta", "note"], rows),
            TableData("Operator counts", ["op", "before", "after"],
                      [[op, str(before.get(op, 0)), str(after.get(op, 0))] for op in ops]),
        ],
        notes=[f"Warning: {w}" for w in d.get("warnings", [])],
    )


def compare_section(d: dict[str, Any]) -> Section:
    rows = [
        ["data", f"{d.get('data')} ({d.get('samples')} samples)"],
        ["max abs diff", fmt_num(d.get("max_abs_diff"))],
        ["mean abs diff", fmt_num(d.get("mean_abs_diff"))],
        ["cosine similarity", fmt_num(d.get("cosine_similarity"), 6)],
        ["top-1 agreement", fmt_pct(d.get("top1_agreement"))],
    ]
    acc = d.get("accuracy") or {}
    if acc:
        rows += [["accuracy float32", fmt_pct(acc.get("a"))], ["accuracy int8", fmt_pct(acc.get("b"))]]
    for key, value in (d.get("latency_ms") or {}).get("a", {}).items():
        rows.append([f"latency {key.replace('_', ' ')} float32 / int8 (ms)",
                     f"{_ms(value)} / {_ms(d['latency_ms']['b'].get(key))}"])
    return Section("compare", "4. Compare float32 and int8 in process",
                   tables=[TableData("Comparison", ["", ""], rows)])


def _spread(value: Any, digits: int = 3) -> str:
    """``median (min–max)`` of an aggregated figure."""
    if not isinstance(value, dict):
        return "-" if value is None else f"{value:.{digits}f}"
    med, lo, hi = value.get("median"), value.get("min"), value.get("max")
    if med is None:
        return "-"
    if lo is None or hi is None or lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def bench_section(d: dict[str, Any], images: list[tuple[str, Path]]) -> Section:
    rows = []
    for r in d.get("aggregated", []):
        lat = r.get("latency_ms", {})
        level = r.get("concurrency") if r.get("mode", "closed") == "closed" else f"{r.get('rate')}/s"
        rows.append([
            str(r.get("target")), str(level), str(r.get("mode", "closed")),
            str(r.get("repeats", 1)), str(r.get("requests")), str(_error_count(r.get("errors"))),
            _spread(r.get("rps"), 0), _spread(lat.get("p50")), _spread(lat.get("p90")),
            _spread(lat.get("p99")), _spread(lat.get("max")),
        ])
    sec = Section(
        "bench", "5. Serve and load-test over HTTP",
        lead=_get(d, "verdict", "text") or "",
        tables=[TableData("Runs: median across repeats (min–max)",
                          ["target", "level", "mode", "repeats", "requests", "errors", "req/s",
                           "p50 (ms)", "p90 (ms)", "p99 (ms)", "max (ms)"], rows)],
        images=images,
    )
    acc = d.get("accuracy") or {}
    if acc:
        sec.tables.append(TableData("Accuracy through the HTTP API", ["target", "accuracy"],
                                    [[k, fmt_pct(v)] for k, v in acc.items()]))
    gen = d.get("generator") or {}
    if gen:
        sec.notes.append(
            "Load generator: " + ", ".join(f"{k.replace('_', ' ')} {fmt_num(v) if not isinstance(v, str) else v}"
                                           for k, v in gen.items() if not isinstance(v, (dict, list))))
    return sec


def _error_count(errors: Any) -> int:
    if isinstance(errors, dict):
        return int(sum(errors.values()))
    return int(errors or 0)


def build_sections(report: Any, summary_plot: Path | None, bench_images: list[tuple[str, Path]]) -> list[Section]:
    """Every section of a pipeline report, in reading order."""
    r = report.reports
    sections = [summary_section(report.variants, report.verdict, summary_plot)]
    if "export" in r:
        sections.append(export_section(r["export"]))
    if "quantize" in r or "quantize_dynamic" in r:
        sections.append(quantize_section(r.get("quantize_dynamic") or {}, r.get("quantize") or {}))
    if "optimize" in r:
        sections.append(optimize_section(r["optimize"]))
    if "compare" in r:
        sections.append(compare_section(r["compare"]))
    if "bench" in r:
        sections.append(bench_section(r["bench"], bench_images))
    return sections
