"""Issue 26: serving that no client can crash, exhaust or confuse.

Real ``onnxdeploy serve`` processes on free ports, raw sockets where a client library would
refuse to send the bytes. Memory is sampled over the whole process tree (parent + workers, from
/proc) with generous bounds; nothing here asserts on wall time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import orjson
import pytest
from builders import mlp_classifier, save
from prometheus_client.parser import text_string_to_metric_families
from test_serve_front import raw
from test_serve_server import Server

from onnxdeploy.bench.servers import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")

KEY = {"Authorization": "Bearer k3y"}
GRPC_KEY = (("authorization", "Bearer k3y"),)
ROW = [0.5] * 64
#: every case that has a gRPC form runs over both; the rest (HTTP framing, chunked bodies, URL
#: paths that are not model names, JSON bodies) are HTTP's alone and are not parametrized
PROTOCOLS = ["rest", "grpc"]
RPC = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_hostile")
    return {"root": root, "mlp": save(mlp_classifier(), root / "mlp.onnx")}


@pytest.fixture
def start(models):
    servers = []

    def _start(*args, env=None, headers=None, grpc=False):
        if grpc:
            from test_serve_grpc import GrpcServer

            servers.append(GrpcServer(models["mlp"], *args, env=env, tmp=models["root"],
                                      headers=headers))
        else:
            servers.append(Server(models["mlp"], *args, env=env, tmp=models["root"],
                                  headers=headers))
        return servers[-1]

    yield _start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def shared(models):
    """Servers shared by the cases of this module that only read counts as differences: one
    per argument list, each with HTTP and gRPC (``--grpc-port``), started on first use."""
    from test_serve_grpc import GrpcServer

    servers: dict[tuple, Server] = {}

    def _get(*args):
        if args not in servers:
            servers[args] = GrpcServer(models["mlp"], "--workers", "1", *args, tmp=models["root"])
        return servers[args]

    yield _get
    for s in servers.values():
        s.stop()


def counted(server, name="onnxdeploy_requests_total", headers=None):
    """A function returning what ``name`` counted since this call, by (endpoint, status,
    protocol) (or by label values for other metrics)."""
    def samples():
        status, _, body = server.get("/metrics", headers=headers)
        assert status == 200
        out: dict[tuple, float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                if s.name == name:
                    labels = s.labels
                    key = ((labels["endpoint"], labels["status"], labels["protocol"])
                           if "endpoint" in labels else tuple(labels.values()))
                    out[key] = out.get(key, 0) + s.value
        return out

    before = samples()

    def since():
        after = samples()
        # leave out our scrapes and the readiness polls (the parent's, for its ready line)
        return {k: v - before.get(k, 0) for k, v in after.items()
                if v != before.get(k, 0) and k[:1] not in (("metrics",), ("v2_ready",))}
    return since


def metric(server, name: str, headers=None) -> dict[tuple, float]:
    """The samples of one metric by their label values."""
    status, _, body = server.get("/metrics", headers=headers)
    assert status == 200
    out: dict[tuple, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name:
                # by endpoint and status (summed over protocols): the multiprocess collector sorts
                # label names, so the key is built in a fixed order, not the exposition's
                labels = {k: v for k, v in s.labels.items() if k != "protocol"}
                key = tuple(labels[k] for k in ("endpoint", "status") if k in labels) or tuple(labels.values())
                out[key] = out.get(key, 0) + s.value
    return out


def tree_pids(root: int) -> list[int]:
    """``root`` and every process below it (/proc)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_rss_mib(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class PeakRss:
    """Samples the process tree's RSS in a thread until stopped; ``peak`` in MiB."""

    def __init__(self, root: int):
        self.root = root
        self.peak = self.idle = tree_rss_mib(root)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, tree_rss_mib(self.root))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------- gRPC helpers


def rpc(server, method: str, message: bytes, metadata=(), channel=None):
    """One unary RPC with raw message bytes (no client-side serializer): (code name, answer
    bytes or the error's details)."""
    import grpc

    call = (channel or server.channel()).unary_unary(RPC + method)
    try:
        return "OK", call(message, metadata=metadata, timeout=60)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()


def infer_message(name: str, rows, shape=None, *, typed=False) -> bytes:
    """A ``ModelInferRequest`` for input ``x`` (FP32), raw contents unless ``typed``."""
    import numpy as np
    from tritonclient.grpc import service_pb2 as tpb

    x = np.asarray(rows, np.float32)
    req = tpb.ModelInferRequest(model_name=name)
    tensor = req.inputs.add(name="x", datatype="FP32", shape=list(x.shape) if shape is None
                            else shape)
    if typed:
        tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    else:
        req.raw_input_contents.append(x.tobytes())
    return req.SerializeToString()


# --------------------------------------------------------------------------- (1) names, shapes


#: the v2 routes and RPCs that carry a model name: (REST suffix after the name, method, RPC)
NAMED = [("", "GET", "ModelMetadata"), ("/ready", "GET", "ModelReady"),
         ("/versions/1", "GET", "ModelMetadata"), ("/versions/1/ready", "GET", "ModelReady"),
         ("/infer", "POST", "ModelInfer")]


def _named_request(server, protocol: str, name: bytes, suffix: str, method: str, rpc_name: str,
                   metadata=()):
    """Ask a named route or RPC about model ``name`` (raw UTF-8 or not): (status or code name,
    the JSON answer or the RPC's answer/details)."""
    from urllib.parse import quote_from_bytes

    from tritonclient.grpc import service_pb2 as tpb

    if protocol == "rest":
        body = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                         "data": ROW}]}) if method == "POST" else None
        status, headers, raw_body = server.request(
            method, f"/v2/models/{quote_from_bytes(name)}{suffix}", body,
            {"Content-Type": "application/json"} if body else None)
        assert headers["Content-Type"] == "application/json", raw_body
        return status, json.loads(raw_body)
    version = "1" if "versions" in suffix else ""
    # field 1 is the name in all three requests, field 2 the version: written by hand so a name
    # that is not UTF-8 reaches the server as the bytes it is
    fields = b"\x0a" + bytes([len(name)]) + name
    if version:
        fields += b"\x12\x01" + version.encode()
    if rpc_name == "ModelInfer":
        fields += tpb.ModelInferRequest(inputs=[tpb.ModelInferRequest.InferInputTensor(
            name="x", datatype="FP32", shape=[1, 64])], raw_input_contents=[
            b"\0" * 256]).SerializeToString()
    return rpc(server, rpc_name, fields, metadata)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", ["数字", "dégits"])
def test_a_non_ascii_model_name_works_on_every_route(shared, name, protocol):
    # issue 26: under --name 数字, GET /v2/models/{name} and /ready always answered 500; a Latin-1
    # name (dégits) was garbled to a 404 on the metadata routes while /infer worked
    server = shared("--name", name)
    for suffix, method, rpc_name in NAMED:
        status, answer = _named_request(server, protocol, name.encode(), suffix, method,
                                        rpc_name)
        assert status in (200, "OK"), (suffix, rpc_name, answer)
        if protocol == "rest":
            assert answer.get("name", answer.get("model_name")) == name or suffix.endswith(
                "ready"), answer
        elif rpc_name == "ModelMetadata":
            from tritonclient.grpc import service_pb2 as tpb

            assert tpb.ModelMetadataResponse.FromString(answer).name == name
        elif rpc_name == "ModelInfer":
            from tritonclient.grpc import service_pb2 as tpb

            assert tpb.ModelInferResponse.FromString(answer).model_name == name
        other, answer = _named_request(server, protocol, (name + "x").encode(), suffix, method,
                                       rpc_name)
        assert other in (404, "NOT_FOUND"), (suffix, rpc_name, other, answer)
        assert name in (answer["error"] if protocol == "rest" else answer)
    if protocol == "rest":
        status, _, body = server.post_json("/predict", {"inputs": [ROW]})
        assert status == 200 and json.loads(body)["model"] == name
    assert "Traceback" not in server.text()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_name_that_is_not_utf8_is_refused_on_every_route(shared, protocol):
    # REST: the percent-decoded path is not UTF-8 (400); gRPC: a string field that is not UTF-8
    # makes the message malformed (INVALID_ARGUMENT), counted, never a 500/INTERNAL
    server = shared()
    since = counted(server)
    for suffix, method, rpc_name in NAMED:
        status, answer = _named_request(server, protocol, b"mlp\xff", suffix, method, rpc_name)
        if protocol == "rest":
            assert status == 400 and "not valid UTF-8" in answer["error"], (suffix, answer)
        else:
            assert status == "INVALID_ARGUMENT" and "malformed gRPC message" in answer, answer
    proto = "http" if protocol == "rest" else "grpc"
    assert since() == {("v2_infer", "400", proto): 1, ("v2_model", "400", proto): 2,
                       ("v2_model_ready", "400", proto): 2}
    assert "Traceback" not in server.text()


@pytest.mark.parametrize(("protocol", "encoding"), [
    ("rest", "json"), ("rest", "binary"), ("grpc", "typed"), ("grpc", "raw")])
@pytest.mark.parametrize("shape", [[0, 2**63 - 1], [1, 0, 2**62], [2**63 - 1, 64]])
def test_an_impossible_shape_with_empty_data_is_refused_naming_the_input(shared, shape, protocol,
                                                                        encoding):
    # issue 26: shape [0, 9223372036854775807] with empty data answered 500 (numpy "array is
    # too big"), JSON and binary alike
    from tritonclient.grpc import service_pb2 as tpb

    server = shared()
    since = counted(server)
    tensor = {"name": "x", "shape": shape, "datatype": "FP32"}
    if encoding == "binary":
        header = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 0}}]})
        answer = server.request("POST", "/v2/models/mlp/infer", header, {
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream"})
    elif encoding == "json":
        answer = server.post_json("/v2/models/mlp/infer", {"inputs": [{**tensor, "data": []}]})
    else:
        req = tpb.ModelInferRequest(model_name="mlp")
        req.inputs.add(name="x", datatype="FP32", shape=shape)
        if encoding == "raw":
            req.raw_input_contents.append(b"")
        code, details = rpc(server, "ModelInfer", req.SerializeToString())
        assert code == "INVALID_ARGUMENT" and details.startswith("input 'x':"), (code, details)
        assert "expected" in details and "\n" not in details
        assert since() == {("v2_infer", "400", "grpc"): 1}
        return
    status, _, body = answer
    assert status == 400, body
    message = json.loads(body)["error"]
    assert message.startswith("input 'x':") and "expected" in message
    assert since() == {("v2_infer", "400", "http"): 1}


# --------------------------------------------------------------------------- (1) outputs


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_non_finite_output_is_an_error_naming_it_and_counted(shared, protocol):
    # issue 26: finite but huge inputs (3e38) answered 200 with null logits, "prediction 0"
    server = shared()
    since, nonfinite = counted(server), counted(server, "onnxdeploy_nonfinite_outputs_total")
    huge = [[3e38] * 64]  # finite float32 inputs that overflow inside the model
    if protocol == "grpc":
        for typed in (False, True):
            code, details = rpc(server, "ModelInfer", infer_message("mlp", huge, typed=typed))
            assert code == "INTERNAL" and "'logits'" in details and "not finite" in details
            assert "\n" not in details
        assert rpc(server, "ModelInfer", infer_message("mlp", [ROW]))[0] == "OK"
        assert since() == {("v2_infer", "500", "grpc"): 2, ("v2_infer", "200", "grpc"): 1}
        assert nonfinite() == {("logits",): 2}
        return
    status, _, body = server.post_json("/predict", {"inputs": huge})
    error = json.loads(body)["error"]
    assert status == 500 and "'logits'" in error and "not finite" in error, body
    assert "prediction" not in json.loads(body)
    status, _, body = server.post_json("/v2/models/mlp/infer", {"inputs": [
        {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": huge[0]}]})
    assert status == 500 and "'logits'" in json.loads(body)["error"]
    assert server.post_json("/predict", {"inputs": [[0.5] * 64]})[0] == 200
    assert since() == {("predict", "500", "http"): 1, ("v2_infer", "500", "http"): 1,
                       ("predict", "200", "http"): 1}
    assert nonfinite() == {("logits",): 2}


# --------------------------------------------------------------------------- (2) memory


def head(path: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def read_answer(sock: socket.socket) -> tuple[int, dict, bytes] | None:
    """One answer from a socket (None when the connection ended or stalled without one)."""
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
    except (TimeoutError, ConnectionResetError):
        return None
    top, _, body = buf.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    try:
        while len(body) < int(headers.get("content-length", "0")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return int(lines[0].split()[1]), headers, body


def open_unfinished(port: int, count: int, data: bytes) -> list[socket.socket]:
    """``count`` connections that each sent ``data`` (headers and part of a body) and stall."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(data)
        socks.append(s)
    return socks


def answered_within(socks: list[socket.socket], wait_s: float) -> list:
    """The answer of each socket that has one within ``wait_s`` (all waited on at once), else
    None."""
    import select

    pending, answers = set(socks), {}
    deadline = time.monotonic() + wait_s
    while pending and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(list(pending), [], [], left)
        for s in readable:
            s.settimeout(5)
            answers[s] = read_answer(s)
            pending.discard(s)
    return [answers.get(s) for s in socks]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_key_is_checked_before_any_body_byte_is_read(start, protocol):
    # issue 26: 300 connections without the key, each holding an unfinished 1.5 MB body, took
    # the server from 363 to 825 MiB (bodies read before the key was checked). gRPC: 300
    # messages of 1.5 MB without the key, at once over 10 connections (HTTP/2 streams)
    server = start("--workers", "1", "--api-key-env", "HOSTILE_KEY",
                   env={"HOSTILE_KEY": "k3y"}, headers=KEY, grpc=protocol == "grpc")
    since = counted(server, headers=KEY)
    with PeakRss(server.proc.pid) as rss:
        if protocol == "grpc":
            size = 1_500_000  # an unknown field (16) of 1.5 MB: the message is still valid
            message = infer_message("mlp", [ROW]) + b"\x82\x01" + _varint(size) + b"\0" * size
            statuses, messages = _rpcs(server, message, 300)
        else:
            socks = open_unfinished(server.port, 300, head("/predict", 1_500_000) + b"[" * 65536)
            answers = [read_answer(s) for s in socks]
            for s in socks:
                s.close()
            statuses = [a and a[0] for a in answers]
            messages = [a and a[2] and json.loads(a[2])["error"] for a in answers]
    print(f"300 unfinished bodies without the key ({protocol}): {statuses.count(401)} x 401; "
          f"process tree RSS {rss.idle:.0f} -> peak {rss.peak:.0f} MiB")
    assert statuses.count(401) == 300, statuses
    assert all(m and "API key" in m for m in messages)
    # gRPC with BDP probing (its windows grown): +42..88 MiB; without: +5
    assert rss.peak - rss.idle < (100 if protocol == "rest" else 40), (rss.idle, rss.peak)
    if protocol == "grpc":
        assert since() == {("v2_infer", "401", "grpc"): 300}
        return
    assert all(a[1].get("connection") == "close" for a in answers)  # the body is never read
    assert metric(server, "onnxdeploy_requests_total", KEY)[("predict", "401")] == 300


def _rpcs(server, message: bytes, count: int, metadata=(), channels: int = 10
          ) -> tuple[list, list]:
    """``count`` ModelInfer RPCs of ``message``, all in flight at once over ``channels``
    connections: (statuses as the REST numbers of their codes, details)."""
    import grpc

    from onnxdeploy.serve.grpc_service import CODES

    http = {code: status for status, code in CODES.items() if status != 415}
    chans = [server.channel() for _ in range(min(channels, count))]
    calls = [chans[i % len(chans)].unary_unary(RPC + "ModelInfer").future(
        message, metadata=metadata, timeout=120) for i in range(count)]
    statuses, details = [], []
    for call in calls:
        try:
            call.result()
            statuses.append(200)
            details.append("")
        except grpc.RpcError as exc:
            statuses.append(http.get(exc.code(), exc.code().name))
            details.append(exc.details())
    for ch in chans:
        ch.close()
    return statuses, details


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_bodies_held_at_once_have_a_budget(start):
    # with the key: 60 connections declare 1.5 MB bodies and stall; the worker holds what its
    # body budget takes and refuses the rest at once, without reading them
    server = start("--workers", "1", "--body-timeout", "60",
                   "--api-key-env", "HOSTILE_KEY", env={"HOSTILE_KEY": "k3y"}, headers=KEY)
    size = 1_500_000
    held = 32 * 2**20 // size  # 22 bodies fit the default budget (32 MiB for this model)
    socks = open_unfinished(server.port, 60, head("/predict", size, "Authorization: Bearer k3y\r\n")
                            + b"[" * 1000)
    answers = answered_within(socks, 2.0)  # the held ones stall: no answer
    statuses = [a and a[0] for a in answers]
    refused = [a for a in answers if a is not None]
    assert statuses.count(503) == 60 - held and statuses.count(None) == held, sorted(map(str, statuses))
    assert all(a[1]["retry-after"] == "1" and "budget" in json.loads(a[2])["error"]
               for a in refused)
    for s in socks:  # the held clients give up: their bytes go back to the budget
        s.close()
    ok = 0
    for _ in range(50):
        ok = server.request("POST", "/predict", orjson.dumps({"inputs": [[0.5] * 64]}),
                            {**KEY, "Content-Type": "application/json"})[0] == 200
        if ok:
            break
        time.sleep(0.1)
    assert ok
    assert metric(server, "onnxdeploy_requests_total", KEY)[("predict", "503")] == 60 - held


def _send_body(port: int, data: bytes, piece: int = 1 << 20) -> tuple[int, dict, bytes] | None:
    """Send a request while watching for an early answer (a refusal made without reading)."""
    import select

    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        view, sent = memoryview(data), 0
        while sent < len(data):
            readable, writable, _ = select.select([s], [s], [], 30)
            if readable:
                break
            if not writable:
                return None
            try:
                sent += s.send(view[sent:sent + piece])
            except (BrokenPipeError, ConnectionResetError):
                break
        return read_answer(s)


def post_measured(server, path: str, body: bytes, label: str):
    """POST one body to ``server`` while sampling its process tree's RSS: the answer (None when
    the connection broke) and the peak growth as a multiple of the body, printed."""
    with PeakRss(server.proc.pid) as rss:
        answer = _send_body(server.port, head(path, len(body)) + body)
    mib = len(body) / 2**20
    growth = (rss.peak - rss.idle) / mib
    print(f"{label}: one {mib:.0f} MiB JSON body: {answer and answer[0]}; process tree RSS "
          f"{rss.idle:.0f} -> peak {rss.peak:.0f} MiB ({growth:.2f}x the body)")
    return answer, growth


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_concurrent_large_bodies_are_refused_before_they_are_buffered(start, protocol):
    # issue 26: one worker, --max-inflight 4, 12 concurrent 48 MB bodies (cap raised to 64 MB):
    # all 12 were buffered (240 -> 816 MiB) before any 503. gRPC's form: 12 concurrent 48 MB
    # messages over a 16 MB cap (messages under the cap: the next test)
    cap_mb = 64 if protocol == "rest" else 16
    server = start("--workers", "1", "--max-inflight", "4", "--max-body-mb", str(cap_mb),
                   "--body-timeout", "60", grpc=protocol == "grpc")
    size = 48 * 10**6
    if protocol == "grpc":
        message = infer_message("mlp", [ROW]) + b"\x82\x01" + _varint(size) + b"\0" * size
        with PeakRss(server.proc.pid) as rss:
            statuses, details = _rpcs(server, message, 12, metadata=())
        print(f"12 concurrent 48 MB messages over a 16 MB cap: {statuses}; process tree RSS "
              f"{rss.idle:.0f} -> peak {rss.peak:.0f} MiB")
        assert statuses == [413] * 12, (statuses, details)
        assert rss.peak - rss.idle < 100, (rss.idle, rss.peak)
        assert rpc(server, "ModelInfer", infer_message("mlp", [ROW]))[0] == "OK"
        return
    body = b'{"inputs":[' + b"[" + b"0.5," * ((size - 20) // 4) + b"0.5]]}"
    data = head("/predict", len(body)) + body
    budget = 2 * 64 * 2**20  # the default: twice the body cap
    with PeakRss(server.proc.pid) as rss:
        results: list = [None] * 12
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, _send_body(server.port, data))) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    statuses = sorted((r and r[0]) or -1 for r in results)
    print(f"12 concurrent 48 MB bodies: {statuses}; process tree RSS {rss.idle:.0f} -> peak "
          f"{rss.peak:.0f} MiB")
    held = budget // len(body)  # 2
    assert statuses.count(503) >= 12 - held - 1 and 200 not in statuses, statuses
    assert statuses.count(413) <= held, statuses  # read, then refused: too many values
    assert rss.peak - rss.idle < held * 48 * 3 + 100, (rss.idle, rss.peak)  # old: +576 MiB
    assert server.get("/v2/health/live")[0] == 200


def test_json_bodies_are_sized_before_they_are_decoded(start):
    # issue 26: one 64 MB body of [] under --max-body-mb 64 peaked at 2.5 GB (12.6x idle)
    server = start("--workers", "1", "--max-body-mb", "64", "--body-timeout", "60")
    body = b'{"inputs":[' + b"[]," * (64 * 2**20 // 3 - 10) + b"[]]}"
    with PeakRss(server.proc.pid) as rss:
        answer = _send_body(server.port, head("/predict", len(body)) + body)
    mib = len(body) / 2**20
    print(f"one {mib:.0f} MiB body of []: {answer and answer[0]}; process tree RSS "
          f"{rss.idle:.0f} -> peak {rss.peak:.0f} MiB")
    assert answer is not None and answer[0] == 413, answer
    assert "values" in json.loads(answer[2])["error"]
    assert rss.peak - rss.idle < 3 * mib, (rss.idle, rss.peak)  # old: ~2,300 MiB over idle


def _row_mean_model():
    """x [batch, features] -> the mean of each row: a signature that cannot bound a request
    (the feature axis is open), so its JSON is not limited by a count of values."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=1)], "row_mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                             ir_version=onnx.IR_VERSION_2021_7_30)


@pytest.mark.parametrize("route", ["predict", "v2"])
def test_json_numbers_decode_to_a_small_multiple_of_the_body(start, models, route):
    # a model whose signature cannot bound a request decoded a JSON body of numbers to Python
    # floats: ~8x the body (32 bytes a float for "0.123,"), then the array on top; now the long
    # arrays of numbers are decoded straight into float32 (docs/serve.md has before/after)
    import numpy as np
    import onnxruntime as ort

    path = save(_row_mean_model(), models["root"] / "row_mean.onnx")
    server = Server(path, "--workers", "1", "--max-body-mb", "64", "--body-timeout", "60",
                    tmp=models["root"])
    try:
        rows = np.round(np.random.default_rng(3).standard_normal((420, 16384)), 3)  # "-0.123"
        if route == "predict":
            path_, payload = "/predict", {"inputs": rows.tolist()}
        else:  # v2: one flat 'data' array (a single array of 6.9 million values)
            path_, payload = "/v2/models/row_mean/infer", {"inputs": [{
                "name": "x", "shape": list(rows.shape), "datatype": "FP32",
                "data": rows.reshape(-1).tolist()}]}
        body = orjson.dumps(payload)
        del payload
        answer, growth = post_measured(server, path_, body, f"{route}, numbers")
        assert answer is not None and answer[0] == 200, answer and answer[2][:300]
        got = json.loads(answer[2])
        got = got["outputs"][0]["data"] if route == "v2" else got["outputs"]["mean"]
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"x": rows.astype(np.float32)})[0]
        assert np.allclose(np.asarray(got, np.float32).reshape(-1), want.reshape(-1))
        assert growth < 4, growth  # Python floats: ~10x
    finally:
        server.stop()


# --------------------------------------------------------------------------- (4) one per port


def test_grpc_messages_under_the_cap_are_read_within_the_body_budget(start):
    # issue 26, gRPC: concurrent 48 MB messages under a 64 MB cap were all read at once and
    # never charged to the body budget (12 of them: +300..320 MiB, all 200). gRPC gives no size
    # before a message is read, so one worker now reads as many at once as its body budget
    # holds at gRPC's receive limit (here one); the others wait for that read slot or are
    # UNAVAILABLE unread; a read message is charged to the budget: here the budget (40 MiB) is
    # smaller than one message, so every message read is RESOURCE_EXHAUSTED naming the budget
    server = start("--workers", "1", "--max-inflight", "16", "--max-body-mb", "64",
                   "--max-buffer-mb", "40", "--body-timeout", "60", grpc=True)
    size = 48 * 10**6
    message = infer_message("mlp", [ROW]) + b"\x82\x01" + _varint(size) + b"\0" * size
    since = counted(server)
    with PeakRss(server.proc.pid) as rss:
        statuses, details = _rpcs(server, message, 12, metadata=())
    print(f"12 concurrent 48 MB messages under a 64 MB cap, 40 MiB budget: {sorted(statuses)}; "
          f"process tree RSS {rss.idle:.0f} -> peak {rss.peak:.0f} MiB")
    assert set(statuses) <= {413, 503} and 413 in statuses, (statuses, details)
    assert all("budget" in d for d in details), details
    assert all("reading 1 gRPC message" in d for s, d in zip(statuses, details) if s == 503)
    counts = since()
    assert counts.get(("v2_infer", "413", "grpc"), 0) == statuses.count(413), counts
    assert counts.get(("v2_infer", "503", "grpc"), 0) == statuses.count(503), counts
    # one message read at a time: a read costs ~3x the message at its peak (gRPC's growing
    # buffer, then the bytes): one alone +136 MiB, 4 or 12 at once +150..169; old +300..323
    assert rss.peak - rss.idle < 215, (rss.idle, rss.peak)
    assert rpc(server, "ModelInfer", infer_message("mlp", [ROW]))[0] == "OK"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("gap_s", [0.0, 0.3])
def test_one_server_per_port_whatever_the_timing(models, gap_s, protocol):
    # issue 26: two servers started 0.3 s apart on one port both printed "ready" and split the
    # traffic (granian's per-worker SO_REUSEPORT listeners let the second one join); gRPC's
    # listeners share their port the same way: two servers on one --grpc-port (each on an HTTP
    # port of its own)
    import subprocess
    import sys

    from onnxdeploy.serve.runner import port_lock_path

    port, grpc_port = free_port(), free_port()
    procs = []
    try:
        for _ in range(2):
            http_port = port if protocol == "rest" else free_port()
            extra = ["--grpc-port", str(grpc_port)] if protocol == "grpc" else []
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "onnxdeploy", "serve", str(models["mlp"]), "--port",
                 str(http_port), "--workers", "1", *extra], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True))
            procs[-1].http_port = http_port
            time.sleep(gap_s)
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        err = loser.stderr.read()
        assert loser.returncode == 2, err
        lines = err.strip().splitlines()
        shared = port if protocol == "rest" else grpc_port
        option = "--port" if protocol == "rest" else "--grpc-port"
        assert len(lines) == 1 and "in use" in lines[0], err
        assert lines[0].startswith(f"error: {option} {shared}:") or f"{option} {shared}:" in lines[0], err
        assert winner.stdout.readline().startswith(f"ready: http://127.0.0.1:{winner.http_port}")
        assert winner.poll() is None
        lock = port_lock_path(shared)
        assert lock.exists()
        if protocol == "grpc":  # the winner answers on the shared gRPC port
            import grpc
            from tritonclient.grpc import service_pb2 as tpb

            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                call = channel.unary_unary(RPC + "ServerLive")
                for _ in range(100):
                    try:
                        answer = call(b"", timeout=5)
                        break
                    except grpc.RpcError:
                        time.sleep(0.1)
                assert tpb.ServerLiveResponse.FromString(answer).live
        os.killpg(winner.pid, signal.SIGTERM)
        assert winner.wait(30) == 0
        assert not lock.exists()  # removed as the server exits
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)


# --------------------------------------------------------------------------- (3) framing

VALID = b'{"inputs":[[' + b",".join([b"0.5"] * 64) + b"]]}"
CHUNKED = (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n")


def _half_closed(port: int, data: bytes):
    """Send ``data``, close our sending side, read the one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return read_answer(s)


@pytest.mark.parametrize("tail", [
    pytest.param(b"zz\r\nabc\r\n0\r\n\r\n", id="bad-size-line"),
    pytest.param(b"zz\r\n", id="bad-size-line-then-half-close"),
    pytest.param(b"", id="no-last-chunk-then-half-close"),
    pytest.param(b"3\r\nab", id="cut-mid-chunk-then-half-close"),
])
def test_malformed_or_truncated_chunked_bodies_are_400(start, tail):
    # issue 26: a full chunk then a `zz` size line, or a body cut short by a half-close, was
    # treated as complete: 200 (the first chunk alone is valid JSON)
    server = start("--workers", "1")
    data = CHUNKED + b"%x\r\n%s\r\n" % (len(VALID), VALID) + tail
    answer = _half_closed(server.port, data)
    assert answer is not None and answer[0] == 400, answer
    assert "chunked" in json.loads(answer[2])["error"]
    complete = CHUNKED + b"%x\r\n%s\r\n0\r\n\r\n" % (len(VALID), VALID)  # and the same, whole
    assert raw(server.port, complete)[0] == 200
    assert metric(server, "onnxdeploy_requests_total")[("predict", "400")] == 1


def test_a_chunked_body_is_held_once(start):
    # a chunked body was kept as its chunks and then joined: twice its size for a moment
    server = start("--workers", "1", "--max-body-mb", "64", "--body-timeout", "60")
    size = 48 * 2**20
    values = b"0.5," * (size // 4 - 8)
    body = b'{"inputs":[[' + values + b'0.5]]}'
    piece = 1 << 20
    framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece])
                      for i in range(0, len(body), piece)) + b"0\r\n\r\n"
    with PeakRss(server.proc.pid) as rss:
        answer = _send_body(server.port, CHUNKED + framed)
    mib = len(body) / 2**20
    print(f"one chunked {mib:.0f} MiB body: {answer and answer[0]}; process tree RSS "
          f"{rss.idle:.0f} -> peak {rss.peak:.0f} MiB ({(rss.peak - rss.idle) / mib:.2f}x)")
    assert answer is not None and answer[0] == 413, answer  # read whole, then too many values
    assert "values" in json.loads(answer[2])["error"]
    assert rss.peak - rss.idle < 1.5 * mib, (rss.idle, rss.peak)  # twice: 2x and more


def test_transfer_codings_we_do_not_implement_are_501(start):
    server = start("--workers", "1")
    for coding in ("gzip, chunked", "deflate, chunked", "chunked, chunked"):
        data = CHUNKED.replace(b"chunked", coding.encode()) + b"%x\r\n%s\r\n0\r\n\r\n" % (
            len(VALID), VALID)
        answer = raw(server.port, data)
        assert answer[0] == 501, (coding, answer)
        assert answer[1]["content-type"] == "application/json"
        assert coding in json.loads(answer[2])["error"]
    # two Transfer-Encoding fields are one list of codings: gzip, then chunked (granian itself
    # refuses "chunked" then "gzip" with a bare 400)
    data = CHUNKED.replace(b"Transfer-Encoding: chunked\r\n",
                           b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n") + \
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(VALID), VALID)
    status, headers, body = raw(server.port, data)
    assert status == 501 and "gzip, chunked" in json.loads(body)["error"], body
    assert metric(server, "onnxdeploy_requests_total")[("predict", "501")] == 4


def test_trailer_fields_are_taken_when_declared(start):
    # granian hands trailer fields to the app as a second empty chunk, the same as a broken
    # body: taken when the request declares them (Trailer:), else refused with the broken ones
    server = start("--workers", "1")
    whole = b"%x\r\n%s\r\n0\r\nX-Check: 1\r\n\r\n" % (len(VALID), VALID)
    declared = CHUNKED.replace(b"chunked\r\n", b"chunked\r\nTrailer: X-Check\r\n") + whole
    assert raw(server.port, declared)[0] == 200
    status, _, body = raw(server.port, CHUNKED + whole)
    assert status == 400 and "trailer" in json.loads(body)["error"]


# --------------------------------------------------------------------------- (5) supervision


def _workers(server) -> list[int]:
    """Live worker processes of a server (children of its main process)."""
    return [p for p in tree_pids(server.proc.pid) if p != server.proc.pid and _running(p)]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(condition, timeout_s: float = 45.0, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    return condition()


def _ready_pids(server) -> set[int]:
    import re

    return {int(p) for p in re.findall(r"worker (\d+): session ready", server.text())}


def _capacity(server) -> str | None:
    try:
        status, headers, _ = server.get("/v2/health/ready", timeout=1)
    except OSError:
        return None
    return headers.get("Onnxdeploy-Workers") if status == 200 else f"status {status}"


def _new_worker(server, known: set[int]) -> int | None:
    """A worker that became ready and is not in ``known`` (waits, bounded)."""
    fresh = _wait(lambda: sorted(p for p in _ready_pids(server) - known if _running(p)))
    return fresh[0] if fresh else None


def _grpc_answers(server, count: int = 20) -> list[str]:
    """``count`` ModelInfer RPCs, each on a connection of its own (the kernel spreads them over
    the workers' listeners): their codes."""
    out = []
    for _ in range(count):
        channel = server.channel()
        try:
            out.append(rpc(server, "ModelInfer", infer_message("mlp", [ROW]), channel=channel)[0])
        finally:
            channel.close()
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_worker_killed_twice_is_replaced_twice_and_the_server_stays(start, protocol):
    # issue 26: the same worker killed twice within 5.5 s made granian's crash-loop guard stop
    # the whole server (exit 1) with the other worker healthy; with --grpc-port, gRPC answers
    # from the replacements too
    server = start("--workers", "2", grpc=protocol == "grpc")
    assert _wait(lambda: len(_ready_pids(server)) >= 2)
    known = set(_ready_pids(server))
    victim = min(known)
    for _ in range(2):  # the second kill lands right after the replacement is ready (< 5.5 s)
        os.kill(victim, signal.SIGKILL)
        victim = _new_worker(server, known)
        assert victim is not None and server.proc.poll() is None, server.text()
        known.add(victim)
    assert _wait(lambda: f"[{victim}] [INFO] Started worker" in server.text())
    assert _wait(lambda: _capacity(server) == "2/2"), _capacity(server)
    for _ in range(20):
        assert server.post_json("/predict", {"inputs": [[0.5] * 64]}, timeout=10)[0] == 200
    if protocol == "grpc":
        assert _wait(lambda: f"[{victim}] [INFO] gRPC: inference" in server.text())
        assert _grpc_answers(server) == ["OK"] * 20
    assert server.proc.poll() is None and "crash loop" not in server.text()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_stopped_worker_is_found_by_its_heartbeat_and_replaced(start, protocol):
    # issue 26: a worker stopped (SIGSTOP) for 5 s kept receiving new connections; liveness and
    # readiness stayed green; nothing noticed. With --grpc-port, gRPC answers afterwards on
    # every new connection (none lands on the stopped worker's listener)
    server = start("--workers", "2", grpc=protocol == "grpc")  # --heartbeat-timeout 3 s
    assert _wait(lambda: _capacity(server) == "2/2"), _capacity(server)
    known = set(_ready_pids(server))
    victim = min(known)
    os.kill(victim, signal.SIGSTOP)
    try:
        seen = set()

        def replaced():
            seen.add(_capacity(server))
            return not _running(victim) and _capacity(server) == "2/2"

        assert _wait(replaced), (seen, server.text()[-2000:])
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert "1/2" in seen, seen  # readiness said capacity was down while it was
    assert f"worker {victim} has not answered its heartbeat" in server.text()
    replacement = _new_worker(server, known)
    assert replacement is not None and server.proc.poll() is None
    # granian ignores a SIGTERM that lands while a worker is still starting (the teardown's):
    # let it finish starting first
    assert _wait(lambda: f"[{replacement}] [INFO] Started worker" in server.text())
    assert metric(server, "onnxdeploy_workers_live") == {(): 2.0}
    if protocol == "grpc":
        assert _wait(lambda: f"[{replacement}] [INFO] gRPC: inference" in server.text())
        assert _grpc_answers(server) == ["OK"] * 20


def test_workers_die_with_the_main_process_and_leave_nothing(start, models):
    # issue 26: after SIGKILL of the main process, workers kept serving and kept the port (a
    # restart exited 2 "in use") and leaked their temp dirs
    server = start("--workers", "2")
    assert _wait(lambda: len(_workers(server)) >= 2 and len(_ready_pids(server)) >= 2)
    workers = _workers(server)
    environ = Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
    run_dir = Path(next(e for e in environ if e.startswith(b"ONNXDEPLOY_SERVE_RUN_DIR="))
                   .split(b"=", 1)[1].decode())
    assert run_dir.is_dir()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    assert _wait(lambda: not any(_running(p) for p in workers), 15), workers
    assert not run_dir.exists()
    import subprocess
    import sys

    restart = subprocess.Popen(
        [sys.executable, "-m", "onnxdeploy", "serve", str(models["mlp"]), "--port",
         str(server.port), "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:
        line = restart.stdout.readline()
        assert line.startswith(f"ready: http://127.0.0.1:{server.port}"), restart.stderr.read()
    finally:
        os.killpg(restart.pid, signal.SIGTERM)
        try:
            restart.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(restart.pid, signal.SIGKILL)
            restart.wait(5)


# --------------------------------------------------------------------------- in process


def test_budgets_and_their_defaults(models):
    from onnxdeploy.serve.protocols import check_json_size, json_budget
    from onnxdeploy.serve.runner import ServeOptions, app_config
    from onnxdeploy.serve.service import MIN_BUFFER_BYTES, Service
    from onnxdeploy.serve.validation import ApiError

    service = Service({"MODEL_PATH": str(models["mlp"])})
    assert service.buffer.limit == max(2 * service.max_body, MIN_BUFFER_BYTES)
    config = app_config(ServeOptions(model=str(models["mlp"]), max_buffer_mb=16), 1)
    assert Service(config).buffer.limit == 16 * 2**20
    budget = json_budget(service.info, 1024)
    assert budget == 2 * 1024 * 64 + 4096
    check_json_size(b'{"inputs":[' + b",".join([b"[" + b",".join([b"0"] * 64) + b"]"] * 1024)
                    + b"]}", budget)  # the largest valid request passes
    with pytest.raises(ApiError) as err:
        check_json_size(b"[" + b"[]," * budget + b"[]]", budget)
    assert err.value.status == 413
    # a signature that cannot bound a request: arrays held to one per 16 bytes
    check_json_size(b"[" + b"[" + b"1," * 2000 + b"1]," * 1000 + b"[1]]", None)
    with pytest.raises(ApiError) as err:
        check_json_size(b"[" + b"[]," * 100_000 + b"[]]", None)
    assert err.value.status == 400


def test_crash_budget_stops_only_a_real_crash_loop(monkeypatch):
    from onnxdeploy.serve import supervise

    clock = [1000.0]
    monkeypatch.setattr(supervise.time, "monotonic", lambda: clock[0])
    budget = supervise.CrashBudget()
    for _ in range(supervise.CRASH_LIMIT - 1):  # what granian does at each respawn
        budget[0] = clock[0]
        budget.clear()
        clock[0] += 1.0
        assert budget.get(0, 0) == 0  # "long ago": granian respawns again
    budget[0] = clock[0]
    assert budget.get(0, 0) == clock[0]  # the 5th respawn within 60 s: a loop, granian stops
    clock[0] += supervise.CRASH_WINDOW_S + 1
    assert budget.get(0, 0) == 0 and budget.get(1, 0) == 0


def test_numbers_decoded_into_arrays_mean_what_orjson_says():
    import numpy as np

    from onnxdeploy.serve.protocols import ARRAY_DECODE_MIN_BYTES, loads
    from onnxdeploy.serve.validation import ApiError

    f32, pad = np.dtype(np.float32), b" " * ARRAY_DECODE_MIN_BYTES
    row = b"[" + b",".join([b"-0.125", b"1e-3", b"7", b"2.5E+2"] * 100) + b"]"
    text = b'{"id": "[' + b"1," * 200 + b'1]", "inputs": [' + row + b"," + row + b'], "s": [2, 400]}'
    out = loads(text + pad, None, f32)
    assert out["id"] == orjson.loads(text)["id"]  # an array inside a string stays a string
    assert out["s"] == [2, 400]  # short arrays stay lists
    assert all(isinstance(r, np.ndarray) and r.dtype == f32 for r in out["inputs"])
    assert np.array_equal(np.asarray(out["inputs"]),
                          np.asarray(orjson.loads(text)["inputs"], np.float32))
    # what is not all numbers is left to orjson (and validation): null, out of float32's range
    nulls = loads(b'{"inputs": [[' + b"1," * 200 + b"null]]}" + pad, None, f32)
    assert nulls["inputs"][0][-1] is None
    huge = loads(b'{"inputs": [[' + b"1," * 200 + b"1e39]]}" + pad, None, f32)
    assert huge["inputs"][0][-1] == 1e39
    for bad in (b'{"inputs": [[' + b"1," * 200 + b"1,]]}", b'{"inputs": [[' + b"1," * 200 + b"1]]"):
        with pytest.raises(ApiError) as err:
            loads(bad + pad, None, f32)
        assert err.value.status == 400 and "malformed JSON" in err.value.message
