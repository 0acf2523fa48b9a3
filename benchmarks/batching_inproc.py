"""In-process CPU per request at c=1, batching off vs on: the front's whole ``__rsgi__`` path
(a fake granian protocol, one process, one request at a time), alternated rounds, timed by
``time.thread_time``. ``--stub`` replaces the session run by its cached outputs, so that only
the Python work around it is timed (the run's own variance hides tens of microseconds).

    PYTHONPATH=src python benchmarks/batching_inproc.py MODEL.onnx [rounds] [requests] [--stub]
        [--profile on|off]   # cProfile stats of one front to /tmp/batching_inproc_{on,off}.pstats

digits-mlp (``onnxdeploy export digits-mlp``) is the model of docs/serve.md's c=1 figures.
"""
import asyncio
import json
import os
import sys
import tempfile
import time

os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="batching-inproc-")

import numpy as np  # noqa: E402

from onnxdeploy.serve.front import Front  # noqa: E402

model = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
profile = sys.argv[sys.argv.index("--profile") + 1] if "--profile" in sys.argv else None

if "minilm" in model:
    body = json.dumps({"inputs": ["The quick brown fox jumps over the lazy dog near the river bank."]}).encode()
else:
    body = json.dumps({"inputs": [np.linspace(0, 16, 64).round(1).tolist()]}).encode()


def config(batch):
    return {"MODEL_PATH": model, "MODEL_NAME": "m", "ORT_THREADS": 1, "RUNTIME": None,
            "MAX_INFLIGHT": 64, "MAX_BATCH": 1024, "MAX_BODY_BYTES": None,
            "MAX_BUFFER_BYTES": None, "MAX_BATCH_SIZE": 32 if batch else 0,
            "BATCH_TIMEOUT_MS": 2.0, "BATCH_HOLD": "adaptive", "API_KEY": None,
            "HTTP_THREADS": 32 if batch else 1, "HEARTBEAT_TIMEOUT_S": 10}


class Scope:
    proto = "http"
    method = "POST"
    path = "/predict"
    headers = {"content-type": "application/json", "content-length": str(len(body))}


class Proto:
    def __init__(self):
        self.status = None
        self.done = False

    def __aiter__(self):
        self.done = False
        return self

    async def __anext__(self):
        if self.done:
            raise StopAsyncIteration
        self.done = True
        return body

    def response_bytes(self, status, headers, b):
        self.status = status


loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
fronts = {}
for name, batch in (("off", False), ("on", True)):
    f = Front(config(batch))
    f.__rsgi_init__(loop)
    fronts[name] = f
scope = Scope()
if "--stub" in sys.argv:  # the session run replaced by its cached outputs: bookkeeping only
    for f in fronts.values():
        h = f.service.holder
        feeds = {h.info.signature.inputs[0].name: np.zeros((1, 64), np.float32)}
        cached = h.run(feeds)
        h.run = lambda feeds, _c=cached: [a.copy() for a in _c]  # noqa: ARG005


async def many(front, k):
    proto = Proto()
    for _ in range(k):
        await front.__rsgi__(scope, proto)
        assert proto.status == 200, proto.status


for name, f in fronts.items():  # warm up, and let the inline decision settle
    loop.run_until_complete(many(f, 300))
    print(name, "inline", f.inline, "in_loop", getattr(f, "in_loop", None), file=sys.stderr)

if profile:
    import cProfile
    pr = cProfile.Profile()
    pr.enable()
    loop.run_until_complete(many(fronts[profile], n))
    pr.disable()
    pr.dump_stats(f"/tmp/batching_inproc_{profile}.pstats")
    sys.exit()

res = {"off": [], "on": []}
for r in range(rounds):
    for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
        t0, p0 = time.thread_time(), time.process_time()
        loop.run_until_complete(many(fronts[name], n))
        res[name].append(((time.thread_time() - t0) / n * 1e6, (time.process_time() - p0) / n * 1e6))
for name in res:
    th = sorted(x[0] for x in res[name])
    pr = sorted(x[1] for x in res[name])
    print(f"{name}: thread {np.median(th):.1f} us ({th[0]:.1f}-{th[-1]:.1f}), process {np.median(pr):.1f} us ({pr[0]:.1f}-{pr[-1]:.1f})")
print("min on - off:", round(min(x[0] for x in res["on"]) - min(x[0] for x in res["off"]), 1))
diff = [a[0] - b[0] for a, b in zip(res["on"], res["off"])]
print("on - off thread us per round:", [round(d, 1) for d in diff], "median", round(float(np.median(diff)), 1))
