"""Serving benchmark: our gunicorn server against the tutorial Flask app, and batching on/off.

Scenario ``tutorial``: digits-cnn, one sample a request, ``onnxdeploy serve`` (defaults) against
``benchmarks/tutorial_app.py`` (Flask's own server) at each concurrency. Scenario ``batching``:
digits-mlp, the same server with and without ``--max-batch-size`` (same thread settings), plus
the default server for reference. Scenario ``overload``: digits-cnn, one worker with default
settings, a burst of ``--burst`` connections (far beyond ``--max-inflight``) while a prober
times ``/v2/health/live`` and ``/v2/health/ready`` on fresh connections; shows the share of
fast 503s and the probes' latency. Targets are run alternately (A B, then B A ...) and repeated;
the table shows medians. Load comes from wrk when it is on PATH, else a Python asyncio client
(the bench package's engine)
with keep-alive connections and one pre-encoded request. Both share the 2 cores with the servers,
so compare ratios, not absolute numbers.

    python benchmarks/serve.py [--duration 5] [--repeats 3] [--scenarios tutorial,batching,overload]
                               [--burst 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from onnxdeploy.bench.bodies import http_request
from onnxdeploy.bench.engines import wrk as external
from onnxdeploy.bench.engines.native import LoadSpec, run_load
from onnxdeploy.bench.servers import free_port
from onnxdeploy.bench.stats import latency_summary
from onnxdeploy.data import digits_split
from onnxdeploy.export import ExportOptions, export_model
from onnxdeploy.report.jsonio import write_json

HERE = Path(__file__).resolve().parent
GOAL_TUTORIAL_RATIO = 3.0  # digits-cnn, c=8: ours / tutorial
GOAL_BATCHING_RATIO = 1.5  # digits-mlp, c=32: batching / same server without
BATCH_ARGS = ["--max-batch-size", "32", "--batch-timeout-ms", "2"]
BATCH_THREADS = ["--threads", "16"]  # batching needs several requests in a worker at once


def body_for(model: str) -> bytes:
    """One sample a request (the first digit of the built-in test split), shaped for the model."""
    sample = digits_split()[2][0]
    x = sample.reshape(1, 1, 8, 8) if model == "digits-cnn" else sample.reshape(1, 64)
    return json.dumps({"inputs": x.tolist()}).encode()


# --------------------------------------------------------------------------- servers


@dataclass
class Target:
    name: str
    argv: list[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def ours(name: str, model: Path, *extra: str) -> Target:
    cli = [sys.executable, "-m", "onnxdeploy", "serve", str(model), "--port", "{port}", *extra]
    return Target(name, cli)


def tutorial(model: Path) -> Target:
    return Target("tutorial", [sys.executable, str(HERE / "tutorial_app.py"), str(model),
                               "--port", "{port}"])


def export(name: str, out_dir: Path) -> Path:
    """The built-in model as ONNX, reused when already there."""
    path = out_dir / f"{name}.onnx"
    if not path.exists():
        export_model(name, path, ExportOptions())
    return path


# --------------------------------------------------------------------------- load generators


@dataclass
class Run:
    target: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def run_wrk(url: str, body: bytes, concurrency: int, duration: float, name: str) -> Run:
    """One wrk run through the bench package's adapter."""
    r = external.run_wrk(url, "/predict", [body], concurrency=concurrency, duration_s=duration,
                         threads=2)
    errors = sum(r.errors.values())
    total = r.requests + errors
    return Run(name, concurrency, total / r.elapsed_s, r.latency_ms["p50"], r.latency_ms["p99"],
               errors, total)


def run_python(url: str, body: bytes, concurrency: int, duration: float, name: str) -> Run:
    """One run of the bench package's asyncio engine (when wrk is not installed)."""
    port = int(url.rsplit(":", 1)[1])
    raw = http_request("POST", "/predict", f"127.0.0.1:{port}", body)
    r = run_load(LoadSpec("127.0.0.1", port, [raw], concurrency=concurrency, duration_s=duration))
    lat = latency_summary(r.latencies_us)
    errors = sum(r.errors.values())
    total = r.ok + errors
    return Run(name, concurrency, total / r.elapsed_s, lat["p50"] or 0.0, lat["p99"] or 0.0,
               errors, total)


# --------------------------------------------------------------------------- scenarios


def measure(targets: list[Target], model: str, concurrencies: list[int], *, duration: float,
            repeats: int, engine) -> list[Run]:
    body = body_for(model)
    runs: list[Run] = []
    for t in targets:
        t.start()
    try:
        for t in targets:
            engine(t.url, body, 8, 1.0, t.name)  # warm-up
        for r in range(repeats):
            for c in concurrencies:
                order = targets if r % 2 == 0 else list(reversed(targets))
                for t in order:
                    run = engine(t.url, body, c, duration, t.name)
                    print(f"  {model} {t.name:<26} c={c:<3} {run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms"
                          f"  p99 {run.p99_ms:7.2f} ms  errors {run.errors}", file=sys.stderr)
                    runs.append(run)
    finally:
        for t in targets:
            t.stop()
    return runs


def probe(port: int, path: str) -> tuple[int, float]:
    """(status, ms) of one GET on a fresh connection, as an orchestrator's probe does it."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status, (time.perf_counter() - t0) * 1e3
    finally:
        conn.close()


def overload(target: Target, model: str, connections: int, duration: float, engine) -> dict:
    """One burst of ``connections`` against ``target`` while health is probed every 50 ms."""
    body = body_for(model)
    result: dict = {}
    target.start()
    try:
        engine(target.url, body, 8, 1.0, target.name)  # warm-up
        load = threading.Thread(target=lambda: result.setdefault(
            "run", engine(target.url, body, connections, duration, target.name)))
        load.start()
        time.sleep(min(1.0, duration / 4))
        probes: dict[str, list] = {"live": [], "ready": []}
        while load.is_alive():
            for kind in probes:
                probes[kind].append(probe(target.port, f"/v2/health/{kind}"))
            time.sleep(0.05)
        load.join()
    finally:
        target.stop()
    run: Run = result["run"]
    row = {"target": target.name, "connections": connections, "rps": run.rps,
           "refused_share": run.errors / max(1, run.requests), "p50_ms": run.p50_ms,
           "p99_ms": run.p99_ms}
    for kind, got in probes.items():
        ms = sorted(t for _, t in got)
        row[f"{kind}_ok"] = sum(s == 200 for s, _ in got) == len(got) > 0
        row[f"{kind}_p50_ms"] = ms[len(ms) // 2] if ms else None
        row[f"{kind}_max_ms"] = ms[-1] if ms else None
    print(f"  overload {target.name}: {run.rps:.0f} req/s, {row['refused_share']:.0%} refused, "
          f"live p50 {row['live_p50_ms']:.1f} ms max {row['live_max_ms']:.1f} ms", file=sys.stderr)
    return row


def summarize(runs: list[Run]) -> list[dict]:
    """Median rps/p50/p99 per (target, concurrency)."""
    keys = sorted({(r.target, r.concurrency) for r in runs}, key=lambda k: (k[1], k[0]))
    rows = []
    for target, c in keys:
        sel = [r for r in runs if r.target == target and r.concurrency == c]
        rows.append({"target": target, "concurrency": c,
                     "rps": statistics.median(r.rps for r in sel),
                     "p50_ms": statistics.median(r.p50_ms for r in sel),
                     "p99_ms": statistics.median(r.p99_ms for r in sel),
                     "errors": sum(r.errors for r in sel), "repeats": len(sel)})
    return rows


def rps(rows: list[dict], target: str, c: int) -> float:
    return next(r["rps"] for r in rows if r["target"] == target and r["concurrency"] == c)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--engine", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--models-dir", help="reuse exported built-ins from here")
    p.add_argument("--scenarios", default="tutorial,batching,overload",
                   help="comma-separated subset of tutorial,batching,overload")
    p.add_argument("--burst", type=int, default=128, help="connections in the overload burst")
    p.add_argument("--json", dest="json_path", help="write the results here")
    args = p.parse_args()
    # A killed benchmark must still stop its servers (the finally blocks in measure()).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    use_wrk = args.engine == "wrk" or (args.engine == "auto" and shutil.which("wrk"))
    engine = run_wrk if use_wrk else run_python
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    models_dir = Path(args.models_dir or tempfile.mkdtemp(prefix="onnxdeploy-bench-serve-"))
    models_dir.mkdir(parents=True, exist_ok=True)
    cnn, mlp = export("digits-cnn", models_dir), export("digits-mlp", models_dir)

    scenarios = set(args.scenarios.split(","))
    kw = {"duration": args.duration, "repeats": args.repeats, "engine": engine}
    tut = bat = over = None
    ratios: dict = {}
    c_bat = 32 if 32 in concurrencies else max(concurrencies)
    if "tutorial" in scenarios:
        tut = summarize(measure([ours("onnxdeploy", cnn), tutorial(cnn)], "digits-cnn",
                                concurrencies, **kw))
        if 8 in concurrencies:
            ratios["cnn_c8_vs_tutorial"] = rps(tut, "onnxdeploy", 8) / rps(tut, "tutorial", 8)
    if "batching" in scenarios:
        bat = summarize(measure([ours("onnxdeploy", mlp),
                                 ours("onnxdeploy threads16", mlp, *BATCH_THREADS),
                                 ours("onnxdeploy threads16+batch", mlp, *BATCH_THREADS, *BATCH_ARGS)],
                                "digits-mlp", [c for c in concurrencies if c >= 8] or [32], **kw))
        ratios["mlp_batching"] = (rps(bat, "onnxdeploy threads16+batch", c_bat)
                                  / rps(bat, "onnxdeploy threads16", c_bat))
        ratios["mlp_batching_vs_default"] = (rps(bat, "onnxdeploy threads16+batch", c_bat)
                                             / rps(bat, "onnxdeploy", c_bat))
    if "overload" in scenarios:
        over = [overload(ours("onnxdeploy 1 worker", cnn, "--workers", "1"), "digits-cnn",
                         args.burst, max(args.duration, 4.0), engine) for _ in range(args.repeats)]

    print(f"\nload generator: {'wrk' if use_wrk else 'python asyncio'}; {args.repeats} repeats x "
          f"{args.duration:g}s, medians; cpus: {len(os.sched_getaffinity(0))}")
    if tut or bat:
        print(f"{'model':<11} {'target':<27} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for model, rows in (("digits-cnn", tut or []), ("digits-mlp", bat or [])):
        for r in rows:
            print(f"{model:<11} {r['target']:<27} {r['concurrency']:>3} {r['rps']:>8.0f} "
                  f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>6}")
    if "cnn_c8_vs_tutorial" in ratios:
        r = ratios["cnn_c8_vs_tutorial"]
        print(f"digits-cnn c=8: onnxdeploy / tutorial = {r:.2f}x "
              f"(goal >= {GOAL_TUTORIAL_RATIO}x: {'met' if r >= GOAL_TUTORIAL_RATIO else 'MISSED'})")
    if "mlp_batching" in ratios:
        r = ratios["mlp_batching"]
        print(f"digits-mlp c={c_bat}: batching / same server without = {r:.2f}x "
              f"(goal >= {GOAL_BATCHING_RATIO}x: {'met' if r >= GOAL_BATCHING_RATIO else 'MISSED'}); "
              f"batching / default server = {ratios['mlp_batching_vs_default']:.2f}x")
    if over:
        print(f"\noverload, digits-cnn, one worker, defaults, {args.burst} connections:")
        print(f"{'req/s':>8} {'refused':>8} {'p50 ms':>8} {'p99 ms':>8} {'live p50':>9} {'live max':>9} "
              f"{'ready p50':>10} {'ready max':>10} {'probes ok':>9}")
        for o in over:
            print(f"{o['rps']:>8.0f} {o['refused_share']:>8.0%} {o['p50_ms']:>8.2f} {o['p99_ms']:>8.2f} "
                  f"{o['live_p50_ms']:>9.1f} {o['live_max_ms']:>9.1f} {o['ready_p50_ms']:>10.1f} "
                  f"{o['ready_max_ms']:>10.1f} {str(o['live_ok'] and o['ready_ok']):>9}")
    if args.json_path:
        write_json(args.json_path, {
            "engine": "wrk" if use_wrk else "python", "duration_s": args.duration,
            "repeats": args.repeats, "tutorial": tut, "batching": bat, "overload": over,
            "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
