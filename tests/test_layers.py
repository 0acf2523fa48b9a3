"""Imports run one way: down the layers of ``LAYERS``, and never in a circle.

Every import of every module under ``src/onnxdeploy`` counts: at the top, inside functions, under
``TYPE_CHECKING``, relative ones resolved. ``from pkg import name`` is an import of ``pkg.name``
when that is a module, else of ``pkg`` (its ``__init__``); a package's ``__init__`` running before
its modules is not counted. Imports built from strings (``importlib``: the CLI's lazy commands,
cli -> cli) are not seen. The table is mirrored in docs/architecture.md.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "onnxdeploy"
ROOT = "onnxdeploy"

#: layers, top first; a module may import its own layer and the layers below it. A module belongs
#: to the layer whose prefix it is or starts with (``ROOT`` itself, the package's ``__init__``,
#: only by name: a new top-level module must be given a layer here).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("cli", "__main__")),
    ("pipeline", ("pipeline",)),
    ("steps", ("export", "quantize", "optimize", "compare", "serve", "bench", "deploy", "inspection")),
    ("report", ("report",)),
    # the verdicts: faster/equal/slower words, auto's choice, the recommendation, what ships
    ("judge", ("judge",)),
    ("measure", ("measure",)),
    ("runtimes", ("runtimes",)),
    ("sources", ("sources",)),
    ("zoo", ("zoo",)),
    ("data", ("data",)),
    ("model facts", ("tokenizer", "outputkinds", "inputspec")),
    ("modelfile", ("modelfile",)),
    ("base", ("environment", "errors", "atomic", "wire", "")),
)
#: layers whose prefixes are separate rooms: a step never imports another step (the pipeline and
#: the CLI join them)
ROOMS = {"steps"}

#: violations tolerated for now, as (importer, imported) paths: none since the judge move.
KNOWN: set[tuple[str, str]] = set()


# --------------------------------------------------------------------------- the checker


@functools.lru_cache(maxsize=8)
def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package directory ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """Module -> {module it imports: first line}, for imports inside the package only."""
    mods = modules(root)
    top = root.name

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                if target == top or target.startswith(top + "."):
                    hit = known(target)
                    if hit and hit != name:
                        edges.setdefault(hit, node.lineno)
        graph[name] = edges
    return graph


def layer_of(module: str, layers=LAYERS) -> tuple[int, str, str] | None:
    """(rank, layer, room) of a module, rank 0 at the top; None when the table has no place for it."""
    tail = module.partition(".")[2]
    best = None
    for rank, (layer, prefixes) in enumerate(layers):
        for prefix in prefixes:
            hit = tail == prefix if not prefix else tail == prefix or tail.startswith(prefix + ".")
            if hit and (best is None or len(prefix) > len(best[2])):
                best = (rank, layer, prefix)
    return best


def _path(module: str) -> str:
    tail = module.partition(".")[2]
    return "__init__.py" if not tail else tail.replace(".", "/") + ".py"


def _show(module: str, root: Path) -> str:
    """A module as its path under the package: ``measure/latency.py``, ``data/__init__.py``."""
    mods = modules(root)
    return mods[module].relative_to(root).as_posix() if module in mods else _path(module)


def violations(root: Path, layers=LAYERS, rooms=ROOMS) -> dict[tuple[str, str], str]:
    """(importer, imported) -> the line saying what is wrong, for every import against the table."""
    graph = import_graph(root)
    found = {}
    for name, edges in graph.items():
        mine = layer_of(name, layers)
        if mine is None:
            found[(_show(name, root), "")] = f"{_show(name, root)}: no layer in the table (add it to LAYERS)"
            continue
        for target, line in edges.items():
            theirs = layer_of(target, layers)
            if theirs is None:
                continue  # reported as the target's own line
            a, b = _show(name, root), _show(target, root)
            if theirs[0] < mine[0]:
                found[(a, b)] = f"{a}:{line} -> {b} (layer {mine[1]} imports higher layer {theirs[1]})"
            elif theirs[0] == mine[0] and mine[1] in rooms and theirs[2] != mine[2]:
                found[(a, b)] = (f"{a}:{line} -> {b} ({mine[1]}: {mine[2]} imports {theirs[2]}; "
                                 f"one {mine[1][:-1]} never imports another)")
    return found


def circles(root: Path) -> list[str]:
    """Every import circle between modules, as ``a.py -> b.py -> a.py`` (Tarjan's SCCs)."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [" -> ".join(_show(m, root) for m in _cycle(graph, sorted(comp))) for comp in found]


def _cycle(graph: dict[str, dict[str, int]], comp: list[str]) -> list[str]:
    """One concrete circle through the first module of a strongly connected set."""
    start, members = comp[0], set(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, {})):
            if w == start:
                return [*paths[v], start]
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return [*comp, start]


# --------------------------------------------------------------------------- the package


def test_every_module_has_a_layer():
    missing = [_show(m, SRC) for m in modules(SRC) if layer_of(m) is None]
    assert not missing, "modules without a layer (add them to LAYERS and docs/architecture.md): " + ", ".join(missing)


def test_imports_run_downward():
    found = violations(SRC)
    new = [line for key, line in sorted(found.items()) if key not in KNOWN]
    assert not new, "imports against the layers:\n" + "\n".join(new)
    stale = sorted(KNOWN - set(found))
    assert not stale, f"KNOWN lists imports that no longer happen (remove them): {stale}"


def test_no_import_circles():
    found = circles(SRC)
    assert not found, "import circles:\n" + "\n".join(found)


# --------------------------------------------------------------------------- the checker itself


def _tree(root: Path, files: dict[str, str]) -> Path:
    pkg = root / ROOT
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return pkg


def test_checker_catches_planted_violations(tmp_path):
    pkg = _tree(tmp_path, {
        "__init__.py": "",
        # base imports the pipeline, inside a function
        "errors.py": "def f():\n    from .pipeline import run\n    return run\n",
        "pipeline.py": "from . import errors\n\ndef run():\n    return errors\n",
        # measure imports report under TYPE_CHECKING, report imports it back: upward and a circle
        "measure/__init__.py": "from .latency import x\n",
        "measure/latency.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                               "    from ..report.fmt import y\nx = 1\n"),
        "report/__init__.py": "",
        "report/fmt.py": "import onnxdeploy.measure.latency\ny = 2\n",
        # one step imports another
        "export.py": "from .compare import accuracy\n",
        "compare.py": "accuracy = None\n",
        # fine: downward, and a package's __init__ importing its own module
        "runtimes/__init__.py": "from .onnxruntime import make_session\n",
        "runtimes/onnxruntime.py": "from ..errors import f\nmake_session = f\n",
        # not in the table
        "newthing.py": "",
    })
    found = violations(pkg)
    assert found[("errors.py", "pipeline.py")] == "errors.py:2 -> pipeline.py (layer base imports higher layer pipeline)"
    assert found[("measure/latency.py", "report/fmt.py")].startswith(
        "measure/latency.py:3 -> report/fmt.py (layer measure imports higher layer report)")
    assert "one step never imports another" in found[("export.py", "compare.py")]
    assert "newthing.py: no layer" in found[("newthing.py", "")]
    assert len(found) == 4, found
    assert sorted(circles(pkg)) == ["errors.py -> pipeline.py -> errors.py",
                                    "measure/latency.py -> report/fmt.py -> measure/latency.py"]


def test_checker_passes_a_clean_tree(tmp_path):
    pkg = _tree(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "data/__init__.py": "from .load import load_data\n",
        "data/load.py": "from ..errors import *\nfrom .dataset import DataSet\n\ndef load_data():\n    from .text import t\n",
        "data/dataset.py": "DataSet = None\n",
        "data/text.py": "from .dataset import DataSet\nt = DataSet\n",
        "measure/__init__.py": "def f():\n    from onnxdeploy.data import load_data\n",
    })
    assert violations(pkg) == {}
    assert circles(pkg) == []
