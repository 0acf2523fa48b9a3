"""Our open-loop engine against MLPerf LoadGen's Server scenario, same server, same rate.

    .venv/bin/python benchmarks/slo_yardstick.py MODEL.onnx [--rate 100] [--queries 3000] [--repeats 3]

Starts ``onnxdeploy serve MODEL`` on a free port, then alternates, ``--repeats`` times: our
native engine (Poisson arrivals, latency from the scheduled send time) and LoadGen's Server
scenario (``server_target_qps`` = the rate) whose SUT posts the same /predict bodies over
keep-alive connections from a thread pool. Prints each run's p50/p99 and LoadGen's VALID/INVALID
verdict, then the medians. LoadGen is the outside yardstick for the figures ``bench --slo`` uses:
needs ``pip install mlcommons-loadgen`` (imports as ``mlperf_loadgen``). LoadGen's SUT here is
Python threads, so its figures include that client's own overhead.
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def loadgen_run(url: str, bodies: list[bytes], *, rate: float, queries: int, bound_ms: float) -> dict:
    """One LoadGen Server-scenario run; p50/p99 (ms) and validity from its summary file."""
    import mlperf_loadgen as lg

    from onnxdeploy.bench.httpclient import split_url

    host, port = split_url(url)
    local = threading.local()
    pool = ThreadPoolExecutor(max_workers=32)

    def post(sample_id: int, index: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("POST", "/predict", body=bodies[index % len(bodies)],
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0)])

    def issue(samples) -> None:
        for s in samples:
            pool.submit(post, s.id, s.index)

    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Server
    settings.mode = lg.TestMode.PerformanceOnly
    settings.server_target_qps = rate
    settings.server_target_latency_ns = int(bound_ms * 1e6)
    settings.server_target_latency_percentile = 0.99
    settings.min_query_count = queries
    settings.max_query_count = queries
    settings.min_duration_ms = int(1000 * queries / rate * 0.9)
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(len(bodies), len(bodies), lambda idx: None, lambda idx: None)
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        log = lg.LogOutputSettings()
        log.outdir = tmp
        log.copy_summary_to_stdout = False
        log_settings = lg.LogSettings()
        log_settings.log_output = log
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
        summary = (Path(tmp) / "mlperf_log_summary.txt").read_text()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    pool.shutdown(wait=True)

    def ns(label: str) -> float | None:
        match = re.search(rf"{re.escape(label)}\s*:\s*(\d+)", summary)
        return int(match.group(1)) / 1e6 if match else None

    return {"p50": ns("50.00 percentile latency (ns)"), "p99": ns("99.00 percentile latency (ns)"),
            "valid": "Result is : VALID" in summary}


def main() -> None:
    """Serve the model, alternate the two generators, print the runs and medians."""
    from onnxdeploy.bench.engines import NativeEngine
    from onnxdeploy.bench.servers import ServerPool, ServerSpec, free_port
    from onnxdeploy.bench.targets import Target, file_signature, prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bound-ms", type=float, default=50.0, help="LoadGen's p99 target (its VALID verdict)")
    args = parser.parse_args()
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        sys.exit("mlperf_loadgen is not installed: pip install mlcommons-loadgen")
    with ServerPool() as pool:
        (server,) = pool.start_all([ServerSpec(args.model, Path(args.model).stem, free_port())])
        target = Target(server.spec.name, server.url, args.model, sig=file_signature(args.model))
        prepare(target, None, {})
        engine = NativeEngine()
        engine.run(target, concurrency=1, total=300)  # warm-up
        rows = {"native": [], "loadgen": []}
        for repeat in range(args.repeats):
            order = ("native", "loadgen") if repeat % 2 == 0 else ("loadgen", "native")
            for which in order:
                if which == "native":
                    run = engine.run(target, concurrency=8, total=args.queries, rate=args.rate, seed=repeat)
                    res = {"p50": run.latency_ms["p50"], "p99": run.latency_ms["p99"], "valid": None}
                else:
                    res = loadgen_run(server.url, list(target.requests.bodies), rate=args.rate,
                                      queries=args.queries, bound_ms=args.bound_ms)
                rows[which].append(res)
                print(f"repeat {repeat + 1} {which:8s} p50 {res['p50']:.2f} ms  p99 {res['p99']:.2f} ms"
                      + ("" if res["valid"] is None else f"  LoadGen: {'VALID' if res['valid'] else 'INVALID'}"))
        for which, runs in rows.items():
            p50 = statistics.median(r["p50"] for r in runs)
            p99 = statistics.median(r["p99"] for r in runs)
            print(f"median {which:8s} p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
                  f"(p99 range {min(r['p99'] for r in runs):.2f}-{max(r['p99'] for r in runs):.2f})")


if __name__ == "__main__":
    main()
