"""The inference views are reached two ways (Flask's routes, and the granian front directly):
the same request must get the same answer and be counted the same way on both."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from builders import mlp_classifier, save, two_input_int_model
from prometheus_client.parser import text_string_to_metric_families

from onnxdeploy.serve.app import create_app

KEY = "s3cret"
JSON = "application/json"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_views")
    return {"mlp": save(mlp_classifier(), root / "mlp.onnx"),
            "two": save(two_input_int_model(), root / "two.onnx")}


def _app(path, **config):
    return create_app({"MODEL_PATH": str(path), "ORT_THREADS": 1, "MAX_BATCH": 8, **config})


def _direct(app, path: str, body: bytes, headers: dict[str, str]):
    """What the front does for an admitted inference request."""
    endpoint = "predict" if path == "/predict" else "v2_infer"
    views = app.extensions["onnxdeploy.views"]
    args = views.route(endpoint, path)
    if args is None:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    reply = views.direct(endpoint, args, path, lower.get, body)
    return reply.status, dict(reply.headers), reply.body


def _flask(app, path: str, body: bytes, headers: dict[str, str]):
    r = app.test_client().post(path, data=body, headers=headers)
    out = {k: v for k, v in r.headers.items() if k != "Content-Length"}
    return r.status_code, out, r.get_data()


def _counts(app) -> dict[tuple[str, str], float]:
    text, _ = app.extensions["onnxdeploy.metrics"].render()
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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_direct_answers_as_flask_does(paths, case):
    path, body, headers = CASES[case]
    a, b = _app(paths["mlp"], API_KEY=KEY), _app(paths["mlp"], API_KEY=KEY)
    via_flask = _flask(a, path, body, headers)
    direct = _direct(b, path, body, headers)
    assert direct is not None
    assert direct[0] == via_flask[0], (direct, via_flask)
    assert direct[1] == via_flask[1]
    if via_flask[1].get("Content-Type") == JSON and via_flask[0] == 200:
        # same numbers; the JSON text is the same bytes as well
        assert orjson.loads(direct[2]) == orjson.loads(via_flask[2])
    assert direct[2] == via_flask[2]
    # counted under the same endpoint and status, and timed once
    assert _counts(a) == _counts(b)


def test_paths_only_flask_routes_are_left_to_flask(paths):
    views = _app(paths["mlp"]).extensions["onnxdeploy.views"]
    assert views.route("predict", "/predict") == ()
    assert views.route("v2_infer", "/v2/models/mlp/infer") == ("mlp", None)
    assert views.route("v2_infer", "/v2/models/mlp/versions/1/infer") == ("mlp", "1")
    # a name with a slash in it (granian decodes %2F) is not a route: Flask answers its 404
    assert views.route("v2_infer", "/v2/models/a/b/infer") is None
    assert views.route("v2_infer", "/v2/models//infer") is None


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
        monkeypatch.setattr(app.extensions["onnxdeploy.executor"], "infer", boom)
    body, headers = orjson.dumps({"inputs": X.tolist()}), {"Content-Type": JSON}
    direct, via_flask = _direct(b, "/predict", body, headers), _flask(a, "/predict", body, headers)
    assert direct == via_flask
    assert direct[0] == 500 and b"x.cc" not in direct[2]
    assert "internal detail" in caplog.text  # the traceback went to the log


def test_the_front_takes_the_headers_the_views_read():
    from onnxdeploy.serve import front, views

    assert front.HEADERS == views.HEADERS
