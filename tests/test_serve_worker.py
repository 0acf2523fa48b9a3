"""The gunicorn worker's dispatch lanes over real socket pairs, the app's shed threads, and the
board that spreads connections over workers (shared across a real fork)."""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from builders import mlp_classifier, save

from onnxdeploy.serve import worker as worker_module
from onnxdeploy.serve.admission import mark_shedding, shedding
from onnxdeploy.serve.app import create_app
from onnxdeploy.serve.worker import ConnectionBoard, LanePool, OverloadWorker, is_quick, peek


@pytest.fixture
def conns():
    pairs = []

    def _conn(request: bytes | None = None):
        client, server = socket.socketpair()
        pairs.append((client, server))
        if request is not None:
            client.sendall(request)
        return SimpleNamespace(sock=server, client=client)

    yield _conn
    for a, b in pairs:
        a.close()
        b.close()


def test_probes_are_told_from_inference_without_consuming_bytes(conns):
    live = conns(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert is_quick(live)
    assert live.sock.recv(64).startswith(b"GET /v2/health/live")  # still there for gunicorn
    assert is_quick(conns(b"HEAD /metrics HTTP/1.1\r\n\r\n"))
    assert not is_quick(conns(b"POST /v2/health/live HTTP/1.1\r\n\r\n"))
    assert not is_quick(conns(b"POST /predict HTTP/1.1\r\n\r\n"))
    assert not is_quick(conns(b"GET /v2/models/m HTTP/1.1\r\n\r\n"))
    silent = conns()
    assert peek(silent) is None and not is_quick(silent)
    closed = conns()
    closed.client.close()
    assert peek(closed) == b"" and is_quick(closed)  # only to be closed: never an in-flight slot
    assert peek(SimpleNamespace(sock=None)) is None


def test_lanes_bound_inflight_and_keep_probes_apart(conns):
    pool = LanePool(1, max_inflight=2)
    release = threading.Event()

    def hold(conn):
        release.wait(10)
        return threading.current_thread().name, shedding()

    def quick(conn):
        return threading.current_thread().name, shedding()

    try:
        work = [pool.submit(hold, conns(b"POST /predict HTTP/1.1\r\n\r\n")) for _ in range(2)]
        assert pool.inflight == 2  # one running, one queued: both count
        refused = pool.submit(quick, conns(b"POST /predict HTTP/1.1\r\n\r\n")).result(5)
        probe = pool.submit(quick, conns(b"GET /v2/health/ready HTTP/1.1\r\n\r\n")).result(5)
        assert refused[0].startswith("serve-shed") and refused[1] is True
        assert probe[0].startswith("serve-probe") and probe[1] is False
        gone = conns()
        gone.client.close()  # a client done with its keep-alive connection
        assert pool.submit(quick, gone).result(5)[0].startswith("serve-probe")
        assert pool.inflight == 2
        release.set()
        assert all(f.result(5)[0].startswith("serve-work") and not f.result(5)[1] for f in work)
        assert pool.inflight == 0
        again = pool.submit(quick, conns(b"POST /predict HTTP/1.1\r\n\r\n")).result(5)
        assert again[0].startswith("serve-work")  # room again once the work lane drained
    finally:
        release.set()
        pool.shutdown(wait=True)


def test_shed_threads_refuse_inference_only(tmp_path):
    app = create_app({"MODEL_PATH": str(save(mlp_classifier(), tmp_path / "mlp.onnx")),
                      "ORT_THREADS": 1, "LOAD_ON_START": True})
    client = app.test_client()

    def calls():
        predict = client.post("/predict", json={"inputs": [[0.0] * 64]})
        v2 = client.post("/v2/models/mlp/infer", json={"inputs": []})
        return predict, v2, client.get("/v2/models/mlp"), client.get("/v2/health/ready")

    with ThreadPoolExecutor(1, initializer=mark_shedding) as shed:
        predict, v2, meta, ready = shed.submit(calls).result(30)
    for r in (predict, v2):
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "busy" in r.get_json()["error"]
    assert meta.status_code == 200 and ready.status_code == 200
    assert client.post("/predict", json={"inputs": [[0.0] * 64]}).status_code == 200


def test_board_slots_are_handed_out_by_the_arbiter_and_shared_across_fork():
    board = ConnectionBoard(3)
    warnings = []
    server = SimpleNamespace(WORKERS={}, log=SimpleNamespace(warning=lambda *a: warnings.append(a)))
    workers = []
    for pid in (101, 102, 103, 104):
        worker = SimpleNamespace(age=pid)
        board.attach(server, worker)  # pre_fork: the new worker is not in WORKERS yet
        server.WORKERS[pid] = worker
        workers.append(worker)
    assert [w.board_slot for w in workers[:3]] == [0, 1, 2]
    assert not hasattr(workers[3], "board") and len(warnings) == 1  # none left: unbalanced
    assert board.least_peer(0) is None  # nobody accepting yet (booting workers)

    board.publish(0, 5)
    child = os.fork()
    if child == 0:  # a worker writes its own slot; the arbiter and the peers must see it
        board.publish(1, 2)
        os._exit(0)
    assert os.waitpid(child, 0)[1] == 0
    assert board.least_peer(0) == 2 and board.least_peer(1) == 5

    board.detach(workers[1])  # reaped: its slot is free and no longer counted
    del server.WORKERS[102]
    assert board.least_peer(0) is None
    board.detach(workers[3])  # a worker that never got a slot: nothing to free
    replacement = SimpleNamespace(age=105)
    board.attach(server, replacement)
    assert replacement.board_slot == 1


def _wait_for(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)
    return time.monotonic()


def test_busier_worker_defers_to_its_peer_but_never_for_good(monkeypatch):
    # The real gthread run loop in a thread, with a real listener; the peer is a board slot.
    from gunicorn.config import Config

    cfg = Config()
    for key, value in {"threads": 1, "keepalive": 1, "graceful_timeout": 1}.items():
        cfg.set(key, value)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    worker = OverloadWorker(1, os.getppid(), [listener], None, 30, cfg, logging.getLogger("test"))
    board = ConnectionBoard(2)
    server = SimpleNamespace(WORKERS={}, log=logging.getLogger("test"))
    board.attach(server, worker)
    server.WORKERS[1] = worker
    board.attach(server, SimpleNamespace(age=2))
    board.publish(1, 0)  # an idle peer that never accepts: stuck
    worker.tpool, worker.poller = LanePool(1), selectors.DefaultSelector()
    worker.method_queue.init()
    polls = []
    real_notify = worker.notify
    worker.notify = lambda: (polls.append(1), real_notify())
    loop = threading.Thread(target=worker.run, daemon=True)
    loop.start()
    ours = lambda: board.least_peer(1)  # noqa: E731 - our own count, as the peer sees it
    clients = []
    try:
        _wait_for(lambda: ours() == 0)  # listed once the loop runs
        clients.append(socket.create_connection(("127.0.0.1", port)))
        _wait_for(lambda: ours() == 1)  # as loaded as the peer: taken at once

        monkeypatch.setattr(worker_module, "DEFER_S", 0.05)
        t0 = time.monotonic()
        clients.append(socket.create_connection(("127.0.0.1", port)))
        assert _wait_for(lambda: ours() == 2) - t0 >= 0.05  # left to the peer, then taken anyway

        monkeypatch.setattr(worker_module, "DEFER_S", 5.0)
        clients.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.1)
        polls.clear()
        time.sleep(0.1)
        assert ours() == 2  # still left to the less loaded peer
        assert len(polls) < 0.1 / worker_module.RECHECK_S * 3, len(polls)  # waiting, not spinning
        board.publish(1, 5)  # the peer took others meanwhile: we are no longer the busier one
        t0 = time.monotonic()
        assert _wait_for(lambda: ours() == 3) - t0 < 1.0  # the pause ends early, not after 5 s
    finally:
        for c in clients:
            c.close()
        worker.alive = False
        worker.method_queue.defer(lambda: None)
        loop.join(10)
    assert not loop.is_alive()
