"""Adapters for load tools found on the PATH (wrk): same requests, same result shape as ours.

wrk runs for a duration, not a count, and keeps only its own latency histogram, so its runs
carry percentiles without raw latencies; a Lua ``done`` hook prints them in microseconds.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import MissingDependencyError, ServerError

#: wrk has no request-count mode; a count becomes this duration
DEFAULT_DURATION_S = 3.0
_MARK = "ONNXDEPLOY_RESULT "

_WRK_LUA = r"""
local bodies = {}
local path = "__PATH__"
local method = "__METHOD__"
local file = "__BODIES__"
if file ~= "" then
  for line in io.lines(file) do bodies[#bodies + 1] = line end
end
-- One body (or none): a static request, which wrk builds once; several: a request() function,
-- which wrk calls per request in Lua and which costs it (and the shared CPU) noticeably more.
wrk.method = method
if #bodies == 1 then
  wrk.body = bodies[1]
  wrk.headers["Content-Type"] = "application/json"
elseif #bodies > 1 then
  local counter = 0
  request = function()
    counter = counter + 1
    local body = bodies[(counter % #bodies) + 1]
    return wrk.format(method, path, {["Content-Type"] = "application/json"}, body)
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '__MARK__{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"max":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max))
end
"""


@dataclass
class ExternalResult:
    """What an external tool measured: successes, errors by kind, percentiles (ms), CPU seconds."""

    requests: int
    errors: dict[str, int]
    elapsed_s: float
    latency_ms: dict[str, float]
    cpu_s: float


def available(tool: str) -> bool:
    """True when ``tool`` is on the PATH."""
    return shutil.which(tool) is not None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    url: str, path: str, bodies: list[bytes] | None, *, concurrency: int, duration_s: float,
    threads: int = 1, timeout_s: float = 30.0,
) -> ExternalResult:
    """Run wrk for ``duration_s`` with ``concurrency`` connections; POST the bodies in turn, else GET."""
    exe = shutil.which("wrk")
    if exe is None:
        raise MissingDependencyError("--engine wrk: wrk is not on the PATH (e.g. apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-wrk-") as tmp:
        body_file = ""
        if bodies:
            body_file = str(Path(tmp) / "bodies.jsonl")
            Path(body_file).write_bytes(b"\n".join(bodies) + b"\n")
        script = Path(tmp) / "bench.lua"
        script.write_text(
            _WRK_LUA.replace("__PATH__", path).replace("__BODIES__", body_file)
            .replace("__METHOD__", "POST" if bodies else "GET").replace("__MARK__", _MARK)
        )
        argv = [exe, "-t", str(max(1, min(threads, concurrency))), "-c", str(concurrency),
                "-d", f"{max(1, round(duration_s))}s", "--timeout", f"{max(1, round(timeout_s))}s",
                "-s", str(script), url.rstrip("/") + path]
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=duration_s + timeout_s + 30)
        wall = time.perf_counter() - t0
        cpu = _children_cpu() - cpu0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise ServerError(f"wrk failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")
    raw = json.loads(line[len(_MARK):])
    errors = {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    if "status" in errors:
        errors["http_error"] = errors.pop("status")
    ok = max(0, int(raw["requests"]) - errors.get("http_error", 0))
    elapsed = raw["duration_us"] / 1e6 or wall
    latency = {k: raw[k] / 1000.0 for k in ("p50", "p90", "p95", "p99", "max")}
    return ExternalResult(ok, errors, elapsed, latency, cpu)
