"""The longest functions under a source tree (lines from ``def`` to its last line).

    python scripts/biggest_functions.py [src/onnxdeploy] [--top 5]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="src/onnxdeploy")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    root = Path(args.root)
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root)}:{node.name}"))
    for lines, where in sorted(rows, reverse=True)[: args.top]:
        print(f"{lines:5d}  {where}")


if __name__ == "__main__":
    main()
