"""gRPC (ModelInfer, raw contents) against REST v2 JSON on one model, and HTTP with gRPC on/off.

    python benchmarks/grpc.py MODEL.onnx [--concurrency 8] [--duration 3] [--repeats 3]

Starts ``onnxdeploy serve MODEL --grpc-port`` (and the same server without gRPC), then runs,
alternated, ``--repeats`` times each:

- ``grpc``: bench's gRPC client (grpc.aio, pre-encoded ModelInferRequest, raw_input_contents);
- ``rest-v2-json``: bench's native HTTP engine posting the same row as v2 JSON to
  ``/v2/models/NAME/infer``;
- ``http-predict, grpc on`` / ``grpc off``: ``/predict`` JSON against the server with and without
  ``--grpc-port`` (gRPC must cost HTTP nothing while idle).

Both clients are Python on the same cores as the server: read the ratios, not the absolutes.
Prints one JSON object (medians, min-max) on stdout.

``--h2load`` (the issue's speed table) measures with compiled generators instead, side by side,
alternated, ``--repeats`` rounds of ``--duration`` s at ``--concurrency`` (8):

- ``grpc``: ``h2load`` (Debian's ``nghttp2-client``) replaying one pre-encoded unary ModelInfer
  call (raw contents, one sample; a gRPC length-prefixed message, ``te: trailers``) over
  ``--concurrency`` connections, one stream each, one h2load thread;
- ``rest-v2-json``: ``wrk`` (2 threads) posting the same sample as v2 JSON to the same server;
- ``--floor`` adds two do-nothing targets: ``grpc-floor`` (``benchmarks/grpc_floor_app.py``:
  grpcio's thread-pool server, 2 processes on one ``SO_REUSEPORT`` port as serve's workers,
  answering every call with a fixed response, also as ``grpc-floor-aio`` on grpcio's asyncio
  server) and ``rest-floor`` (``benchmarks/floor_app.py`` under granian as serve runs it). They
  are the transports' ceilings here: gRPC / REST can be no better than their ratio, and no
  grpcio server better than ``grpc-floor`` / ``kserve-grpc`` against KServe;
- ``--baseline-src DIR`` adds ``grpc-baseline`` and ``rest-baseline``: the same server from
  another source tree (a change measured side by side with what it changes);
- ``kserve-grpc``: the same h2load call against KServe's gRPC server
  (``benchmarks/kserve_app.py``: one ``kserve.Model`` with an ORT session), run from the venv
  given by ``--kserve-venv`` (default /work/venv-kserve); skipped, and said so, when absent.

h2load counts HTTP/2 answers, not gRPC statuses: our server's ``/metrics`` (``v2_infer`` over
``grpc`` by status) must show as many 200s as h2load counted successes, else the run is marked.
p99 comes from h2load's per-request log and wrk's histogram. Each generator's CPU use (its
user + system time over the run's wall time, in cores) is printed beside its figures: one h2load
thread below ~0.9 cores and wrk below ~1.8 were not the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

# this file is named grpc.py: its directory, first on sys.path, would shadow the grpc package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from onnxdeploy.bench.bodies import http_request, predict_body  # noqa: E402
from onnxdeploy.bench.engines.native import LoadSpec, run_load  # noqa: E402
from onnxdeploy.bench.grpcload import encode_infer, run_grpc_load  # noqa: E402
from onnxdeploy.bench.servers import free_port  # noqa: E402


def start(model: str, *extra: str, src: str | None = None) -> tuple[subprocess.Popen, int]:
    """``onnxdeploy serve MODEL --name m`` on a free port (from the source tree ``src`` when
    given), ready."""
    port = free_port()
    env = None if src is None else {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    proc = subprocess.Popen([sys.executable, "-m", "onnxdeploy", "serve", model, "--port",
                             str(port), "--name", "m", *extra], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    import urllib.request

    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                time.sleep(1.0)  # every worker up
                return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server not ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (not compressed), as sent on the wire."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def run_h2load(port: int, frame_path: Path, concurrency: int, duration: float) -> dict:
    """One h2load run of the pre-encoded ModelInfer call: rps, p99, successes, CPU in cores."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        log = Path(tmp) / "log.tsv"
        argv = ["h2load", "-c", str(concurrency), "-m", "1", "-t", "1", "-D", f"{duration:g}",
                f"--data={frame_path}", "-H", "content-type: application/grpc", "-H",
                "te: trailers", f"--log-file={log}",
                f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer"]
        cpu0, t0 = children_cpu(), time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
        if out.returncode != 0:
            raise RuntimeError(f"h2load failed: {out.stderr.strip() or out.stdout.strip()}")
        import re

        finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out.stdout)
        counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded",
                           out.stdout)
        lat = [int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip()]
    return {"rps": float(finished.group(2)), "succeeded": int(counts.group(3)),
            "p99_ms": float(np.percentile(lat, 99)) / 1e3 if lat else None,
            "generator_cores": cpu / wall}


def run_wrk_v2(port: int, body: bytes, concurrency: int, duration: float) -> dict:
    from onnxdeploy.bench.engines import wrk

    cpu0, t0 = children_cpu(), time.monotonic()
    r = wrk.run_wrk(f"http://127.0.0.1:{port}", "/v2/models/m/infer", [body],
                    concurrency=concurrency, duration_s=duration, threads=2)
    wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
    return {"rps": r.requests / r.elapsed_s, "succeeded": r.requests,
            "errors": sum(r.errors.values()), "p99_ms": r.latency_ms["p99"],
            "generator_cores": cpu / wall}


def grpc_200s(port: int) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "onnxdeploy_requests_total" and s.labels.get("protocol") == "grpc"
               and s.labels.get("endpoint") == "v2_infer" and s.labels.get("status") == "200")


def start_kserve(venv: Path, model: str) -> tuple[subprocess.Popen, int]:
    import grpc as grpclib

    port, http_port = free_port(), free_port()
    proc = subprocess.Popen([str(venv / "bin" / "python"), str(_HERE / "kserve_app.py"), model,
                             "--name", "m", "--grpc-port", str(port), "--http-port",
                             str(http_port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            grpclib.channel_ready_future(grpclib.insecure_channel(f"127.0.0.1:{port}")).result(1)
            time.sleep(1.0)
            return proc, port
        except grpclib.FutureTimeoutError:
            if proc.poll() is not None:
                break
    stop(proc)
    raise RuntimeError("the KServe server did not start")


def start_floors() -> tuple[list[subprocess.Popen], dict[str, int]]:
    """The do-nothing servers of ``--floor``: grpcio sync and aio, and granian RSGI."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(_HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    procs, ports = [], {}
    for name, kind in (("grpc-floor", "sync"), ("grpc-floor-aio", "aio")):
        port = free_port()
        procs.append(subprocess.Popen(
            [sys.executable, str(_HERE / "grpc_floor_app.py"), str(port), "--kind", kind,
             "--processes", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        ports[name] = port
    port = free_port()
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "rsgi", "--workers", "2",
         "--runtime-threads", "1", "--no-ws", "--port", str(port), "--working-dir", str(_HERE),
         "floor_app:app"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True))
    ports["rest-floor"] = port
    time.sleep(5.0)  # every process listening (h2load and wrk fail loudly otherwise)
    return procs, ports


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def h2load_table(args) -> None:
    import shutil
    import tempfile

    from onnxdeploy.bench.targets import file_signature

    for tool in ("h2load", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH (apt-get install nghttp2-client wrk)")
    sig = file_signature(args.model)
    spec = sig.inputs[0]
    shape = [1 if d is None or not isinstance(d, int) or d <= 0 else d for d in spec.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(spec.dtype)
    pred = predict_body(sig, {spec.name: x})
    v2 = orjson.dumps({"inputs": [{"name": spec.name, "shape": list(x.shape),
                                   "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
    (message,) = encode_infer([pred], sig, "m", texts=False)
    tmp = Path(tempfile.mkdtemp(prefix="onnxdeploy-bench-grpc-"))
    frame = tmp / "model_infer.bin"
    frame.write_bytes(grpc_frame(message))
    grpc_port = free_port()
    ours, http_port = start(args.model, "--grpc-port", str(grpc_port))
    venv = Path(args.kserve_venv)
    kserve = kserve_port = None
    skipped = None
    if (venv / "bin" / "python").exists():
        try:
            kserve, kserve_port = start_kserve(venv, args.model)
        except RuntimeError as exc:
            skipped = str(exc)
    else:
        skipped = f"no KServe venv at {venv} (see benchmarks/kserve_app.py)"
    c, d = args.concurrency, args.duration
    runs = {"grpc": lambda: run_h2load(grpc_port, frame, c, d),
            "rest-v2-json": lambda: run_wrk_v2(http_port, v2, c, d)}
    if kserve is not None:
        runs["kserve-grpc"] = lambda: run_h2load(kserve_port, frame, c, d)
    if args.baseline_src:  # the same server from another source tree, side by side
        base_port = free_port()
        base, base_http = start(args.model, "--grpc-port", str(base_port), src=args.baseline_src)
        runs["grpc-baseline"] = lambda: run_h2load(base_port, frame, c, d)
        runs["rest-baseline"] = lambda: run_wrk_v2(base_http, v2, c, d)
    floors, floor_ports = start_floors() if args.floor else ([], {})
    for name, port in floor_ports.items():
        if name == "rest-floor":
            runs[name] = lambda port=port: run_wrk_v2(port, v2, c, d)
        else:
            runs[name] = lambda port=port: run_h2load(port, frame, c, d)
    got: dict[str, list[dict]] = {k: [] for k in runs}
    try:
        for fn in runs.values():  # warm up
            fn()
        for i in range(args.repeats):
            names = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in names:
                before = grpc_200s(http_port) if name == "grpc" else None
                r = runs[name]()
                if before is not None:  # every h2load success was a gRPC OK
                    r["grpc_ok"] = grpc_200s(http_port) - before
                got[name].append(r)
                print(f"  {name:<13} {r['rps']:8.0f} req/s  p99 {r['p99_ms']:6.2f} ms  generator "
                      f"{r['generator_cores']:.2f} cores", file=sys.stderr)
    finally:
        stop(ours)
        if kserve is not None:
            stop(kserve)
        for proc in floors:
            stop(proc)
        if args.baseline_src:
            stop(base)

    def med(name, key):
        return statistics.median(r[key] for r in got[name])

    out = {"cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0)),
           "load_average": os.getloadavg(), "concurrency": c, "duration_s": d,
           "repeats": args.repeats, "model": Path(args.model).name, "kserve_skipped": skipped}
    print(f"\n{Path(args.model).name}, one sample a request, c={c}, {args.repeats} alternated "
          f"rounds x {d:g} s, medians (min-max); {out['cpus']} CPUs ({out['cpu']}), load average "
          f"{out['load_average'][0]:.2f}")
    print(f"{'target':<14} {'req/s':>8} {'(min-max)':>13} {'p99 ms':>7} {'generator cores':>16}")
    for name, rows in got.items():
        rps = [r["rps"] for r in rows]
        out[name] = {"rps": med(name, "rps"), "rps_min": min(rps), "rps_max": max(rps),
                     "p99_ms": med(name, "p99_ms"),
                     "generator_cores_max": max(r["generator_cores"] for r in rows)}
        print(f"{name:<14} {out[name]['rps']:>8.0f} {f'{min(rps):.0f}-{max(rps):.0f}':>13} "
              f"{out[name]['p99_ms']:>7.2f} {out[name]['generator_cores_max']:>16.2f}")
    mismatch = [r for r in got["grpc"] if r["grpc_ok"] < r["succeeded"]]
    out["grpc_status_checked"] = not mismatch
    ratio = out["grpc"]["rps"] / out["rest-v2-json"]["rps"]
    out["ratio_grpc_over_rest"] = ratio
    print(f"gRPC / REST v2 JSON = {ratio:.2f}x (goal >= 0.8x: {'met' if ratio >= 0.8 else 'MISSED'})"
          + ("" if not mismatch else "; WARNING: some h2load successes were not gRPC OK"))
    if kserve is not None:
        k = out["grpc"]["rps"] / out["kserve-grpc"]["rps"]
        out["ratio_grpc_over_kserve"] = k
        print(f"gRPC / KServe gRPC = {k:.2f}x (goal >= 3x: {'met' if k >= 3 else 'MISSED'})")
    else:
        print(f"KServe skipped: {skipped}")
    if args.baseline_src:
        out["ratio_grpc_over_baseline"] = statistics.median(
            a["rps"] / b["rps"] for a, b in zip(got["grpc"], got["grpc-baseline"]))
        out["ratio_rest_over_baseline"] = statistics.median(
            a["rps"] / b["rps"] for a, b in zip(got["rest-v2-json"], got["rest-baseline"]))
        print(f"gRPC / gRPC from {args.baseline_src} = {out['ratio_grpc_over_baseline']:.2f}x, "
              f"REST / REST from it = {out['ratio_rest_over_baseline']:.2f}x "
              "(medians of per-round ratios)")
    if args.floor:
        rounds = list(zip(*(got[n] for n in ("grpc", "rest-v2-json", "grpc-floor",
                                              "grpc-floor-aio", "rest-floor"))))
        share = {
            "gRPC / its floor": statistics.median(g["rps"] / f["rps"] for g, _, f, _, _ in rounds),
            "REST / its floor": statistics.median(r["rps"] / f["rps"] for _, r, _, _, f in rounds),
            "gRPC floor / REST floor": statistics.median(
                f["rps"] / rf["rps"] for _, _, f, _, rf in rounds),
            "gRPC floor aio / sync": statistics.median(
                a["rps"] / f["rps"] for _, _, f, a, _ in rounds)}
        if kserve is not None:
            share["gRPC floor / KServe"] = statistics.median(
                f["rps"] / k["rps"] for (_, _, f, _, _), k in zip(rounds, got["kserve-grpc"]))
        out["floor_ratios"] = share
        for key, value in share.items():
            print(f"{key:<24} {value:.2f}x (median of per-round ratios)")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--h2load", action="store_true",
                    help="compiled generators: h2load (gRPC) and wrk (REST), plus KServe")
    ap.add_argument("--kserve-venv", default="/work/venv-kserve")
    ap.add_argument("--baseline-src", help="with --h2load: also serve gRPC from this source "
                    "tree (e.g. `git archive` of main's src), side by side")
    ap.add_argument("--floor", action="store_true",
                    help="with --h2load: also do-nothing grpcio and granian servers (ceilings)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    if args.h2load:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        h2load_table(args)
        return
    from onnxdeploy.bench.targets import file_signature

    sig = file_signature(args.model)
    spec = sig.inputs[0]
    shape = [1 if d is None or not isinstance(d, int) or d <= 0 else d for d in spec.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(spec.dtype)
    grpc_port = free_port()
    on, port_on = start(args.model, "--grpc-port", str(grpc_port))
    off, port_off = start(args.model)
    try:
        pred = predict_body(sig, {spec.name: x})
        v2 = orjson.dumps({"inputs": [{"name": spec.name, "shape": list(x.shape),
                                       "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
        grpc_req = encode_infer([pred], sig, "m", texts=False)

        def http(port, path, body):
            raw = http_request("POST", path, f"127.0.0.1:{port}", body)
            res = run_load(LoadSpec("127.0.0.1", port, [raw], concurrency=args.concurrency,
                                    duration_s=args.duration))
            return res.ok / res.elapsed_s, float(np.percentile(res.latencies_us, 99)) / 1e3

        def rpc():
            res = run_grpc_load(f"127.0.0.1:{grpc_port}", grpc_req, concurrency=args.concurrency,
                                duration_s=args.duration)
            return res.ok / res.elapsed_s, float(np.percentile(res.latencies_us, 99)) / 1e3

        runs = {"grpc": rpc, "rest-v2-json": lambda: http(port_on, "/v2/models/m/infer", v2),
                "http-predict, grpc on": lambda: http(port_on, "/predict", pred),
                "http-predict, grpc off": lambda: http(port_off, "/predict", pred)}
        for fn in runs.values():  # warm up
            fn()
        got: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                got[name].append(fn())
        out = {name: {"rps_median": round(statistics.median(r for r, _ in v)),
                      "rps_min_max": [round(min(r for r, _ in v)), round(max(r for r, _ in v))],
                      "p99_ms_median": round(statistics.median(p for _, p in v), 2)}
               for name, v in got.items()}
        out["ratio_grpc_over_rest_v2_json"] = round(out["grpc"]["rps_median"]
                                                    / out["rest-v2-json"]["rps_median"], 2)
        out["ratio_http_grpc_on_over_off"] = round(out["http-predict, grpc on"]["rps_median"]
                                                   / out["http-predict, grpc off"]["rps_median"], 2)
        out["concurrency"], out["duration_s"], out["repeats"] = (args.concurrency, args.duration,
                                                                 args.repeats)
        print(json.dumps(out, indent=1))
    finally:
        for proc in (on, off):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


if __name__ == "__main__":
    main()
