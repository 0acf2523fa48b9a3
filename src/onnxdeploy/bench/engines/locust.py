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
from ...errors import MissingDependencyError, OptionError, ServerError
from ..bodies import PREDICT_PATH
from ..servers import free_port
from .locustfile_template import TEMPLATE

#: a locustfile embeds at most this many bodies, to stay readable and small
MAX_EMBEDDED_BODIES = 256
#: safety net on a count-limited run: the locustfile quits itself well before this
COUNT_RUN_LIMIT_S = 600
#: seconds a Locust master waits for its workers to connect
WORKER_WAIT_S = 60


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
    """Per-request latencies (µs) and errors as the locustfile recorded them, merged over workers."""

    latencies_us: np.ndarray
    errors: dict[str, int]
    elapsed_s: float
    cpu_s: float
    first_error: str | None = None
    workers: int = 0


def _split_master(master: str) -> tuple[str, int]:
    host, _, port = master.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not host or not 1 <= number <= 65535:
        raise OptionError(f"--locust-master {master}: expected HOST:PORT with a port 1-65535, e.g. 0.0.0.0:5557")
    return host, number


def run_locust(
    url: str, bodies: list[bytes], *, concurrency: int, total: int | None = None,
    duration_s: float | None = None, path: str = PREDICT_PATH, workers: int = 0,
    master: str | None = None, expect_workers: int | None = None, say=None,
) -> LocustResult:
    """Run Locust for a count or a duration: one standalone process, or a master with ``workers``
    local worker processes (and, with ``master``, any that join from other machines)."""
    argv0 = locust_argv()
    distributed = bool(workers or master)
    expect = expect_workers or workers
    if distributed and expect < 1:
        raise OptionError("--locust-master needs --expect-workers N (workers that will join) or --locust-workers N")
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-locust-") as tmp:
        lf = Path(tmp) / "locustfile.py"
        lf.write_text(render_locustfile(bodies, path=path, source="onnxdeploy bench --engine locust"))
        out = Path(tmp) / "result.json"
        env = dict(os.environ, ONNXDEPLOY_OUT=str(out), ONNXDEPLOY_REQUESTS=str(total or 0),
                   ONNXDEPLOY_DURATION=str(duration_s or 0), ONNXDEPLOY_WORKERS=str(expect if distributed else 0))
        run_time = (duration_s if duration_s is not None else COUNT_RUN_LIMIT_S) + 60  # a safety net only
        common = ["-f", str(lf), "--loglevel", "ERROR"]
        argv = [*argv0, *common, "--headless", "-u", str(concurrency), "-r", str(concurrency), "-H", url,
                "-t", f"{max(1, round(run_time))}s", "--only-summary", "--exit-code-on-error", "0",
                "--stop-timeout", "5"]
        helpers: list[subprocess.Popen] = []
        if distributed:
            bind_host, bind_port = _split_master(master) if master else ("127.0.0.1", free_port())
            argv += ["--master", "--master-bind-host", bind_host, "--master-bind-port", str(bind_port),
                     "--expect-workers", str(expect), "--expect-workers-max-wait", str(WORKER_WAIT_S)]
            connect = "127.0.0.1" if bind_host in ("*", "0.0.0.0", "") else bind_host
            worker_argv = [*argv0, *common, "--worker", "--master-host", connect, "--master-port", str(bind_port)]
            if master and say:
                say(f"Locust master on {bind_host}:{bind_port} waits for {expect} worker(s); join with: "
                    f"locust -f LOCUSTFILE --worker --master-host HOST --master-port {bind_port} "
                    "(--write-locustfile writes LOCUSTFILE)")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env, cwd=tmp)
            if distributed:
                # workers get the plain environment: whatever the master asks them is sent over the wire
                worker_env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXDEPLOY_")}
                helpers = [subprocess.Popen(worker_argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                            text=True, env=worker_env, cwd=tmp) for _ in range(workers)]
            try:
                _, stderr = proc.communicate(timeout=run_time + WORKER_WAIT_S + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate()
                raise ServerError("locust did not finish in time") from None
        finally:
            # the workers sent their results before the master quit; a worker whose master has
            # gone waits for heartbeats for a minute, so end ours now
            for helper in helpers:
                if helper.poll() is None:
                    helper.terminate()
            for helper in helpers:
                try:
                    helper.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    helper.kill()
                    helper.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if os.environ.get("DBG"):
            print(stderr[-3000:])
        if proc.returncode != 0 or not out.exists():
            raise ServerError(f"locust failed (exit {proc.returncode}): {stderr.strip()[-500:]}")
        raw = json.loads(out.read_text())
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return LocustResult(np.asarray(raw["latencies_us"], dtype=np.int64), raw["errors"],
                        float(raw["elapsed_s"]) or 1e-9, cpu, raw.get("first_error"), int(raw.get("workers", 0)))
