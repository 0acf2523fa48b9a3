"""``onnxdeploy serve`` as a real server process (granian) on a free port, over real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from builders import mlp_classifier, save, two_input_int_model
from prometheus_client.parser import text_string_to_metric_families

from onnxdeploy.bench.servers import free_port

START_TIMEOUT_S = 30


class Server:
    """A server process in its own process group, killed whole on stop."""

    def __init__(self, model, *args, env=None, tmp=None, headers=None):
        self.port = free_port()
        self.model = model
        self.log = open(tmp / f"serve-{self.port}.log", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onnxdeploy", "serve", str(model), "--port", str(self.port), *args],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.text()}")
            try:
                if self.get("/v2/health/ready", headers=headers)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        text = self.text()
        self.stop()
        raise RuntimeError(f"server not ready in {START_TIMEOUT_S}s:\n{text}")

    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            # header names case-insensitively, as HTTP has them (granian sends them lowercase)
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post_json(self, path, obj, **kw):
        return self.request("POST", path, orjson.dumps(obj), {"Content-Type": "application/json"}, **kw)

    def text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        try:  # workers left behind by a crashed parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_server")
    return {"root": root, "mlp": save(mlp_classifier(), root / "mlp.onnx"),
            "two": save(two_input_int_model(), root / "two.onnx")}


@pytest.fixture
def start(models):
    servers = []

    def _start(model, *args, env=None, headers=None):
        servers.append(Server(models[model], *args, env=env, tmp=models["root"], headers=headers))
        return servers[-1]

    yield _start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def mlp_server(models):
    s = Server(models["mlp"], "--workers", "2", "--threads", "4", tmp=models["root"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def two_server(models):
    s = Server(models["two"], "--workers", "1", "--name", "pair", tmp=models["root"])
    yield s
    s.stop()


def _ref(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _ready_workers(server, count: int) -> set[int]:
    deadline = time.monotonic() + START_TIMEOUT_S  # ready answers as soon as one worker is up
    while True:
        pids = {int(p) for p in re.findall(r"worker (\d+): session ready", server.text())}
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def test_sessions_are_created_in_workers_not_the_parent(mlp_server):
    pids = _ready_workers(mlp_server, 2)
    assert len(pids) == 2 and mlp_server.proc.pid not in pids


def test_predict_and_v2_on_one_input_classifier(mlp_server, models):
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    (want,) = _ref(models["mlp"], {"x": x})
    status, _, body = mlp_server.post_json("/predict", {"inputs": x.tolist()})
    assert status == 200
    answer = json.loads(body)
    np.testing.assert_allclose(answer["outputs"]["logits"], want, rtol=1e-5, atol=1e-6)
    assert answer["predictions"] == want.argmax(1).tolist() and len(answer["labels"]) == 4

    status, _, body = mlp_server.post_json("/v2/models/mlp/infer", {"id": "r1", "inputs": [
        {"name": "x", "shape": [4, 64], "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
    assert status == 200
    out = json.loads(body)
    assert out["id"] == "r1" and out["model_name"] == "mlp"
    (logits,) = out["outputs"]
    assert logits["shape"] == [4, 10] and logits["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(logits["data"]).reshape(4, 10), want, rtol=1e-5, atol=1e-6)


def test_v2_binary_and_json_on_two_input_int_model(two_server, models):
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    idx = np.array([0, 9, 4], np.int64)
    (want,) = _ref(models["two"], {"x": x, "idx": idx})
    header = orjson.dumps({"inputs": [
        {"name": "x", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": 48}},
        {"name": "idx", "shape": [3], "datatype": "INT64", "parameters": {"binary_data_size": 24}},
    ], "parameters": {"binary_data_output": True}})
    status, headers, body = two_server.request(
        "POST", "/v2/models/pair/versions/1/infer", header + x.tobytes() + idx.tobytes(),
        {"Inference-Header-Content-Length": str(len(header)),
         "Content-Type": "application/octet-stream"})
    assert status == 200, body
    n = int(headers["Inference-Header-Content-Length"])
    (meta,) = orjson.loads(body[:n])["outputs"]
    assert meta["parameters"]["binary_data_size"] == 36
    np.testing.assert_allclose(np.frombuffer(body[n:], np.float32).reshape(3, 3), want, rtol=1e-6)

    status, _, body = two_server.post_json("/v2/models/pair/infer", {"inputs": [
        {"name": "x", "shape": [3, 4], "datatype": "FP32", "data": x.tolist()},
        {"name": "idx", "shape": [3], "datatype": "INT64", "data": idx.tolist()}]})
    assert status == 200
    np.testing.assert_allclose(np.array(json.loads(body)["outputs"][0]["data"]).reshape(3, 3), want,
                               rtol=1e-5)
    status, _, body = two_server.post_json("/predict", {"inputs": {"x": x.tolist(), "idx": idx.tolist()}})
    assert status == 200 and "predictions" not in json.loads(body)


def test_body_limit_refused_from_content_length(two_server):
    # derived from the signature: 1024 rows of x [batch, 4] and idx [batch], as JSON
    from onnxdeploy.serve.model import read_model_info
    from onnxdeploy.serve.validation import body_limit

    cap = body_limit(read_model_info(two_server.model).signature, 1024)
    assert 100_000 < cap < 200_000
    status, _, body = two_server.request(
        "POST", "/predict", b"{}", {"Content-Type": "application/json",
                                    "Content-Length": str(64 * 2**20)}, timeout=5)
    assert status == 413 and f"expected at most {cap} bytes" in json.loads(body)["error"]


def test_metrics_aggregate_across_workers(mlp_server):
    for _ in range(20):  # two workers share the load; both must be counted
        assert mlp_server.post_json("/predict", {"inputs": [[0.0] * 64]})[0] == 200
    mlp_server.post_json("/predict", {"inputs": [[0.0]]})
    _, headers, body = mlp_server.get("/metrics")
    assert headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in ("onnxdeploy_requests", "onnxdeploy_request_duration_seconds",
                 "onnxdeploy_model_compute_seconds", "onnxdeploy_inflight_requests"):
        assert name in families, name
    totals = {(s.labels["endpoint"], s.labels["status"]): s.value
              for s in families["onnxdeploy_requests"].samples if s.name.endswith("_total")}
    assert totals[("predict", "200")] >= 20 and totals[("predict", "400")] >= 1
    hist = {s.name: s.value for s in families["onnxdeploy_model_compute_seconds"].samples}
    assert hist["onnxdeploy_model_compute_seconds_count"] >= 20


def _connection_owners(server_pid: int, port: int, conns) -> list[int | None]:
    """The pid of the worker process holding the server end of each client connection (/proc)."""
    wanted = {c.sock.getsockname()[1]: i for i, c in enumerate(conns)}
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
        if local == port and remote in wanted:
            inodes[f"socket:[{fields[9]}]"] = wanted[remote]
    owners: list[int | None] = [None] * len(conns)
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != server_pid:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target in inodes:
                    owners[inodes[target]] = int(proc.name)
        except OSError:  # a process or fd that went away while we looked
            continue
    return owners


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_keepalive_connections_spread_over_workers(mlp_server):
    # A client opening 8 keep-alive connections at once (a load balancer, our bench) must get
    # both workers, not one worker holding all of them. granian gives each worker its own
    # SO_REUSEPORT listener: the kernel spreads connections by a hash of the address pair, so a
    # round may split 6/2, but over rounds each worker takes its share (8/0 is 1 in 128).
    workers = _ready_workers(mlp_server, 2)  # a worker still booting rightly gets nothing
    body = orjson.dumps({"inputs": [[0.5] * 64]})
    headers = {"Content-Type": "application/json"}
    splits, owners_all = [], []
    for _ in range(6):
        conns = [http.client.HTTPConnection("127.0.0.1", mlp_server.port, timeout=30)
                 for _ in range(8)]
        for c in conns:
            c.connect()
        for _ in range(3):
            for c in conns:
                c.request("POST", "/predict", body, headers)
            for c in conns:
                r = c.getresponse()
                assert r.status == 200 and not r.will_close
                r.read()
        owners = _connection_owners(mlp_server.proc.pid, mlp_server.port, conns)
        for c in conns:
            c.close()
        assert set(owners) <= workers, (owners, workers)
        owners_all += owners
        splits.append(sorted(Counter(owners).values(), reverse=True))
    shares = Counter(owners_all)
    assert len(shares) == 2 and min(shares.values()) >= 12, splits  # of 48: a fair coin's spread


def test_killed_worker_is_replaced(start):
    server = start("mlp", "--workers", "2")
    first = _ready_workers(server, 2)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        now = _ready_workers(server, 3)
        if len(now - {victim}) >= 2:
            break
        time.sleep(0.2)
    replacement = _ready_workers(server, 3) - first
    assert replacement and server.proc.poll() is None, server.text()
    for _ in range(20):  # new connections reach live workers only
        assert server.post_json("/predict", {"inputs": [[0.0] * 64]}, timeout=10)[0] == 200
    families = {f.name: f for f in text_string_to_metric_families(server.get("/metrics")[2].decode())}
    (inflight,) = [s.value for s in families["onnxdeploy_inflight_requests"].samples]
    assert inflight == 0  # the dead worker's gauge is not summed in


def _slow_server(start, *extra, timeout_ms=800):
    # A batch that never fills holds every request for the batch timeout (--batch-hold always):
    # slow, deterministic. Default --threads: a test passing here says nothing about a
    # hand-tuned thread count.
    return start("mlp", "--workers", "1", "--max-batch-size", "1000", "--batch-hold", "always",
                 "--batch-timeout-ms", str(timeout_ms), *extra)


def _timed_post(server, x):
    t0 = time.monotonic()
    status, headers, body = server.post_json("/predict", {"inputs": x.tolist()})
    return status, headers, body, time.monotonic() - t0


def _timed_get(server, path):
    t0 = time.monotonic()
    status = server.get(path, timeout=10)[0]
    return status, time.monotonic() - t0


def test_burst_beyond_inflight_bound_at_default_threads(start, models):
    # 4 request threads (the default) each hold a request in its batch for 1.5 s and the bound
    # lets 4 more wait; the other 16 must be refused at once, not queued, and health must answer.
    hold_s, bound, burst = 1.5, 8, 24
    server = _slow_server(start, "--max-inflight", str(bound), timeout_ms=int(hold_s * 1000))
    xs = [np.full((1, 64), i, np.float32) for i in range(burst)]
    with ThreadPoolExecutor(burst) as pool:
        futures = [pool.submit(_timed_post, server, x) for x in xs]
        time.sleep(0.4)
        live, ready = _timed_get(server, "/v2/health/live"), _timed_get(server, "/v2/health/ready")
        still_running = sum(not f.done() for f in futures)
        results = [f.result() for f in futures]
    assert live[0] == ready[0] == 200
    assert live[1] < 1.0 and ready[1] < 1.0, (live, ready)
    assert still_running >= bound // 2  # health answered while accepted requests were held
    statuses = [r[0] for r in results]
    timeline = [(r[0], round(r[3], 2)) for r in results]
    assert statuses.count(200) == bound and statuses.count(503) == burst - bound, timeline
    for status, headers, body, seconds in results:
        if status == 503:  # refused at once: well before any held batch ran
            assert headers["Retry-After"] == "1" and "busy" in json.loads(body)["error"]
            assert seconds < hold_s - 0.5, seconds
    for x, (status, _, body, _) in zip(xs, results):  # every accepted request got its own rows
        if status == 200:
            (want,) = _ref(models["mlp"], {"x": x})
            np.testing.assert_allclose(json.loads(body)["outputs"]["logits"], want, rtol=1e-5,
                                       atol=1e-5)
    families = {f.name: f for f in text_string_to_metric_families(server.get("/metrics")[2].decode())}
    totals = {(s.labels["endpoint"], s.labels["status"]): s.value
              for s in families["onnxdeploy_requests"].samples if s.name.endswith("_total")}
    assert totals[("predict", "503")] == burst - bound and totals[("predict", "200")] == bound


def test_sigterm_drains_accepted_requests(start):
    server = _slow_server(start)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(server.post_json, "/predict", {"inputs": [[float(i)] * 64]})
                   for i in range(6)]
        time.sleep(0.3)  # all six accepted: four wait for their batch, two for a thread
        os.killpg(server.proc.pid, signal.SIGTERM)
        results = [f.result() for f in futures]
    assert [r[0] for r in results] == [200] * 6
    assert server.proc.wait(20) == 0
    assert "SIGABRT" not in server.text()  # workers exit cleanly (no onnxruntime in the parent)
    with pytest.raises(OSError):
        server.get("/v2/health/live", timeout=2)


def test_batching_gives_each_caller_its_own_rows(start, models):
    server = start("mlp", "--workers", "1", "--threads", "16", "--max-batch-size", "64",
                   "--batch-hold", "always", "--batch-timeout-ms", "100")  # held: they share one
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda x: server.post_json("/predict", {"inputs": x.tolist()}), xs))
    for x, (status, _, body) in zip(xs, results):
        assert status == 200
        (want,) = _ref(models["mlp"], {"x": x})
        np.testing.assert_allclose(json.loads(body)["outputs"]["logits"], want, rtol=1e-5, atol=1e-6)
    families = {f.name: f for f in text_string_to_metric_families(server.get("/metrics")[2].decode())}
    sizes = {s.name: s.value for s in families["onnxdeploy_batch_size"].samples}
    assert sizes["onnxdeploy_batch_size_sum"] == sum(len(x) for x in xs)
    assert sizes["onnxdeploy_batch_size_count"] < len(xs)  # some requests were merged
    assert "onnxdeploy_batch_queue_seconds" in families


def test_api_key_over_http(start):
    server = start("two", "--workers", "1", "--api-key-env", "TEST_SERVE_KEY",
                   env={"TEST_SERVE_KEY": "k3y"}, headers={"Authorization": "Bearer k3y"})
    assert server.get("/v2/health/live")[0] == 200
    assert server.get("/v2/models/two")[0] == 401
    assert server.get("/v2/health/ready")[0] == 401
    assert server.post_json("/predict", {"inputs": {"x": [[0.0] * 4], "idx": [1]}})[0] == 401
    assert server.get("/v2/models/two", headers={"Authorization": "Bearer k3y"})[0] == 200


def test_unloadable_model_is_a_clear_error(models):
    bad = models["root"] / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = subprocess.run([sys.executable, "-m", "onnxdeploy", "serve", str(bad), "--port",
                        str(free_port())], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "ModelLoadError" in r.stderr and "Traceback" not in r.stderr
