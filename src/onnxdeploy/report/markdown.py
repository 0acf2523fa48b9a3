"""Pipeline report as Markdown (images referenced by relative path)."""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import atomic_write
from .sections import Section


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list[Section], base: Path) -> str:
    """Markdown text of the sections; image paths relative to ``base``."""
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        if sec.lead:
            lines += [sec.lead, ""]
        for table in sec.tables:
            lines += [f"**{table.title}**", ""]
            lines.append("| " + " | ".join(_cell(h) or " " for h in table.headers) + " |")
            lines.append("|" + "---|" * len(table.headers))
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
            lines.append("")
        for note in sec.notes:
            lines += [f"- {note}"]
        if sec.notes:
            lines.append("")
        for caption, path in sec.images:
            lines += [f"![{caption}]({os.path.relpath(path, base)})", ""]
    return "\n".join(lines)


def write_markdown(path: str | Path, title: str, sections: list[Section]) -> Path:
    """Write the Markdown report atomically."""
    target = Path(path)
    atomic_write(target, render_markdown(title, sections, target.parent))
    return target
