"""The serving app through Flask's test client: answers, the bad-input matrix, auth, metrics."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from builders import mlp_classifier, save, two_input_int_model
from prometheus_client.parser import text_string_to_metric_families

from onnxdeploy.serve.app import create_app

MAX_BODY = 4096


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_app")
    return {"mlp": save(mlp_classifier(), root / "mlp.onnx"),
            "two": save(two_input_int_model(), root / "two.onnx")}


def _client(path, **config):
    app = create_app({"MODEL_PATH": str(path), "ORT_THREADS": 1, "MAX_BATCH": 8,
                      "MAX_BODY_BYTES": MAX_BODY, **config})
    return app.test_client()


@pytest.fixture(scope="module")
def clients(paths):
    return {name: _client(path) for name, path in paths.items()}


def _reference(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_predict_classifier_matches_onnxruntime(clients, paths):
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    r = clients["mlp"].post("/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    (want,) = _reference(paths["mlp"], {"x": x})
    assert body["model"] == "mlp"
    np.testing.assert_allclose(np.array(body["outputs"]["logits"]), want, rtol=1e-5, atol=1e-6)
    assert body["predictions"] == want.argmax(1).tolist()
    assert body["labels"] == [str(i) for i in want.argmax(1)]


def test_predict_two_inputs_has_no_predictions(clients, paths):
    x = np.ones((2, 4), np.float32)
    idx = np.array([1, 7], np.int64)
    r = clients["two"].post("/predict", json={"inputs": {"x": x.tolist(), "idx": idx.tolist()}})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    np.testing.assert_allclose(body["outputs"]["y"], _reference(paths["two"], {"x": x, "idx": idx})[0],
                               rtol=1e-5)
    assert "predictions" not in body and "labels" not in body


def test_v2_metadata_and_ready(clients):
    c = clients["two"]
    meta = c.get("/v2/models/two").get_json()
    assert meta["platform"] == "onnx_onnxv1"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                              {"name": "idx", "datatype": "INT64", "shape": [-1]}]
    assert c.get("/v2/models/two/versions/1").status_code == 200
    assert c.get("/v2").get_json()["extensions"] == ["binary_tensor_data"]
    assert c.get("/v2/health/live").status_code == 200
    spec = c.get("/openapi.json").get_json()
    assert "/v2/models/{name}/infer" in spec["paths"] and "/predict" in spec["paths"]


def test_ready_only_after_session_created(paths):
    c = _client(paths["mlp"])
    assert c.get("/v2/health/ready").status_code == 503
    assert c.get("/v2/models/mlp/ready").status_code == 503
    assert c.post("/predict", json={"inputs": [[0.0] * 64]}).status_code == 200
    assert c.get("/v2/health/ready").status_code == 200
    assert c.get("/v2/models/mlp/versions/1/ready").get_json() == {"name": "mlp", "ready": True}


X2 = [[0.0] * 4, [1.0] * 4]
BIN_HEADER = (b'{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32",'
              b'"parameters":{"binary_data_size":256}}]}')
V2_MLP = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
CASES = [
    # (model, method, path, request kwargs, status, message fragment)
    ("mlp", "post", "/predict", {"data": "{}", "content_type": "text/plain"}, 415, "expected application/json"),
    ("mlp", "post", "/predict", {"data": "{not json", "content_type": "application/json"}, 400, "malformed JSON"),
    ("mlp", "post", "/predict", {"data": "", "content_type": "application/json"}, 400, "empty request body"),
    ("mlp", "post", "/predict", {"json": {"rows": []}}, 400, "key 'inputs'"),
    ("mlp", "post", "/predict", {"json": {"inputs": "abc"}}, 400, "expected a list"),
    ("mlp", "post", "/predict", {"json": {"inputs": [[1.0, 2.0, 3.0]]}}, 400, "expected [batch, 64]"),
    ("mlp", "post", "/predict", {"json": {"inputs": [0.0] * 64}}, 400, "(rank 2)"),
    ("mlp", "post", "/predict", {"json": {"inputs": [[0.0] * 64, [0.0] * 3]}}, 400, "ragged"),
    ("mlp", "post", "/predict", {"json": {"inputs": [["a"] * 64]}}, 400, "got strings; expected numbers"),
    ("mlp", "post", "/predict", {"json": {"inputs": [[0.0] * 64] * 9}}, 400, "expected at most 8"),
    ("mlp", "post", "/predict", {"json": {"inputs": {"y": [[0.0] * 64]}}}, 400, "unknown input 'y'"),
    ("mlp", "get", "/predict", {}, 405, "expected POST"),
    ("mlp", "get", "/nowhere", {}, 404, "no such endpoint"),
    ("mlp", "post", "/predict", {"json": {"inputs": [[0.0] * 64] * 200}}, 413, f"at most {MAX_BODY} bytes"),
    ("two", "post", "/predict", {"json": {"inputs": X2}}, 400, "as an object keyed by input name"),
    ("two", "post", "/predict", {"json": {"inputs": {"x": X2}}}, 400, "missing input 'idx'"),
    ("two", "post", "/predict", {"json": {"inputs": {"x": X2, "idx": [1.5, 2]}}}, 400, "non-integer"),
    ("two", "post", "/predict", {"json": {"inputs": {"x": X2, "idx": [1, 2, 3]}}}, 400,
     "dimension 'batch' is 2 in input 'x' but 3"),
    ("two", "post", "/predict", {"json": {"inputs": {"x": X2, "idx": [1, 99]}}}, 400,
     "the model rejected the input"),
    ("two", "post", "/predict", {"json": {"inputs": {"x": X2, "idx": [True, False]}}}, 400,
     "got booleans; expected int64"),
    ("mlp", "post", "/v2/models/other/infer", {"json": V2_MLP}, 404, "unknown model 'other'"),
    ("mlp", "post", "/v2/models/mlp/versions/7/infer", {"json": V2_MLP}, 404, "expected '1'"),
    ("mlp", "get", "/v2/models/other", {}, 404, "this server serves 'mlp'"),
    ("mlp", "post", "/v2/models/mlp/infer", {"json": {"inputs": [{**V2_MLP["inputs"][0], "datatype": "FP64"}]}},
     400, "expected 'FP32'"),
    ("mlp", "post", "/v2/models/mlp/infer", {"json": {"inputs": [{**V2_MLP["inputs"][0], "shape": [2, 64]}]}},
     400, "has 64 values but shape [2, 64] needs 128"),
    ("mlp", "post", "/v2/models/mlp/infer", {"json": {"inputs": [{**V2_MLP["inputs"][0], "shape": [64]}]}},
     400, "(rank 2)"),
    ("mlp", "post", "/v2/models/mlp/infer", {"json": {"inputs": {"x": 1}}}, 400, "'inputs': a list"),
    ("mlp", "post", "/v2/models/mlp/infer", {"json": {**V2_MLP, "outputs": [{"name": "probs"}]}}, 400,
     "unknown output 'probs'; expected outputs: logits"),
    ("mlp", "post", "/v2/models/mlp/infer",
     {"data": BIN_HEADER + b"\0" * 100,
      "headers": {"Inference-Header-Content-Length": str(len(BIN_HEADER))}}, 400,
     "binary_data_size 256 but only 100 bytes"),
    ("mlp", "post", "/v2/models/mlp/infer",
     {"data": b"{}", "headers": {"Inference-Header-Content-Length": "500"}}, 400,
     "expected the length of the JSON header"),
    ("two", "post", "/v2/models/two/infer", {"json": {"inputs": [
        {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X2},
        {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X2}]}}, 400, "given twice"),
]


@pytest.mark.parametrize(("model", "method", "path", "kwargs", "status", "fragment"), CASES,
                         ids=[f"{c[0]}-{c[4]}-{c[5][:30]}" for c in CASES])
def test_bad_requests_get_json_errors(clients, model, method, path, kwargs, status, fragment):
    r = getattr(clients[model], method)(path, **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/json"
    body = json.loads(r.get_data())
    assert set(body) == {"error"}
    assert fragment in body["error"]
    assert "Traceback" not in body["error"]


def test_api_key_required_except_liveness(paths):
    c = _client(paths["mlp"], API_KEY="s3cret")
    assert c.get("/v2/health/live").status_code == 200
    for path in ("/v2/health/ready", "/metrics", "/v2/models/mlp", "/openapi.json"):
        r = c.get(path)
        assert r.status_code == 401 and "Bearer" in r.get_json()["error"], path
    assert c.post("/predict", json={"inputs": [[0.0] * 64]},
                  headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.post("/predict", json={"inputs": [[0.0] * 64]},
                  headers={"Authorization": "Basic s3cret"}).status_code == 401
    ok = c.post("/predict", json={"inputs": [[0.0] * 64]}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.get_json()["predictions"]


def test_no_api_key_means_open(clients):
    assert clients["mlp"].get("/metrics").status_code == 200


def test_metrics_count_requests_by_status(paths):
    c = _client(paths["mlp"])
    c.post("/predict", json={"inputs": [[0.0] * 64]})
    c.post("/predict", json={"inputs": [[0.0] * 3]})
    families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").get_data(as_text=True))}
    counts = {(s.labels["endpoint"], s.labels["status"]): s.value
              for s in families["onnxdeploy_requests"].samples if s.name.endswith("_total")}
    assert counts[("predict", "200")] == 1 and counts[("predict", "400")] == 1
    compute = {s.name: s.value for s in families["onnxdeploy_model_compute_seconds"].samples}
    assert compute["onnxdeploy_model_compute_seconds_count"] == 1
    assert "onnxdeploy_request_duration_seconds" in families
    assert "onnxdeploy_inflight_requests" in families
    assert "onnxdeploy_batch_size" not in families  # batching is off


def test_v2_binary_round_trip(clients, paths):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    idx = np.array([3, 0], np.int64)
    header = orjson.dumps({"inputs": [
        {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
        {"name": "idx", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": idx.nbytes}},
    ], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    r = clients["two"].post("/v2/models/two/infer", data=header + x.tobytes() + idx.tobytes(),
                            headers={"Inference-Header-Content-Length": str(len(header))},
                            content_type="application/octet-stream")
    assert r.status_code == 200, r.get_data()
    n = int(r.headers["Inference-Header-Content-Length"])
    meta = orjson.loads(r.data[:n])
    (out,) = meta["outputs"]
    assert out["datatype"] == "FP32" and out["shape"] == [2, 3]
    y = np.frombuffer(r.data[n:], np.float32).reshape(2, 3)
    np.testing.assert_allclose(y, _reference(paths["two"], {"x": x, "idx": idx})[0], rtol=1e-6)


def test_served_session_keeps_ort_spinning(mlp_path):
    # one session per process: spinning helps (measured: 503 share and health latency under a burst)
    from onnxdeploy.serve.model import SessionHolder, read_model_info

    session = SessionHolder(read_model_info(mlp_path), ort_threads=2).load()
    entry = session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert entry == "1"


def test_ort_messages_are_reduced_to_what_a_client_can_act_on():
    from onnxdeploy.serve.model import client_message

    dims = ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x for "
            "the following indices\n index: 1 Got: 5 Expected: 4\n Please fix either the inputs/outputs")
    assert client_message(dims) == "input 'x': axis 1 is 5; expected 4"
    rank = "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid rank for input: x Got: 3 Expected: 2"
    assert client_message(rank) == "input 'x' has rank 3; expected rank 2"
    enforce = ("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Add node. "
               "Name:'/Add' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/math/"
               "element_wise_ops.h:560 void onnxruntime::BroadcastIterator::Append(ptrdiff_t, "
               "ptrdiff_t) axis == 1 || axis == largest was false. Attempting to broadcast an axis "
               "by a dimension other than 1. 3 by 5")
    message = client_message(enforce)
    assert "3 by 5" in message and "Add node" in message
    for internal in ("onnxruntime::", ".h:", "Name:", "ONNXRuntimeError", "was false"):
        assert internal not in message


@pytest.mark.parametrize(("value", "fragment"), [
    (1e39, "out of range for float32"), (70000.0, "out of range for float16")])
def test_values_out_of_range_for_the_dtype_are_400(value, fragment):
    from onnxdeploy.modelfile import TensorSpec
    from onnxdeploy.serve.validation import ApiError, array_from_json

    dtype = np.float16 if "16" in fragment else np.float32
    with pytest.raises(ApiError) as exc:
        array_from_json(TensorSpec("x", np.dtype(dtype), ("batch", 2)), [[value, 0.0]])
    assert exc.value.status == 400 and fragment in exc.value.message


def test_body_cap_follows_the_signature_and_max_batch(paths):
    from onnxdeploy.serve.model import read_model_info
    from onnxdeploy.serve.validation import body_limit

    sig = read_model_info(paths["mlp"]).signature
    assert body_limit(sig, 1024) > body_limit(sig, 8) * 20  # 8 rows: the 64 KiB floor
    assert 1024 * 64 * 10 < body_limit(sig, 1024) < 4 * 2**20  # JSON of 1024 rows, not 32 MiB
    c = _client(paths["mlp"], MAX_BODY_BYTES=None, MAX_BATCH=2)
    r = c.post("/predict", data=b"[" * 100_000, content_type="application/json")
    assert r.status_code == 413 and "expected at most" in r.get_json()["error"]


def _totals(client) -> dict[tuple[str, str], float]:
    families = text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
    return {(s.labels["endpoint"], s.labels["status"]): s.value for f in families
            for s in f.samples if s.name == "onnxdeploy_requests_total"}


@pytest.mark.parametrize("name", ["数字", "dégits"])
def test_non_ascii_model_name_through_flask(paths, name):
    from urllib.parse import quote

    c = _client(paths["mlp"], MODEL_NAME=name)
    for suffix in ("", "/ready", "/versions/1", "/versions/1/ready"):
        r = c.get(f"/v2/models/{quote(name)}{suffix}")
        assert r.status_code in (200, 503) and r.get_json()["name"] == name, suffix
    r = c.post(f"/v2/models/{quote(name)}/infer", json=V2_MLP)
    assert r.status_code == 200 and r.get_json()["model_name"] == name


@pytest.mark.parametrize(("path", "endpoint"), [
    ("/x%ff", "unmatched"), ("/docs/static/%c0%ae%c0%ae/x", "static"),
    ("/v2/models/mlp%ff/ready", "v2_model_ready")])
def test_a_path_that_is_not_utf8_is_a_counted_400_through_flask(paths, path, endpoint):
    c = _client(paths["mlp"])
    r = c.get(path)
    assert r.status_code == 400 and "not valid UTF-8" in r.get_json()["error"]
    assert _totals(c)[(endpoint, "400")] == 1
