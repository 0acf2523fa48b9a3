"""Locust as a load engine, always in its own process (importing locust monkey-patches with gevent).

The generated locustfile measures every request itself and writes the latencies to a file at
exit; ``write_locustfile`` hands the same file to users for their own Locust cluster.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...atomic import atomic_write
from ...errors import MissingDependencyError, ServerError
from ..bodies import PREDICT_PATH
from .locustfile_template import TEMPLATE

#: a locustfile embeds at most this many bodies, to stay readable and small
MAX_EMBEDDED_BODIES = 256
#: safety net on a count-limited run: the locustfile quits itself well before this
COUNT_RUN_LIMIT_S = 600


def render_locustfile(bodies: list[bytes], *, path: str = PREDICT_PATH, source: str = "") -> str:
    """Text of a self-contained locustfile that POSTs ``bodies`` in turn."""
    chosen = [b.decode() for b in bodies[:MAX_EMBEDDED_BODIES]]
    return (
        TEMPLATE
        .replace("__SOURCE__", source or "generated")
        .replace("__PATH__", repr(path))
        .replace("__BODIES__", repr(json.dumps(chosen)))
    )


def write_locustfile(path: str | os.PathLike, bodies: list[bytes], *, source: str = "") -> Path:
    """Write the locustfile atomically and return its path."""
    return atomic_write(path, render_locustfile(bodies, source=source))


def locust_argv() -> list[str]:
    """How to run the locust CLI: the script beside this interpreter, else on the PATH."""
    beside = Path(sys.executable).with_name("locust")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("locust")
    if found:
        return [found]
    raise MissingDependencyError("--engine locust: locust is not installed; pip install 'onnxdeploy[bench]'")


@dataclass
class LocustResult:
    """Per-request latencies (µs) and errors as the locustfile recorded them."""

    latencies_us: np.ndarray
    errors: dict[str, int]
    elapsed_s: float
    cpu_s: float


def run_locust(
    url: str, bodies: list[bytes], *, concurrency: int, total: int | None = None,
    duration_s: float | None = None, path: str = PREDICT_PATH,
) -> LocustResult:
    """Run one headless Locust process with ``concurrency`` users for a count or a duration."""
    argv0 = locust_argv()
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-locust-") as tmp:
        lf = Path(tmp) / "locustfile.py"
        lf.write_text(render_locustfile(bodies, path=path, source="onnxdeploy bench --engine locust"))
        out = Path(tmp) / "result.json"
        env = dict(os.environ, ONNXDEPLOY_OUT=str(out), ONNXDEPLOY_REQUESTS=str(total or 0))
        run_time = duration_s if duration_s is not None else COUNT_RUN_LIMIT_S
        argv = [*argv0, "-f", str(lf), "--headless", "-u", str(concurrency), "-r", str(concurrency),
                "-H", url, "-t", f"{max(1, round(run_time))}s", "--only-summary",
                "--loglevel", "ERROR", "--exit-code-on-error", "0", "--stop-timeout", "5"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp,
                              timeout=run_time + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not out.exists():
            raise ServerError(f"locust failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        raw = json.loads(out.read_text())
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return LocustResult(np.asarray(raw["latencies_us"], dtype=np.int64), raw["errors"],
                        float(raw["elapsed_s"]) or 1e-9, cpu)
