"""The pipeline report renderers on a report assembled from real step-shaped data; the page in Chromium."""

from __future__ import annotations

import pytest
from browser import CHROMIUM, probe_page

from onnxdeploy.pipeline import PipelineReport
from onnxdeploy.report.html import render_html
from onnxdeploy.report.markdown import render_markdown
from onnxdeploy.report.plots import summary_plot
from onnxdeploy.report.sections import build_sections
from onnxdeploy.report.summary import summarize


def _report(tmp_path):
    reports = {
        "export": {"onnx_path": "m.onnx", "opset": 18, "size_bytes": 4000,
                   "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 64]}],
                   "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}],
                   "parity": {"max_abs_diff": 2e-6, "batch_sizes": [1, 7, 13], "passed": True}},
        "quantize": {"mode": "auto", "size_bytes": {"before": 4000, "after": 1100}, "size_ratio": 3.6,
                     "comparison": {"max_abs_diff": 0.02, "top1_agreement": 0.99,
                                    "accuracy_before": 0.97, "accuracy_after": 0.965},
                     "latency_ms": {"before": {"batch_1": 0.2, "batch_32": 1.0},
                                    "after": {"batch_1": 0.1, "batch_32": 0.6}},
                     "chosen": {"name": "dynamic-matmul", "reason": "fastest admissible <b>candidate</b>"},
                     "candidates": [{"name": "dynamic-matmul", "size_bytes": 1100, "admissible": True,
                                     "latency_ms": {"batch_1": 0.1, "batch_32": 0.6}, "accuracy": 0.965}]},
        "bench": {"aggregated": [
            {"target": "float32", "mode": "closed", "concurrency": 8, "repeats": 2, "requests": 800,
             "errors": {}, "rps": {"median": 900.0, "min": 880.0, "max": 920.0},
             "latency_ms": {"p50": {"median": 8.0}, "p90": {"median": 9.0},
                            "p99": {"median": 12.0}, "max": {"median": 20.0}}},
            {"target": "int8", "mode": "closed", "concurrency": 8, "repeats": 2, "requests": 800,
             "errors": {}, "rps": {"median": 1200.0, "min": 1100.0, "max": 1300.0},
             "latency_ms": {"p50": {"median": 6.0}, "p90": {"median": 7.0},
                            "p99": {"median": 9.0}, "max": {"median": 15.0}}}],
                  "accuracy": {"float32": 0.97, "int8": 0.964},
                  "verdict": {"text": "int8: 1.33x requests/s"}},
    }
    artifacts = {"float": "m.onnx", "int8": "m.int8.onnx"}
    report = PipelineReport(model="digits-mlp", out_dir=str(tmp_path), options={}, reports=reports,
                            artifacts=artifacts)
    report.variants, report.verdict = summarize(reports, artifacts)
    return report


def test_summary_takes_figures_from_each_step(tmp_path):
    report = _report(tmp_path)
    by_name = {v["variant"]: v for v in report.variants}
    assert by_name["float32"]["size_bytes"] == 4000 and by_name["float32"]["rps"] == 900.0
    int8 = by_name["int8 auto: dynamic-matmul"]
    assert int8["size_bytes"] == 1100 and int8["p99_ms"] == 9.0 and int8["api_accuracy"] == 0.964
    assert report.verdict == "int8: 1.33x requests/s"


def test_side_by_side_latency_replaces_each_steps_own_figures(tmp_path):
    report = _report(tmp_path)
    report.reports["latency"] = {"variants": {"float": {"batch_1": 0.5}, "int8": {"batch_1": 0.25}}}
    rows, _ = summarize(report.reports, report.artifacts)
    by_name = {v["variant"]: v for v in rows}
    assert by_name["float32"]["latency_ms"] == {"batch_1": 0.5}
    assert by_name["int8 auto: dynamic-matmul"]["latency_ms"] == {"batch_1": 0.25}


def test_markdown_and_html_escape_and_show_the_same_numbers(tmp_path):
    report = _report(tmp_path)
    plot = summary_plot(tmp_path / "summary.png", report.variants)
    assert plot is not None and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sections = build_sections(report, plot, [])
    md = render_markdown("t", sections, tmp_path)
    page = render_html("t", "s", sections)
    for text in ("1200 (1100–1300)", "96.40%", "2.00e-06", "dynamic-matmul"):
        assert text in md and text in page
    assert "<b>candidate</b>" not in page and "&lt;b&gt;candidate&lt;/b&gt;" in page
    assert "data:image/png;base64," in page and "summary.png" in md
    assert "http://" not in page and "https://" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it as root)")
def test_page_renders_sections_and_plots_in_chromium(tmp_path):
    report = _report(tmp_path)
    plot = summary_plot(tmp_path / "summary.png", report.variants)
    page = tmp_path / "report.html"
    page.write_text(render_html("t", "s", build_sections(report, plot, [])), encoding="utf-8")
    seen = probe_page(page, tmp_path)
    assert {"summary", "export", "quantize", "bench"} <= set(seen["sections"])
    images = seen["sections"]["summary"]["images"]
    assert images and all(i["complete"] and i["width"] > 100 for i in images)
    assert "int8: 1.33x requests/s" in seen["sections"]["summary"]["text"]
    assert [r for r in seen["resources"] if not r.startswith(("data:", "file:"))] == []
