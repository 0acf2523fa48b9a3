"""A mixed soak of ``onnxdeploy serve``: good and bad requests for minutes, statuses and RSS counted.

    python benchmarks/soak.py [--model M.onnx] [--duration 180] [--clients 8] [--workers 2]
        [--grpc-clients 2] [--json out.json]

Exports digits-cnn when no model is given, starts a real server (two workers by default, the
API key on), and runs ``--clients`` threads for ``--duration`` seconds, each sending a fixed
rotation of requests over keep-alive connections: /predict and v2 infer (JSON and binary),
metadata, readiness, /metrics, and the mistakes clients make (bad JSON, a wrong shape, a
non-finite value, an impossible v2 shape, an unknown model, undecodable URL bytes, a missing
key, a truncated chunked body, an unknown transfer coding). With ``--grpc-clients`` (on by
default: the server gets ``--grpc-port``), as many threads send the gRPC rotation over their own
channels: ModelInfer (raw and typed contents), metadata, readiness, and the same mistakes
(no key, an impossible shape, a name that is not UTF-8, an unknown model, bytes that are not a
message, a NaN). Every answer is counted by what was sent and its status (gRPC: the code's
name); the whole process tree's RSS is sampled every second. What should hold: zero 5xx (but
the 501 HTTP prescribes for an unknown transfer coding; for gRPC: INTERNAL, UNKNOWN,
UNAVAILABLE, UNIMPLEMENTED, DATA_LOSS), every status the expected one, RSS at the end within a
few MiB of the start.
Traffic goes to 127.0.0.1 only, and every loop stops at its deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from onnxdeploy.bench.servers import free_port
from onnxdeploy.environment import environment

KEY = "soak-key"
AUTH = f"Authorization: Bearer {KEY}\r\n"


def _post(path: str, body: bytes, *, ctype: str = "application/json", auth: bool = True,
          extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{AUTH if auth else ''}{extra}\r\n").encode() + body


def _get(path: str, *, auth: bool = True) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH if auth else ''}\r\n".encode()


def requests_for(name: str, shape: tuple[int, ...]) -> list[tuple[str, bytes, set[int]]]:
    """(label, raw request, the statuses it may get) in one rotation."""
    x = np.random.default_rng(0).random((1, *shape[1:]), dtype=np.float32)
    good = json.dumps({"inputs": x.tolist()}).encode()
    v2 = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                 "data": x.ravel().tolist()}]}).encode()
    header = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    binary = header + x.tobytes()
    wrong = json.dumps({"inputs": np.zeros((1, 3)).tolist()}).encode()
    bad = x.copy()
    bad.flat[0] = np.nan
    nonfinite = json.dumps({"inputs": bad.tolist()}).encode()  # a NaN token where a number goes
    huge = json.dumps({"inputs": [{"name": "x", "shape": [0, 9223372036854775807], "datatype": "FP32",
                                   "data": []}]}).encode()
    infer = f"/v2/models/{name}/infer"
    chunked_cut = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{AUTH}"
                   "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"inp\r\nzz\r\n").encode()
    gzip = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{AUTH}"
            "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n").encode()
    return [
        ("predict", _post("/predict", good), {200}),
        ("v2 json", _post(infer, v2), {200}),
        ("v2 binary", _post(infer, binary, ctype="application/octet-stream",
                            extra=f"Inference-Header-Content-Length: {len(header)}\r\n"), {200}),
        ("metadata", _get(f"/v2/models/{name}"), {200}),
        ("ready", _get("/v2/health/ready"), {200}),
        ("metrics", _get("/metrics"), {200}),
        ("bad json", _post("/predict", b"{not json"), {400}),
        ("wrong shape", _post("/predict", wrong), {400}),
        ("non-finite", _post("/predict", nonfinite), {400}),
        ("impossible shape", _post(infer, huge), {400}),
        ("unknown model", _post("/v2/models/nope/infer", v2), {404}),
        ("url bytes", _get("/v2/models/%ff%c0/ready"), {400, 404}),
        ("no key", _post("/predict", good, auth=False), {401}),
        ("chunked cut", chunked_cut, {400}),
        ("gzip coding", gzip, {501}),
    ]


#: gRPC codes counted as a server error (what REST would answer 5xx)
GRPC_5XX = {"INTERNAL", "UNKNOWN", "UNAVAILABLE", "UNIMPLEMENTED", "DATA_LOSS"}
RPC = "/inference.GRPCInferenceService/"


def grpc_requests_for(name: str, shape: tuple[int, ...]) -> list[tuple[str, str, bytes, bool, set]]:
    """(label, method, message bytes, with the key, the code names it may get) in one rotation."""
    from onnxdeploy.wire.proto import grpc_service_pb2 as pb

    x = np.random.default_rng(0).random((1, *shape[1:]), dtype=np.float32)

    def infer(model=name, dims=x.shape, raw=None, typed=None):
        raw = x.tobytes() if raw is None else raw
        req = pb.ModelInferRequest(model_name=model)
        tensor = req.inputs.add(name="x", datatype="FP32", shape=list(dims))
        if typed is not None:
            tensor.contents.fp32_contents.extend(typed)
        else:
            req.raw_input_contents.append(raw)
        return req.SerializeToString()

    nan = x.copy()
    nan.flat[0] = np.nan
    bad_name = b"\x0a\x03m\xff\xfe"  # ModelReadyRequest.name, not UTF-8
    return [
        ("grpc infer raw", "ModelInfer", infer(), True, {"OK"}),
        ("grpc infer typed", "ModelInfer", infer(typed=x.ravel().tolist()), True, {"OK"}),
        ("grpc metadata", "ModelMetadata",
         pb.ModelMetadataRequest(name=name).SerializeToString(), True, {"OK"}),
        ("grpc model ready", "ModelReady",
         pb.ModelReadyRequest(name=name).SerializeToString(), True, {"OK"}),
        ("grpc live", "ServerLive", b"", False, {"OK"}),
        ("grpc no key", "ModelInfer", infer(), False, {"UNAUTHENTICATED"}),
        ("grpc impossible shape", "ModelInfer", infer(dims=(0, 2**63 - 1), raw=b""), True,
         {"INVALID_ARGUMENT"}),
        ("grpc name bytes", "ModelReady", bad_name, True, {"INVALID_ARGUMENT"}),
        ("grpc unknown model", "ModelInfer", infer(model="nope"), True, {"NOT_FOUND"}),
        ("grpc not a message", "ModelInfer", b"\xff\xff\xff\xff", True, {"INVALID_ARGUMENT"}),
        ("grpc non-finite", "ModelInfer", infer(raw=nan.tobytes()), True, {"INVALID_ARGUMENT"}),
    ]


def _grpc():
    """The grpc package (benchmarks/grpc.py, in this script's directory, would shadow it)."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    import grpc

    return grpc


def grpc_client(target: str, rotation, deadline: float, counts: Counter, unexpected: Counter,
                lock: threading.Lock) -> None:
    grpc = _grpc()

    auth = (("authorization", f"Bearer {KEY}"),)
    channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    calls = {method: channel.unary_unary(RPC + method) for _, method, _, _, _ in rotation}
    i = 0
    while time.monotonic() < deadline:
        label, method, message, keyed, ok = rotation[i % len(rotation)]
        i += 1
        try:
            calls[method](message, metadata=auth if keyed else (), timeout=30)
            status = "OK"
        except grpc.RpcError as exc:
            status = exc.code().name
        with lock:
            counts[(label, status)] += 1
            if status not in ok:
                unexpected[(label, status)] += 1
    channel.close()


def read_status(sock: socket.socket, buf: bytearray) -> tuple[int, bool]:
    """The status of one answer (its body read), and whether the server closes the connection."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(fields.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    buf[:] = rest[length:]
    return status, fields.get("connection", "").lower() == "close"


def client(port: int, rotation, deadline: float, counts: Counter, unexpected: Counter,
           lock: threading.Lock) -> None:
    sock, buf = None, bytearray()
    i = 0
    while time.monotonic() < deadline:
        label, raw, ok = rotation[i % len(rotation)]
        i += 1
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                buf = bytearray()
            sock.sendall(raw)
            status, close = read_status(sock, buf)
        except (OSError, ValueError) as exc:
            with lock:
                counts[(label, f"transport: {type(exc).__name__}")] += 1
            if sock is not None:
                sock.close()
            sock = None
            continue
        with lock:
            counts[(label, status)] += 1
            if status not in ok:
                unexpected[(label, status)] += 1
        if close or label in ("chunked cut", "gzip coding"):
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def tree_rss_mib(root: int) -> float:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grpc-clients", type=int, default=2,
                        help="threads sending gRPC (0: no --grpc-port)")
    parser.add_argument("--json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="onnxdeploy-soak-"))
    model = Path(args.model) if args.model else None
    if model is None:
        from onnxdeploy.export import ExportOptions, export_model

        model = tmp / "digits-cnn.onnx"
        export_model("digits-cnn", model, ExportOptions())
    from onnxdeploy.modelfile import load_model, signature

    sig = signature(load_model(model))
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in sig.inputs[0].shape)
    port = free_port()
    grpc_port = free_port() if args.grpc_clients else None
    env = {**os.environ, "SOAK_KEY": KEY}
    server = subprocess.Popen([sys.executable, "-m", "onnxdeploy", "serve", str(model), "--name", "m",
                               "--port", str(port), "--workers", str(args.workers),
                               "--api-key-env", "SOAK_KEY",
                               *(["--grpc-port", str(grpc_port)] if grpc_port else [])],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)
    try:
        for line in server.stdout:
            if line.startswith("ready"):
                break
        time.sleep(1.0)
        rss_start = tree_rss_mib(server.pid)
        rotation = requests_for("m", shape)
        counts: Counter = Counter()
        unexpected: Counter = Counter()
        lock = threading.Lock()
        samples: list[float] = []
        deadline = time.monotonic() + args.duration
        threads = [threading.Thread(target=client, args=(port, rotation[k:] + rotation[:k], deadline,
                                                          counts, unexpected, lock), daemon=True)
                   for k in range(args.clients)]
        grpc_rotation = grpc_requests_for("m", shape) if grpc_port else []
        if grpc_port:
            _grpc()  # once, before the threads
        threads += [threading.Thread(target=grpc_client, args=(
            f"127.0.0.1:{grpc_port}", grpc_rotation[k:] + grpc_rotation[:k], deadline, counts,
            unexpected, lock), daemon=True) for k in range(args.grpc_clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            samples.append(tree_rss_mib(server.pid))
            time.sleep(1.0)
        elapsed = time.monotonic() - t0
        time.sleep(1.0)
        rss_end = tree_rss_mib(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    total = sum(counts.values())
    # 5xx beyond the 501 HTTP prescribes for a transfer coding we do not implement
    expected = {label: ok for label, _, ok in rotation}
    expected.update({label: ok for label, _, _, _, ok in grpc_rotation})
    five = sum(n for (label, s), n in counts.items()
               if ((isinstance(s, int) and s >= 500) or s in GRPC_5XX) and s not in expected[label])
    transport = sum(n for (_, s), n in counts.items() if str(s).startswith("transport"))
    env_info = environment()
    print(f"soak: {args.duration:.0f} s, {args.clients} HTTP + {args.grpc_clients} gRPC clients, "
          f"{args.workers} workers on "
          f"{env_info['cpu']} ({env_info['cores']} cores)")
    print(f"{'request':<22} {'status':>16} {'count':>8}")
    for (label, status), n in sorted(counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"{label:<22} {str(status):>16} {n:>8}")
    print(f"requests {total:,} ({total / elapsed:,.0f}/s), 5xx {five}, unexpected statuses "
          f"{sum(unexpected.values())}, transport errors {transport}")
    print(f"RSS of the server's process tree: start {rss_start:.0f} MiB, end {rss_end:.0f} MiB, "
          f"peak {max(samples or [rss_end]):.0f} MiB, median {statistics.median(samples or [rss_end]):.0f} MiB; "
          f"server exit {server.returncode}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "duration_s": elapsed, "clients": args.clients, "grpc_clients": args.grpc_clients,
            "workers": args.workers,
            "requests": total, "five_xx": five, "transport_errors": transport,
            "unexpected": {f"{k[0]} {k[1]}": v for k, v in unexpected.items()},
            "counts": {f"{k[0]} {k[1]}": v for k, v in counts.items()},
            "rss_mib": {"start": rss_start, "end": rss_end, "peak": max(samples or [rss_end])},
            "exit_code": server.returncode, "environment": env_info}, indent=1))


if __name__ == "__main__":
    main()
