"""Slow clients against a real server process over real sockets: 64 connections trickling
headers, 64 trickling bodies and 64 trickling liveness requests must not stop /predict or
liveness; a SIGTERM with them still connected ends the server within its grace period."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time

import orjson
import pytest
from builders import mlp_classifier, save
from test_serve_server import Server

SLOW = 64  # connections of each kind
TRICKLE_S = 0.5  # one byte per connection this often
WITHIN_S = 5.0
GRACE_S = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_slow")
    return root, save(mlp_classifier(), root / "mlp.onnx")


class Trickler:
    """Opens slow connections and sends one more byte on each every TRICKLE_S, never finishing."""

    def __init__(self, port: int):
        self.port = port
        self.socks: list[tuple[socket.socket, bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def open(self, prefix: bytes, rest: bytes, count: int) -> None:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.sendall(prefix)
            self.socks.append((s, rest))

    def _run(self) -> None:
        step = 0
        while not self.stop.wait(TRICKLE_S):
            for s, rest in self.socks:
                try:
                    s.send(rest[step % len(rest):step % len(rest) + 1])
                except OSError:
                    pass
            step += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s, _ in self.socks:
            s.close()


def _timed(fn) -> float | None:
    t0 = time.monotonic()
    try:
        ok = fn()
    except OSError:
        return None
    return time.monotonic() - t0 if ok else None


def _predict(port: int) -> bool:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=WITHIN_S)
    try:
        c.request("POST", "/predict", orjson.dumps({"inputs": [[0.5] * 64]}),
                  {"Content-Type": "application/json"})
        return c.getresponse().status == 200
    finally:
        c.close()


def _live(port: int) -> bool:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=WITHIN_S)
    try:
        c.request("GET", "/v2/health/live")
        return c.getresponse().status == 200
    finally:
        c.close()


def test_slow_clients_do_not_stall_predict_or_liveness_and_sigterm_ends_within_grace(model):
    root, path = model
    server = Server(path, "--workers", "2", "--body-timeout", "60",
                    "--graceful-timeout", str(GRACE_S), tmp=root)
    trickler = Trickler(server.port)
    try:
        body_head = (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"inputs\": [[")
        trickler.open(b"POST /predict HTTP/1.1\r\nHo", b"st: t\r\nX-Slow: " + b"a" * 200, SLOW)
        trickler.open(body_head, b"0.5, " * 1000, SLOW)
        trickler.open(b"GET /v2/health/live HTTP/1.1\r\nHo", b"st: t\r\nX-Slow: " + b"a" * 200, SLOW)
        trickler.thread.start()
        time.sleep(1.0)  # every slow connection is open and has sent something more

        predict_times = [_timed(lambda: _predict(server.port)) for _ in range(30)]
        live_times = [_timed(lambda: _live(server.port)) for _ in range(30)]
        ok_predict = sum(t is not None and t < WITHIN_S for t in predict_times)
        ok_live = sum(t is not None and t < WITHIN_S for t in live_times)
        done = sorted(t for t in predict_times if t is not None)
        live_done = sorted(t for t in live_times if t is not None)
        print(f"with {3 * SLOW} slow connections open: predict {ok_predict}/30 within {WITHIN_S:g} s "
              f"(median {done[len(done) // 2] * 1e3:.1f} ms), liveness {ok_live}/30 (median "
              f"{live_done[len(live_done) // 2] * 1e3:.1f} ms)")
        assert ok_predict >= 27 and ok_live >= 27, (predict_times, live_times)

        # SIGTERM with 192 slow clients still connected: exit 0 within the grace period
        t0 = time.monotonic()
        os.killpg(server.proc.pid, signal.SIGTERM)
        code = server.proc.wait(GRACE_S + 10)
        took = time.monotonic() - t0
        print(f"SIGTERM with slow clients connected: exit {code} after {took:.1f} s (grace {GRACE_S} s)")
        assert code == 0, server.text()
        assert took < GRACE_S + 3, took
    finally:
        trickler.close()
        server.stop()
