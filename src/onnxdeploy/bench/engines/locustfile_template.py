"""The locustfile ``onnxdeploy bench`` writes; placeholders are filled by ``locust_engine``."""

TEMPLATE = r'''"""Locustfile written by `onnxdeploy bench` (__SOURCE__).

Sends the same pre-encoded /predict bodies as the bench, in turn, one sample a request:

    locust -f THIS_FILE -H http://HOST:PORT            (web UI)
    locust -f THIS_FILE -H http://HOST:PORT --headless -u 8 -r 8 -t 30s
    locust -f THIS_FILE --master / --worker --master-host=...   (spread over machines)

Per-request latencies are measured here with perf_counter_ns (Locust's own statistics round to
whole milliseconds below 100 ms). Set ONNXDEPLOY_OUT=path.json to write them at exit, and
ONNXDEPLOY_REQUESTS=N to stop after N requests.
"""

import json
import os
import time

import gevent
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser

PATH = __PATH__
BODIES = [body.encode() for body in json.loads(__BODIES__)]
LIMIT = int(os.environ.get("ONNXDEPLOY_REQUESTS", "0") or 0)
HEADERS = {"Content-Type": "application/json"}

_state = {"issued": 0, "first_ns": 0, "last_ns": 0, "stopping": False}
_latencies_us = []
_errors = {}


class ModelUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        if LIMIT and _state["issued"] >= LIMIT:
            if not _state["stopping"]:
                _state["stopping"] = True
                gevent.spawn_later(0.05, self.environment.runner.quit)
            raise StopUser()
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
                resp.failure(kind)


@events.quitting.add_listener
def _write_results(environment, **kwargs):
    out = os.environ.get("ONNXDEPLOY_OUT")
    if not out:
        return
    elapsed = (_state["last_ns"] - _state["first_ns"]) / 1e9 if _state["first_ns"] else 0.0
    tmp = out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"latencies_us": _latencies_us, "errors": _errors, "elapsed_s": elapsed}, fh)
    os.replace(tmp, out)
'''
