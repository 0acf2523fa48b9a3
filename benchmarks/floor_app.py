"""A do-nothing RSGI app for ``benchmarks/serve.py --floor``: the transport's own cost.

It reads the body and answers every request 200 with a fixed JSON object the size of
``/predict``'s answer for digits-cnn, under granian with the worker settings ``onnxdeploy
serve`` uses. What it measures (requests/s, p99, CPU per request) is the floor under any
Python app on this machine: no model, no validation, no metrics.
"""

from __future__ import annotations

ANSWER = (b'{"model":"digits-cnn","outputs":{"logits":[[1.10491,-1.1162498,6.8713393,1.2181951,'
          b'-4.6104317,-3.2754855,-4.7424874,-1.3035288,-3.7805254,-2.4406388]]},'
          b'"predictions":[2],"labels":["2"]}')
HEADERS = [("content-type", "application/json")]


class Floor:
    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":
            return
        await proto()
        proto.response_bytes(200, HEADERS, ANSWER)


app = Floor()
