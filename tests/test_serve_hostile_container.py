"""Issue 26's hostile cases that make sense against the image ``containerize`` builds: a real
podman container (the session's image, ``built`` in conftest.py, on the cached Debian base),
HTTP and gRPC published on free host ports, a memory limit, two workers.

The cases are test_serve_hostile's, sent by its helpers; the process tree is sampled from the
host (/proc, the container's init and below). SIGTERM with requests in flight is
test_deploy::test_image_runs_as_the_servingruntime_says.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from containers import podman, wait_http
from test_serve_hostile import (
    NAMED,
    ROW,
    PeakRss,
    _named_request,
    _wait,
    head,
    infer_message,
    open_unfinished,
    read_answer,
    rpc,
)

from onnxdeploy.bench.servers import free_port

grpc = pytest.importorskip("grpc")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")]

NAME = "数字"
KEY = {"Authorization": "Bearer k3y"}
GRPC_KEY = (("authorization", "Bearer k3y"),)
MEMORY = "768m"


class Container:
    """The image run with two workers, a key, a non-ASCII model name and a memory limit."""

    def __init__(self, image: str):
        self.port, self.grpc_port = free_port(), free_port()
        self.cid = podman(
            "run", "-d", "--read-only", "--memory", MEMORY, "-e", "HOSTILE_KEY=k3y",
            "-p", f"127.0.0.1:{self.port}:8080", "-p", f"127.0.0.1:{self.grpc_port}:8081",
            image, "--workers", "2", "--name", NAME, "--api-key-env", "HOSTILE_KEY"
            ).stdout.strip()
        wait_http(f"http://127.0.0.1:{self.port}/v2/health/live", timeout=90)
        self.init = int(podman("inspect", "-f", "{{.State.Pid}}", self.cid).stdout)
        _wait(lambda: self.capacity() == "2/2", 90)

    # what test_serve_hostile's helpers call on a server
    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={**KEY, **(headers or {})})
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def channel(self):
        return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}",
                                     options=[("grpc.use_local_subchannel_pool", 1)])

    def text(self) -> str:
        r = podman("logs", self.cid, check=False)
        return r.stdout + r.stderr

    def capacity(self) -> str | None:
        try:
            status, headers, _ = self.get("/v2/health/ready", timeout=2)
        except OSError:
            return None
        return headers.get("Onnxdeploy-Workers") if status == 200 else f"status {status}"

    def main_pid(self) -> int:
        """The host pid of ``onnxdeploy serve`` (the init's child)."""
        return _children(self.init)[0]

    def workers(self) -> list[int]:
        """Host pids of the worker processes (not multiprocessing's resource tracker)."""
        return [p for p in _children(self.main_pid())
                if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]

    def running(self) -> dict:
        state = json.loads(podman("inspect", "-f", "{{json .State}}", self.cid).stdout)
        return {"running": state["Running"], "oom": state["OOMKilled"]}

    def statuses(self) -> dict[tuple, float]:
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[tuple, float] = {}
        for family in text_string_to_metric_families(self.get("/metrics")[2].decode()):
            for s in family.samples:
                if s.name == "onnxdeploy_requests_total":
                    key = (s.labels["endpoint"], s.labels["status"], s.labels["protocol"])
                    out[key] = out.get(key, 0) + s.value
        return out

    def stop(self) -> None:
        podman("rm", "-f", "-t", "5", self.cid, check=False)


def _children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(proc.name))
    return sorted(out)


@pytest.fixture(scope="module")
def container(built):
    c = Container(built["image"])
    yield c
    c.stop()


def test_bytes_names_and_shapes_in_the_container(container):
    before = container.statuses()
    # a percent-encoded path that is not UTF-8, without the key: 400, counted
    conn = http.client.HTTPConnection("127.0.0.1", container.port, timeout=30)
    for path in ("/x%ff", "/docs/static/%c0%ae%c0%ae/x"):
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 400 and "not valid UTF-8" in json.loads(body)["error"], (path, body)
    conn.close()
    # the non-ASCII name on every route and RPC; a name that is not UTF-8 refused on each
    for protocol in ("rest", "grpc"):
        for suffix, method, rpc_name in NAMED:
            status, answer = _named_request(container, protocol, NAME.encode(), suffix, method,
                                            rpc_name, metadata=GRPC_KEY)
            assert status in (200, "OK"), (protocol, suffix, answer)
            status, answer = _named_request(container, protocol, b"mlp\xff", suffix, method,
                                            rpc_name, metadata=GRPC_KEY)
            assert status in (400, "INVALID_ARGUMENT"), (protocol, suffix, answer)
    # an impossible shape with empty data: JSON and gRPC raw contents
    status, _, body = container.request("POST", f"/v2/models/{quote(NAME)}/infer", orjson.dumps(
        {"inputs": [{"name": "x", "shape": [0, 2**63 - 1], "datatype": "FP32", "data": []}]}),
        {"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["error"].startswith("input 'x':"), body
    from tritonclient.grpc import service_pb2 as tpb

    req = tpb.ModelInferRequest(model_name=NAME)
    req.inputs.add(name="x", datatype="FP32", shape=[0, 2**63 - 1])
    req.raw_input_contents.append(b"")
    code, details = rpc(container, "ModelInfer", req.SerializeToString(), GRPC_KEY)
    assert code == "INVALID_ARGUMENT" and details.startswith("input 'x':"), details
    after = container.statuses()
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert not [k for k in grown if k[1].startswith("5")], grown
    refused = {p: sum(v for k, v in grown.items() if k[1] == "400" and k[2] == p)
               for p in ("http", "grpc")}
    assert refused == {"http": 2 + len(NAMED) + 1, "grpc": len(NAMED) + 1}, grown
    assert "Traceback" not in container.text()


def test_unauthenticated_slow_bodies_under_a_memory_limit(container):
    # 300 connections without the key, each holding an unfinished 1.5 MB body, against a
    # container with a 768 MiB limit: had the bodies been read (450 MB), it would be OOM-killed
    with PeakRss(container.init) as rss:
        socks = open_unfinished(container.port, 300, head("/predict", 1_500_000) + b"[" * 65536)
        answers = [read_answer(s) for s in socks]
        for s in socks:
            s.close()
    statuses = [a and a[0] for a in answers]
    print(f"container: 300 unfinished bodies without the key: {statuses.count(401)} x 401; "
          f"process tree RSS {rss.idle:.0f} -> peak {rss.peak:.0f} MiB")
    assert statuses.count(401) == 300, statuses
    assert rss.peak - rss.idle < 100, (rss.idle, rss.peak)
    assert container.running() == {"running": True, "oom": False}
    assert container.request("POST", "/predict", orjson.dumps({"inputs": [ROW]}),
                             {"Content-Type": "application/json"})[0] == 200


def test_a_worker_killed_in_the_container_is_replaced(container):
    main = container.main_pid()
    workers = container.workers()
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    assert _wait(lambda: (w := container.workers()) and len(w) == 2 and workers[0] not in w, 60)
    assert _wait(lambda: container.capacity() == "2/2", 60), container.capacity()
    assert container.main_pid() == main and container.running()["running"]
    for _ in range(10):
        assert container.request("POST", "/predict", orjson.dumps({"inputs": [ROW]}),
                                 {"Content-Type": "application/json"})[0] == 200
    deadline = time.monotonic() + 60
    codes: list[str] = []
    while time.monotonic() < deadline:  # the replacement's gRPC listener comes up after HTTP
        codes = []
        for _ in range(10):
            channel = container.channel()
            try:
                codes.append(rpc(container, "ModelInfer", infer_message(NAME, [ROW]), GRPC_KEY,
                                 channel=channel)[0])
            finally:
                channel.close()
        if codes == ["OK"] * 10:
            break
        time.sleep(0.5)
    assert codes == ["OK"] * 10, codes
