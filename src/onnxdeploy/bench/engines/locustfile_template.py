"""The locustfile ``onnxdeploy bench`` writes; placeholders are filled by ``engines.locust``."""

TEMPLATE = r'''"""Locustfile written by `onnxdeploy bench` (__SOURCE__).

Sends the same pre-encoded /predict bodies as the bench, in turn, one sample a request:

    locust -f THIS_FILE -H http://HOST:PORT            (web UI)
    locust -f THIS_FILE -H http://HOST:PORT --headless -u 8 -r 8 -t 30s
    locust -f THIS_FILE --master / --worker --master-host=...   (spread over machines)

Per-request latencies are measured here with perf_counter_ns (Locust's own statistics round to
whole milliseconds below 100 ms). Under `onnxdeploy bench --engine locust` the bench's master
asks every worker for its latencies when the run stops and merges them; run by hand, this file
is a plain locustfile. Environment (read by the master or a standalone run only):
ONNXDEPLOY_OUT=path.json writes the merged latencies; ONNXDEPLOY_REQUESTS=N stops after N
requests in total; ONNXDEPLOY_DURATION=S stops after S seconds; ONNXDEPLOY_WORKERS=N waits for
the results of N workers.
"""

import json
import os
import time

import gevent
from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

PATH = __PATH__
BODIES = [body.encode() for body in json.loads(__BODIES__)]
LIMIT = int(os.environ.get("ONNXDEPLOY_REQUESTS", "0") or 0)
DURATION = float(os.environ.get("ONNXDEPLOY_DURATION", "0") or 0)
OUT = os.environ.get("ONNXDEPLOY_OUT")
WORKERS = int(os.environ.get("ONNXDEPLOY_WORKERS", "0") or 0)
HEADERS = {"Content-Type": "application/json"}

_state = {"issued": 0, "first_ns": 0, "last_ns": 0, "collect": False, "stopping": False}
_latencies_us = []
_errors = {}
_first_error = []
# on the master: what the workers sent
_merged = {"latencies_us": [], "errors": {}, "elapsed_s": 0.0, "first_error": None, "workers": 0}
_issued_by = {}


class ModelUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        i = _state["issued"]
        _state["issued"] += 1
        t0 = time.perf_counter_ns()
        if not _state["first_ns"]:
            _state["first_ns"] = t0
        if BODIES:
            call = self.client.post(PATH, data=BODIES[i % len(BODIES)], headers=HEADERS,
                                    catch_response=True)
        else:  # no bodies: a GET, used to measure the generator's own ceiling
            call = self.client.get(PATH, catch_response=True)
        with call as resp:
            t1 = time.perf_counter_ns()
            _state["last_ns"] = t1
            status = resp.status_code or 0
            if 0 < status < 400:
                _latencies_us.append((t1 - t0) // 1000)
                resp.success()
            else:
                kind = f"http_{status}" if status else "connection"
                _errors[kind] = _errors.get(kind, 0) + 1
                if not _first_error:
                    text = (resp.text or "")[:300] if status else str(resp.error)[:300]
                    _first_error.append(f"HTTP {status}: {text}" if status else text)
                resp.failure(kind)


def _mine():
    elapsed = (_state["last_ns"] - _state["first_ns"]) / 1e9 if _state["first_ns"] else 0.0
    return {"latencies_us": _latencies_us, "errors": _errors, "elapsed_s": elapsed,
            "first_error": _first_error[0] if _first_error else None}


def _write(result):
    if not OUT:
        return
    tmp = OUT + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, OUT)


# ---------------------------------------------------------------- worker side
def _on_collect(environment, msg, **kwargs):
    _state["collect"] = True
    gevent.spawn(_report_progress, environment)


def _report_progress(environment):
    while _state["collect"] and not _state["stopping"]:
        environment.runner.send_message("onnxdeploy_progress", {"issued": _state["issued"]})
        gevent.sleep(0.25)


# ---------------------------------------------------------------- master side
def _on_result(environment, msg, **kwargs):
    data = msg.data
    _merged["latencies_us"].extend(data["latencies_us"])
    for kind, n in data["errors"].items():
        _merged["errors"][kind] = _merged["errors"].get(kind, 0) + n
    _merged["elapsed_s"] = max(_merged["elapsed_s"], data["elapsed_s"])
    _merged["first_error"] = _merged["first_error"] or data["first_error"]
    _merged["workers"] += 1


def _on_progress(environment, msg, **kwargs):
    _issued_by[msg.node_id] = msg.data["issued"]


def _control(environment, issued):
    """Stop after LIMIT requests or DURATION seconds; on a master, gather every worker's results."""
    runner = environment.runner
    started = time.monotonic()
    while True:
        gevent.sleep(0.05)
        if (LIMIT and issued() >= LIMIT) or (DURATION and time.monotonic() - started >= DURATION):
            break
    _state["stopping"] = True
    if isinstance(runner, MasterRunner):
        runner.stop()  # sends stop; each worker sends its results before it reports stopped
        deadline = time.monotonic() + 15
        while _merged["workers"] < max(1, WORKERS) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        _write(_merged)
    else:
        runner.stop()
        _write(_mine())
    runner.quit()


@events.init.add_listener
def _on_init(environment, **kwargs):
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message("onnxdeploy_result", _on_result)
        runner.register_message("onnxdeploy_progress", _on_progress)
    elif isinstance(runner, WorkerRunner):
        runner.register_message("onnxdeploy_collect", _on_collect)


@events.test_start.add_listener
def _on_test_start(environment, **kwargs):
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        if OUT:
            runner.send_message("onnxdeploy_collect", None)
            gevent.spawn(_control, environment, lambda: sum(_issued_by.values()))
    elif not isinstance(runner, WorkerRunner) and OUT:
        gevent.spawn(_control, environment, lambda: _state["issued"])


@events.test_stop.add_listener
def _on_test_stop(environment, **kwargs):
    runner = environment.runner
    if isinstance(runner, WorkerRunner) and _state["collect"]:
        _state["stopping"] = True
        runner.send_message("onnxdeploy_result", _mine())
'''
