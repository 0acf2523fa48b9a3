"""Pipeline report as one self-contained HTML page: inline CSS, images embedded, no network."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from ..atomic import atomic_write
from .sections import Section

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7fb}
header{background:#1d2b4f;color:#fff;padding:24px 40px}
header h1{margin:0 0 6px;font-size:24px} header p{margin:0;opacity:.9}
nav.path{display:flex;flex-wrap:wrap;gap:8px;padding:14px 40px;background:#e8ecf6}
nav.path a{background:#fff;border:1px solid #c9d1e6;border-radius:16px;padding:3px 12px;color:#1d2b4f;text-decoration:none}
nav.path span{align-self:center;color:#7a86a8}
main{padding:10px 40px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde2ee;border-radius:10px;padding:16px 22px;margin:18px 0}
section h2{margin:4px 0 10px;font-size:19px}
p.lead{margin:0 0 12px;font-size:16px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13.5px}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border-bottom:1px solid #e4e7ef;padding:5px 10px;text-align:left;vertical-align:top}
th{background:#f1f3f9}
td:not(:first-child){font-variant-numeric:tabular-nums}
ul.notes{margin:6px 0 10px;padding-left:20px;color:#5b4300}
figure{margin:10px 0} figure img{max-width:100%;border:1px solid #e4e7ef;border-radius:6px}
figcaption{font-size:13px;color:#5a6275}
#summary p.lead{font-weight:600;color:#0b5d1e}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _section(sec: Section) -> str:
    parts = [f'<section id="{escape(sec.id)}" class="step">', f"<h2>{escape(sec.title)}</h2>"]
    if sec.lead:
        parts.append(f'<p class="lead">{escape(sec.lead)}</p>')
    for table in sec.tables:
        head = "".join(f"<th>{escape(h)}</th>" for h in table.headers) if any(table.headers) else ""
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
        )
        parts.append(
            f"<table><caption>{escape(table.title)}</caption>"
            + (f"<thead><tr>{head}</tr></thead>" if head else "")
            + f"<tbody>{body}</tbody></table>"
        )
    if sec.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in sec.notes) + "</ul>")
    for caption, path in sec.images:
        if Path(path).is_file():
            parts.append(
                f'<figure class="plot"><img alt="{escape(caption)}" src="{_img(path)}">'
                f"<figcaption>{escape(caption)}</figcaption></figure>"
            )
    parts.append("</section>")
    return "\n".join(parts)


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page as a string."""
    nav = ' <span>→</span> '.join(
        f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in sections
    )
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f'<nav class="path">{nav}</nav><main>'
        + "\n".join(_section(s) for s in sections)
        + "</main></body></html>\n"
    )


def write_html(path: str | Path, title: str, subtitle: str, sections: list[Section]) -> Path:
    """Write the page atomically."""
    target = Path(path)
    atomic_write(target, render_html(title, subtitle, sections))
    return target
