"""A pipeline report as renderer-neutral sections (tables, notes, images).

Markdown and HTML render the same ``Section`` list, so both always show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fmt import fmt_bytes, fmt_figure, fmt_num, fmt_pct, fmt_quality
from .summary import _get


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


def summary_section(report: Any, plot: Path | None) -> Section:
    """The summary table across variants (one latency measurement) and the verdict."""
    rows = []
    for v in report.rows:
        lat = v.get("latency") or {}
        big = _larger_batch(lat)
        rows.append([
            v["variant"], fmt_bytes(v.get("size_bytes")), fmt_quality(v),
            fmt_figure(lat.get("batch_1")),
            "-" if v["name"] == "float32" else (v.get("speed") or {}).get("batch_1", "-"),
            fmt_figure(lat.get(big)) if big in lat else "-",
            fmt_quality({"accuracy": v.get("api_accuracy"), "min_cosine": v.get("api_min_cosine")}),
            "-" if v.get("rps") is None else f"{v['rps']:.0f}",
            _ms(v.get("p50_ms")), _ms(v.get("p99_ms")),
        ])
    conc = next((v.get("concurrency") for v in report.rows if v.get("concurrency")), None)
    verdict = report.verdict or {}
    sec = Section(
        "summary", "Summary",
        lead=verdict.get("text") or "No verdict.",
        tables=[TableData(
            "Variants (in-process latency: median (min–max) over rounds, all variants in one "
            "interleaved measurement)",
            ["variant", "size", "accuracy or min cosine (in-process)", "latency b=1 (ms)", "vs float32 b=1",
             "latency b=32 (ms)", "accuracy or min cosine (HTTP)", f"req/s (c={conc})" if conc else "req/s",
             "p50 (ms)", "p99 (ms)"],
            rows)],
    )
    lat = report.latency or {}
    if lat:
        sec.notes.append(
            f"Timing noise: the float model timed twice side by side (A/A control) came out "
            f"{100 * lat['noise']:.1f}% apart; differences within {100 * lat['margin']:.0f}% are called equal"
            + (" — too noisy to rank variants." if lat.get("too_noisy") else "."))
        for note in lat.get("notes", []):
            sec.notes.append(note)
    if verdict.get("ship"):
        sec.notes.append(f"Ship: {verdict['ship']}")
    if plot is not None:
        sec.images.append(("Size, latency and accuracy per variant", plot))
    return sec


def lineage_section(report: Any) -> Section:
    """Where every model file came from: the path from PyTorch to each artifact."""
    by_name = {v["name"]: v for v in report.lineage}

    def chain(name: str) -> str:
        parts, seen = [], set()
        while name in by_name and name not in seen:
            seen.add(name)
            parts.append(name)
            name = by_name[name]["parent"]
        parts.append(str(name))
        return " → ".join(reversed(parts))

    rows = []
    for v in report.lineage:
        how = ", ".join(f"{k} {val}" for k, val in v["produced_by"].items()
                        if not isinstance(val, (dict, list)))
        rows.append([v["name"], chain(v["name"]), how, Path(v["path"]).name, fmt_bytes(v["size_bytes"]),
                     v["sha256"][:12]])
    return Section("lineage", "Lineage", lead="Every model file, its parent and the step that made it.",
                   tables=[TableData("Variants", ["variant", "path", "produced by", "file", "size",
                                                  "sha256"], rows)])


def environment_section(env: dict[str, Any]) -> Section:
    """The machine every figure was measured on."""
    flags = env.get("flags") or {}
    rows = [
        ["CPU", str(env.get("cpu"))],
        ["int8 flags", ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())],
        ["usable cores", str(env.get("cores"))],
        ["what it means for int8", str(env.get("int8", ""))],
        ["versions", ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items())],
    ]
    return Section("environment", "Environment", tables=[TableData("Machine", ["", ""], rows)])


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
    if d.get("exporter"):
        rows.append(["exporter", str(d["exporter"])])
    acc = d.get("accuracy")
    if isinstance(acc, dict):
        rows.append(["test accuracy (PyTorch / ONNX)", f"{fmt_pct(acc.get('torch'))} / {fmt_pct(acc.get('onnx'))}"])
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
    variants = (d.get("latency") or {}).get("variants") or {}
    a, b = variants.get("float32", {}), variants.get("b", {})
    for key in a:
        rows.append([f"latency {key.replace('_', ' ')} float32 / int8 (ms)",
                     f"{fmt_figure(a.get(key))} / {fmt_figure(b.get(key))}"])
    if d.get("speed_text"):
        rows.append(["speed", d["speed_text"].replace("model.int8.onnx", "int8")])
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
    sections = [summary_section(report, summary_plot)]
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
    if report.lineage:
        sections.append(lineage_section(report))
    if report.environment:
        sections.append(environment_section(report.environment))
    return sections
