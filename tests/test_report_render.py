"""The pipeline report renderers on a report assembled from real step-shaped data; the page in Chromium."""

from __future__ import annotations

import pytest
from browser import CHROMIUM, probe_page

from onnxdeploy.report.html import render_html
from onnxdeploy.report.markdown import render_markdown
from onnxdeploy.report.plots import summary_plot
from onnxdeploy.report.sections import Section, TableData


def _sections(tmp_path):
    """Sections as the renderers get them; the figures are real ones in test_pipeline.py, this
    checks escaping and that both renderers show every cell."""
    rows = [{"variant": "float32", "size_bytes": 4000}, {"variant": "int8 <b>x</b>", "size_bytes": 1100}]
    plot = summary_plot(tmp_path / "summary.png", rows)
    table = TableData("Variants", ["variant", "req/s"], [["float32", "900 (880–920)"],
                                                         ["int8 <b>x</b>", "1200 (1100–1300)"]])
    return [Section("summary", "Summary", lead="Ship int8: 3.6x smaller.", tables=[table],
                    notes=["fastest admissible <b>candidate</b>"], images=[("plot", plot)])], plot


def test_markdown_and_html_escape_and_show_the_same_numbers(tmp_path):
    sections, plot = _sections(tmp_path)
    assert plot is not None and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = render_markdown("t", sections, tmp_path)
    page = render_html("t", "s", sections)
    for text in ("1200 (1100–1300)", "Ship int8: 3.6x smaller."):
        assert text in md and text in page
    assert "<b>candidate</b>" not in page and "&lt;b&gt;candidate&lt;/b&gt;" in page
    assert "data:image/png;base64," in page and "summary.png" in md
    assert "http://" not in page and "https://" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it as root)")
def test_page_renders_sections_and_plots_in_chromium(tmp_path):
    sections, _ = _sections(tmp_path)
    page = tmp_path / "report.html"
    page.write_text(render_html("t", "s", sections), encoding="utf-8")
    seen = probe_page(page, tmp_path)
    assert {"summary"} <= set(seen["sections"])
    images = seen["sections"]["summary"]["images"]
    assert images and all(i["complete"] and i["width"] > 100 for i in images)
    assert "Ship int8: 3.6x smaller." in seen["sections"]["summary"]["text"]
    assert [r for r in seen["resources"] if not r.startswith(("data:", "file:"))] == []
