"""A tiny HTTP server whose latency the tests control, run as its own process.

    python slo_server.py PORT MODE [ARG]

MODE ``threshold R``: answers at once while the arrival rate since the run began is at most R
req/s, and after ``SLOW_S`` above it, so the rate where a latency bound is crossed is known in
advance (sharply so for evenly spaced arrivals). The rate is the count of arrivals over their whole
span, judged once ``MIN_ARRIVALS`` have come: on a machine whose cores another process keeps busy,
the client and this server both stall now and then and a stall's backlog arrives as a burst; over
a short window (it was the last 100 arrivals) such a burst read as a rate above R during a run
scheduled at 0.94 R and moved the measured crossing, while over the run it averages out. The
count is cleared by ``GET /metrics``, which bench does before every run, so one run's overload does
not leak into the next. ``fast``: always at once. ``slow S``: always after S seconds. ``stall S``: after ``STALL_BASE_S``, and in every other run the first request waits S seconds more. ``reject``: 400
to every /predict. It speaks enough of onnxdeploy serve's API for ``bench --url``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: arrivals needed before the threshold server judges the rate (~0.3 s at R = 300)
MIN_ARRIVALS = 100
SLOW_S = 0.3
#: the stall server's answer time outside its stalls
STALL_BASE_S = 0.020
META = {"name": "m", "platform": "onnx_onnxv1",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}


class State:
    mode = "fast"
    arg = 0.0
    count = 0
    first = 0.0
    runs = 0
    stall_pending = False
    lock = threading.Lock()


def delay() -> float:
    """Seconds this request waits, from the mode and the recent arrival rate."""
    now = time.perf_counter()
    with State.lock:
        if State.count == 0:
            State.first = now
        State.count += 1
        span = now - State.first
        rate = (State.count - 1) / span if State.count >= MIN_ARRIVALS and span > 0 else 0.0
    if State.mode == "threshold":
        return SLOW_S if rate > State.arg else 0.0
    if State.mode == "slow":
        return State.arg
    if State.mode == "stall":
        # STALL_BASE_S each, and in every other run (runs are counted by GET /metrics, which bench
        # sends before each) the first request of the run stalls ``arg`` seconds: a fixed schedule
        with State.lock:
            first = State.stall_pending
            State.stall_pending = False
        return STALL_BASE_S + (State.arg if first else 0.0)
    return 0.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status: int, obj) -> None:
        # one write for head and body: two small writes meet Nagle and delayed ACK (a 40 ms stall)
        body = json.dumps(obj).encode()
        head = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.wfile.write(head + body)

    def do_GET(self):
        if self.path in ("/v2/health/live", "/v2/health/ready"):
            self.answer(200, {"live": True})
        elif self.path == "/v2":
            self.answer(200, {"name": "slo-server", "models": ["m"]})
        elif self.path == "/metrics":
            with State.lock:
                State.count = 0
                State.runs += 1
                # bench scrapes before and after each run: the 3rd, 7th, ... scrape starts runs 1, 3, ...
                if State.runs % 4 == 3:
                    State.stall_pending = True
            self.answer(404, {"error": "no metrics here"})
        elif self.path.startswith("/v2/models/"):  # any name: tests give each target its own
            self.answer(200, {**META, "name": self.path.rsplit("/", 1)[1]})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if State.mode == "reject":
            self.answer(400, {"error": "input 'x': this server rejects every request (test)"})
            return
        wait = delay()
        if wait:
            time.sleep(wait)
        self.answer(200, {"model": "m", "outputs": {"y": json.loads(body)["inputs"]}})


def main() -> None:
    port, State.mode = int(sys.argv[1]), sys.argv[2]
    State.arg = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    ThreadingHTTPServer.request_queue_size = 512  # the default backlog of 5 refuses bursts
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
