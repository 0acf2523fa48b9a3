"""One request path, two ways in: Flask's test client (blueprints calling ``Service.handle``)
and the granian front's direct call (``Router.match`` then ``Service.answer``, no Flask). The same
request must get the same answer and be counted the same way on both."""

from __future__ import annotations

from urllib.parse import unquote

import numpy as np
import orjson
import pytest
from builders import mlp_classifier, save, two_input_int_model
from prometheus_client.parser import text_string_to_metric_families

from onnxdeploy.serve.app import create_app
from onnxdeploy.serve.routes import ROUTES, Request

KEY = "s3cret"
JSON = "application/json"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_views")
    return {"mlp": save(mlp_classifier(), root / "mlp.onnx"),
            "two": save(two_input_int_model(), root / "two.onnx")}


def _app(path, **config):
    return create_app({"MODEL_PATH": str(path), "ORT_THREADS": 1, "MAX_BATCH": 8, **config})


def _direct(app, path: str, body: bytes, headers: dict[str, str], method: str = "POST"):
    """What the front does with a request: granian percent-decodes the path (invalid UTF-8 as
    U+FFFD), the router finds the route, inference takes an admission slot, the service answers."""
    service = app.extensions["onnxdeploy"]
    path = unquote(path, errors="replace")
    match = service.router.match(method, path)
    lower = {k.lower(): v for k, v in headers.items()}
    assert service.admission.enter()
    try:
        reply = service.answer(match, Request(method, path, lower.get, body))
    finally:
        service.admission.leave()
    return reply.status, dict(reply.headers), reply.body


def _flask(app, path: str, body: bytes, headers: dict[str, str], method: str = "POST"):
    r = app.test_client().open(path, method=method, data=body, headers=headers)
    out = {k: v for k, v in r.headers.items() if k != "Content-Length"}
    return r.status_code, out, r.get_data()


def _counts(app) -> dict[tuple[str, str], float]:
    text, _ = app.extensions["onnxdeploy"].metrics.render()
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == "onnxdeploy_requests_total":
                out[(s.labels["endpoint"], s.labels["status"])] = s.value
            if s.name == "onnxdeploy_request_duration_seconds_count":
                out[("seconds", s.labels["endpoint"])] = s.value
    return out


X = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": JSON}


def _binary_body() -> tuple[bytes, dict[str, str]]:
    raw = X.tobytes()
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(raw)}}],
                           "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]})
    return header + raw, {**AUTH, "Inference-Header-Content-Length": str(len(header))}


CASES = {
    "predict": ("/predict", orjson.dumps({"inputs": X.tolist()}), AUTH),
    "predict, charset in the type": ("/predict", orjson.dumps({"inputs": X.tolist()}),
                                     {**AUTH, "Content-Type": "Application/JSON; charset=utf-8"}),
    "no key": ("/predict", b'{"inputs": [[0]]}', {"Content-Type": JSON}),
    "wrong key": ("/predict", b'{"inputs": [[0]]}', {**AUTH, "Authorization": "Bearer nope"}),
    "form type": ("/predict", b"x=1", {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}),
    "malformed JSON": ("/predict", b'{"inputs": [', AUTH),
    "empty body": ("/predict", b"", AUTH),
    "wrong shape": ("/predict", b'{"inputs": [[1, 2, 3]]}', AUTH),
    "non-finite": ("/predict", orjson.dumps({"inputs": [[1e39] * 64]}), AUTH),
    "too many rows": ("/predict", orjson.dumps({"inputs": [[0.0] * 64] * 9}), AUTH),
    "v2 JSON": ("/v2/models/mlp/infer", orjson.dumps(
        {"id": "r1", "inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32",
                                 "data": X.reshape(-1).tolist()}]}), AUTH),
    "v2 version 1": ("/v2/models/mlp/versions/1/infer", orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}), AUTH),
    "v2 version 7": ("/v2/models/mlp/versions/7/infer", b"{}", AUTH),
    "v2 other model": ("/v2/models/other/infer", b"{}", AUTH),
    "v2 wrong datatype": ("/v2/models/mlp/infer", orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "INT64", "data": [0] * 64}]}), AUTH),
    "v2 binary": ("/v2/models/mlp/infer", *_binary_body()),
    "v2 bad binary header": ("/v2/models/mlp/infer", b"{}",
                             {**AUTH, "Inference-Header-Content-Length": "x"}),
    "v2 shape holding true": ("/v2/models/mlp/infer", orjson.dumps(
        {"inputs": [{"name": "x", "shape": [True, 64], "datatype": "FP32", "data": [0] * 64}]}), AUTH),
    "v2 impossible shape": ("/v2/models/mlp/infer", orjson.dumps(
        {"inputs": [{"name": "x", "shape": [0, 2**63 - 1], "datatype": "FP32", "data": []}]}), AUTH),
    "v2 name with a slash": ("/v2/models/a%2Fb/infer", b"{}", AUTH),
    "v2 name not UTF-8": ("/v2/models/mlp%ff/infer", b"{}", AUTH),
    "predict, GET": ("/predict", b"", AUTH, "GET"),
    "predict, OPTIONS": ("/predict", b"", AUTH, "OPTIONS"),
    "v2 server": ("/v2", b"", AUTH, "GET"),
    "v2 server, trailing slash": ("/v2/", b"", AUTH, "GET"),
    "live, no key": ("/v2/health/live", b"", {}, "GET"),
    "live, HEAD": ("/v2/health/live", b"", {}, "HEAD"),
    "ready, no key": ("/v2/health/ready", b"", {}, "GET"),
    "ready": ("/v2/health/ready", b"", AUTH, "GET"),
    "model metadata": ("/v2/models/mlp", b"", AUTH, "GET"),
    "model metadata, version": ("/v2/models/mlp/versions/1", b"", AUTH, "GET"),
    "model metadata, POST": ("/v2/models/mlp", b"{}", AUTH),
    "model ready, version 0.1.0": ("/v2/models/mlp/versions/0.1.0/ready", b"", AUTH, "GET"),
    "model, non-ASCII name": ("/v2/models/%E6%95%B0%E5%AD%97/ready", b"", AUTH, "GET"),
    "model, fuzzer name": ("/v2/models/%C2%85%F1%85%A7%A8%29", b"", AUTH, "GET"),
    "openapi": ("/openapi.json", b"", AUTH, "GET"),
    "openapi, no key": ("/openapi.json", b"", {}, "GET"),
    "docs page": ("/docs", b"", {}, "GET"),
    "docs asset": ("/docs/static/swagger-ui.css", b"", {}, "GET"),
    "docs asset, missing": ("/docs/static/nothing.js", b"", {}, "GET"),
    "docs asset, dot-dot": ("/docs/static/../docs.py", b"", {}, "GET"),
    "docs asset, not UTF-8": ("/docs/static/%c0%ae%c0%ae/x", b"", {}, "GET"),
    "no such path, no key": ("/x%ff", b"", {}, "GET"),
    "no such path": ("/nowhere", b"", AUTH, "GET"),
    "no such path, DELETE": ("/nowhere", b"", AUTH, "DELETE"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_direct_answers_as_flask_does(paths, case):
    path, body, headers, *method = CASES[case]
    a, b = _app(paths["mlp"], API_KEY=KEY), _app(paths["mlp"], API_KEY=KEY)
    via_flask = _flask(a, path, body, headers, *method)
    direct = _direct(b, path, body, headers, *method)
    assert direct[0] == via_flask[0], (direct, via_flask)
    assert direct[0] < 500 or direct[0] == 503, direct  # 503: the session is not loaded yet
    assert direct[1] == via_flask[1]
    if via_flask[1].get("Content-Type") == JSON and via_flask[0] == 200 and via_flask[2]:
        # same numbers; the JSON text is the same bytes as well
        assert orjson.loads(direct[2]) == orjson.loads(via_flask[2])
    assert direct[2] == via_flask[2]
    # counted under the same endpoint and status, and timed once
    assert _counts(a) == _counts(b)


def test_the_router_finds_routes_as_flask_rules_do(paths):
    router = _app(paths["mlp"]).extensions["onnxdeploy"].router
    match = router.match("POST", "/v2/models/mlp/versions/1/infer")
    assert (match.route.endpoint, match.args) == ("v2_infer", {"name": "mlp", "version": "1"})
    assert router.match("POST", "/predict").route.endpoint == "predict"
    assert router.match("HEAD", "/metrics").route.endpoint == "metrics"
    # a name with a slash in it (granian decodes %2F) is no route; nor is an empty segment
    assert router.match("POST", "/v2/models/a/b/infer").route.view == "not_found"
    assert router.match("POST", "/v2/models//infer").route.view == "not_found"
    assert router.match("POST", "//predict").route.view == "not_found"  # as Flask: no merging
    refused = router.match("GET", "/v2/models/mlp/infer")
    assert refused.route.view == "not_allowed" and refused.args == {"allowed": ("POST", "OPTIONS")}
    assert router.match("OPTIONS", "/v2").args == {"allowed": ("GET", "HEAD", "OPTIONS")}
    # every route has a view
    from onnxdeploy.serve.views import Views

    assert all(callable(getattr(Views, route.view)) for route in ROUTES)


def test_two_input_int_model_direct_matches_flask(paths):
    body = orjson.dumps({"inputs": {"x": np.ones((2, 4)).tolist(), "idx": [1, 7]}})
    a, b = _app(paths["two"]), _app(paths["two"])
    headers = {"Content-Type": JSON}
    via_flask, direct = _flask(a, "/predict", body, headers), _direct(b, "/predict", body, headers)
    assert direct == via_flask and direct[0] == 200
    bad = orjson.dumps({"inputs": {"x": np.ones((2, 4)).tolist(), "idx": [1.5, 7]}})
    assert _direct(b, "/predict", bad, headers) == _flask(a, "/predict", bad, headers)
    assert _direct(b, "/predict", bad, headers)[0] == 400


def test_a_bug_in_a_view_is_a_bare_500_on_both_paths(paths, monkeypatch, caplog):
    a, b = _app(paths["mlp"]), _app(paths["mlp"])
    for app in (a, b):
        def boom(feeds, rows, **kw):
            raise RuntimeError("internal detail /src/x.cc")
        monkeypatch.setattr(app.extensions["onnxdeploy"].executor, "infer", boom)
    body, headers = orjson.dumps({"inputs": X.tolist()}), {"Content-Type": JSON}
    direct, via_flask = _direct(b, "/predict", body, headers), _flask(a, "/predict", body, headers)
    assert direct == via_flask
    assert direct[0] == 500 and b"x.cc" not in direct[2]
    assert "internal detail" in caplog.text  # the traceback went to the log
