"""Issue 26: serving that no client can crash, exhaust or confuse.

Real ``onnxdeploy serve`` processes on free ports, raw sockets where a client library would
refuse to send the bytes. Memory is sampled over the whole process tree (parent + workers, from
/proc) with generous bounds; nothing here asserts on wall time.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from builders import mlp_classifier, save
from prometheus_client.parser import text_string_to_metric_families
from test_serve_server import Server

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")

KEY = {"Authorization": "Bearer k3y"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_hostile")
    return {"root": root, "mlp": save(mlp_classifier(), root / "mlp.onnx")}


@pytest.fixture
def start(models):
    servers = []

    def _start(*args, env=None, headers=None):
        servers.append(Server(models["mlp"], *args, env=env, tmp=models["root"], headers=headers))
        return servers[-1]

    yield _start
    for s in servers:
        s.stop()


def metric(server, name: str, headers=None) -> dict[tuple, float]:
    """The samples of one metric by their label values."""
    status, _, body = server.get("/metrics", headers=headers)
    assert status == 200
    out: dict[tuple, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(s.labels.values())] = out.get(tuple(s.labels.values()), 0) + s.value
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


# --------------------------------------------------------------------------- (1) outputs


def test_non_finite_output_is_an_error_naming_it_and_counted(start):
    server = start("--workers", "1")
    huge = [[3e38] * 64]  # finite float32 inputs that overflow inside the model
    status, _, body = server.post_json("/predict", {"inputs": huge})
    error = json.loads(body)["error"]
    assert status == 500 and "'logits'" in error and "not finite" in error, body
    assert "prediction" not in json.loads(body)
    status, _, body = server.post_json("/v2/models/mlp/infer", {"inputs": [
        {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": huge[0]}]})
    assert status == 500 and "'logits'" in json.loads(body)["error"]
    assert server.post_json("/predict", {"inputs": [[0.5] * 64]})[0] == 200
    requests = metric(server, "onnxdeploy_requests_total")
    assert requests[("predict", "500")] == 1 and requests[("v2_infer", "500")] == 1
    assert metric(server, "onnxdeploy_nonfinite_outputs_total") == {("logits",): 2}
