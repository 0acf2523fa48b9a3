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


def start(model: str, *extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onnxdeploy", "serve", model, "--port",
                             str(port), "--name", "m", *extra], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    import urllib.request

    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                time.sleep(1.0)  # every worker up
                return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server not ready")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
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
