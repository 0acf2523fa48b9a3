"""The granian front over real sockets: every byte answered in JSON where the server lets us,
bounded memory under over-limit bodies, /docs, and the command line's own behaviour (ready
line, port in use, bad host, Ctrl-C, the deprecated --threads)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from builders import mlp_classifier, save, two_input_int_model
from test_serve_server import Server

from onnxdeploy.bench.servers import free_port


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_front")
    return {"root": root, "mlp": save(mlp_classifier(), root / "mlp.onnx"),
            "two": save(two_input_int_model(), root / "two.onnx")}


@pytest.fixture(scope="module")
def server(models):
    s = Server(models["mlp"], "--workers", "1", tmp=models["root"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def two(models):
    s = Server(models["two"], "--workers", "1", tmp=models["root"])
    yield s
    s.stop()


def raw(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Send bytes as they are; parse the one answer (status, lowercased headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):  # refused mid-body: the answer may be there
            pass
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        need = int(headers.get("content-length", "0"))
        while len(body) < need:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, headers, body


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def chunked(path: str, chunks: list[bytes]) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


ROW = b"[" + b",".join([b"0.5"] * 64) + b"]"


def test_chunked_bodies_within_and_over_the_cap(server):
    status, _, body = raw(server.port, chunked("/predict", [b'{"inputs":[', ROW, b"]}"]))
    assert status == 200 and json.loads(body)["predictions"]
    big = [b"1" * 65536] * 40  # 2.5 MiB, over the derived cap of 1024 rows x 64 floats
    status, headers, body = raw(server.port, chunked("/predict", big))
    assert status == 413 and "expected at most" in json.loads(body)["error"]
    assert headers["content-type"] == "application/json"


def test_bad_bodies_are_400_json(server, two):
    bad_chunk = (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
    status, _, body = raw(server.port, bad_chunk)
    assert status == 400 and "chunked" in json.loads(body)["error"]
    # 1e39 does not fit float32: refused, not answered 200 with inf/null logits
    huge = b'{"inputs":[[1e39' + b",0" * 63 + b"]]}"
    status, _, body = raw(server.port, post("/predict", huge))
    assert status == 400 and "out of range for float32" in json.loads(body)["error"]
    # a boolean in a binary input's shape is a 400, not a 500
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [True, 64], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 256}}]})
    status, _, body = raw(server.port, post("/v2/models/mlp/infer", header + b"\0" * 256,
                                            f"Inference-Header-Content-Length: {len(header)}\r\n"))
    assert status == 400 and "'shape' must be a list" in json.loads(body)["error"]
    # NaN in binary data
    nan = b"\x00\x00\xc0\x7f" * 64
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 256}}]})
    status, _, body = raw(server.port, post("/v2/models/mlp/infer", header + nan,
                                            f"Inference-Header-Content-Length: {len(header)}\r\n"))
    assert status == 400 and "NaN" in json.loads(body)["error"]
    # ORT's own text stays in the log: the client gets the operator and the bound, no C++ names
    status, _, body = raw(two.port, post("/predict", b'{"inputs":{"x":[[0,0,0,0]],"idx":[99]}}'))
    message = json.loads(body)["error"]
    assert status == 400 and "the model rejected the input" in message and "idx=99" in message
    for internal in ("ONNXRuntimeError", "Non-zero status", ".cc", "::", "Name:"):
        assert internal not in message, message
    assert "ONNXRuntimeError" in two.text()  # the full text is in the server log


@pytest.mark.parametrize("request_bytes", [
    b"HELLO WORLD\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"y" * 1000) for i in range(600))
    + b"\r\n",
], ids=["garbage", "bad-content-length", "414", "431"])
def test_transport_errors_are_refused_without_html(server, request_bytes):
    # granian answers these before any Python runs: a bare status line, no body (never HTML)
    status, headers, body = raw(server.port, request_bytes)
    assert 400 <= status < 500 and b"<html" not in body.lower()
    assert server.get("/v2/health/live")[0] == 200  # and the server is fine


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _worker_pids(server) -> list[int]:
    return sorted({int(p) for p in re.findall(r"worker (\d+): session ready", server.text())})


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_worker_memory_stays_bounded_under_over_limit_bodies(server):
    (pid,) = _worker_pids(server)
    for _ in range(20):
        server.post_json("/predict", {"inputs": [[0.5] * 64] * 16})
    idle = _rss_kb(pid)
    peak = [idle]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_kb(pid))
            time.sleep(0.005)

    def send(i):
        body = b'{"inputs":[' + b",".join([ROW] * 60_000) + b"]}"  # ~11.5 MiB of real rows
        if i % 2:  # chunked: read up to the cap, then refused
            data = chunked("/predict", [body[k:k + 65536] for k in range(0, len(body), 65536)])
        else:  # declared: refused from Content-Length before reading
            data = post("/predict", body)
        try:
            return raw(server.port, data, timeout=30)[0]
        except (ConnectionResetError, IndexError):  # closed on us mid-body before we read the 413
            return -1

    sampler = threading.Thread(target=sample)
    sampler.start()
    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(send(i))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    sampler.join()
    print(f"worker RSS idle {idle / 1024:.0f} MiB, peak under 8 over-limit bodies "
          f"{peak[0] / 1024:.0f} MiB; answers {sorted(results)}")
    assert len(results) == 8 and set(results) <= {413, -1} and 413 in results, results
    assert peak[0] <= 2 * idle, (idle, peak[0])
    assert server.get("/v2/health/live")[0] == 200


def test_docs_page_and_its_assets_are_served_locally(server):
    status, headers, body = server.get("/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "/openapi.json" in page and "https://" not in page  # no CDN
    for asset in re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', page):
        assert server.get(asset)[0] == 200, asset
    spec = json.loads(server.get("/openapi.json")[2])
    assert "/predict" in spec["paths"]


# --------------------------------------------------------------------------- command line


def _serve(model, *args, **kw):
    return subprocess.run([sys.executable, "-m", "onnxdeploy", "serve", str(model), *args],
                          capture_output=True, text=True, timeout=60, **kw)


def test_port_in_use_is_one_line_and_exit_2(models):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        r = _serve(models["mlp"], "--port", str(port))
    assert r.returncode == 2 and time.monotonic() - t0 < 20
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "in use" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_bad_host_is_exit_2(models):
    # numeric addresses that are not this machine's (no name lookups leave the machine)
    for host in ("10.255.255.1", "::2"):
        r = _serve(models["mlp"], "--host", host, "--port", str(free_port()))
        assert r.returncode == 2, (host, r.stderr)
        assert "--host" in r.stderr and "Traceback" not in r.stderr


def test_ready_line_then_ctrl_c_exits_130(models):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onnxdeploy", "serve", str(models["mlp"]),
                             "--port", str(port), "--workers", "1", "--threads", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()  # blocks until the ready line
        assert line.startswith(f"ready: http://127.0.0.1:{port} serving 'mlp'"), line
        for endpoint in ("/predict", "/v2/models/mlp/infer", "/v2/health/live", "/metrics", "/docs"):
            assert endpoint in line
        curl = line.split("try: ", 1)[1].strip()
        body = re.search(r"-d '(.*)'$", curl).group(1)
        assert len(json.loads(body)["inputs"][0]) == 64  # a ready-to-paste request that fits
        out = subprocess.run(["curl", "-s", "-X", "POST", f"http://127.0.0.1:{port}/predict",
                              "-H", "Content-Type: application/json", "-d", body],
                             capture_output=True, text=True, timeout=10) if _has("curl") else None
        if out is not None:
            assert json.loads(out.stdout)["predictions"]
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
        code = proc.wait(30)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "Aborted" not in err
    assert "--threads is deprecated" in err and "--http-threads" in err


def _has(tool: str) -> bool:
    from shutil import which

    return which(tool) is not None


def test_worker_freezes_its_long_lived_objects_before_serving(models):
    """A worker's start-up objects are out of the collector's reach (no full-GC tail spikes)."""
    import asyncio
    import gc

    from onnxdeploy.serve.front import Front

    gc.unfreeze()
    loop = asyncio.new_event_loop()
    front = Front({"MODEL_PATH": str(models["mlp"]), "ORT_THREADS": 1})
    try:
        front.__rsgi_init__(loop)
        assert gc.get_freeze_count() > 1000
        assert front.holder.ready  # the session was created before the freeze
    finally:
        front.__rsgi_del__(loop)
        loop.close()
        gc.unfreeze()
