"""The README's Python example runs as written, in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.slow


def _python_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python block under 'From Python'"
    return match.group(1)


def test_readme_python_example_runs_as_written(tmp_path, zoo_cache):
    code = _python_block()
    assert "import onnxdeploy" in code and "quantize_model" in code
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "ONNXDEPLOY_CACHE": str(zoo_cache)}, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "mlp.onnx").is_file() and (tmp_path / "mlp.int8.onnx").is_file()
    first, second = proc.stdout.strip().splitlines()[-2:]
    assert " - " in first and "x smaller, accuracy 0." in second


def test_the_package_face_is_light_and_complete():
    code = ("import sys, onnxdeploy; names = onnxdeploy.__all__[1:]; "
            "[getattr(onnxdeploy, n) for n in names]; print(len(names), 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, torch_loaded = proc.stdout.split()
    assert int(count) >= 18 and torch_loaded == "False"
