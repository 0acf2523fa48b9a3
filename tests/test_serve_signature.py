"""Serving models whose signatures are written as converters write them: -1 and '?' dims, a
state input batched along axis 1, a 0-d input; validation and dynamic batching along each
tensor's own batch axis."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnxdeploy import modelfile
from onnxdeploy.serve.app import create_app
from onnxdeploy.serve.batching import Executor
from onnxdeploy.serve.metrics import Metrics
from onnxdeploy.serve.model import SessionHolder, read_model_info
from onnxdeploy.serve.validation import FALLBACK_BODY_BYTES, body_limit


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    """image [-1, 3, '?', '?'] -> pooled [-1, 3] (mean over the two unnamed spatial dims)."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0)],
        "image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [-1, 3, "?", "?"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [-1, 3])],
    )
    return _save(graph, tmp_path_factory.mktemp("sig") / "image.onnx")


@pytest.fixture(scope="module")
def state_model(tmp_path_factory):
    """x [batch, 4], state [2, batch, 4], scale [] -> y [batch, 4], new_state [2, batch, 4]."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["state", "axes"], ["summed"], keepdims=0),
            helper.make_node("Add", ["x", "summed"], ["added"]),
            helper.make_node("Mul", ["added", "scale"], ["y"]),
            helper.make_node("Mul", ["state", "scale"], ["new_state"]),
        ],
        "stateful",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [2, "batch", 4])],
        [axes],
    )
    return _save(graph, tmp_path_factory.mktemp("sig") / "state.onnx")


def _ref(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _client(path, **config):
    return create_app({"MODEL_PATH": str(path), "ORT_THREADS": 1, "MAX_BATCH": 8, **config}).test_client()


def test_signatures_are_read_as_written(image_model, state_model):
    image = read_model_info(image_model).signature
    assert image.inputs[0].shape == (-1, 3, "?", "?") and image.inputs[0].batch_axis == 0
    state = read_model_info(state_model).signature
    assert state.batch_axes == {"x": 0, "state": 1, "scale": None}
    assert [o.batch_axis for o in state.outputs] == [0, 1]


def test_unnamed_dims_take_any_size_and_are_unrelated(image_model):
    c = _client(image_model)
    for shape in ((1, 3, 5, 7), (2, 3, 4, 9), (1, 3, 1, 1)):
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        r = c.post("/predict", json={"inputs": x.tolist()})
        assert r.status_code == 200, r.get_json()
        np.testing.assert_allclose(r.get_json()["outputs"]["pooled"], _ref(image_model, {"image": x})[0],
                                   rtol=1e-5, atol=1e-6)
    r = c.post("/predict", json={"inputs": np.zeros((1, 4, 2, 2)).tolist()})
    assert r.status_code == 400 and "axis 1 must be 3" in r.get_json()["error"]
    assert "[-1, 3, ?, ?]" in r.get_json()["error"]  # the shape as the file writes it
    meta = c.get("/v2/models/image").get_json()
    assert meta["inputs"][0]["shape"] == [-1, 3, -1, -1]
    # a dynamic non-batch dim leaves requests unbounded: the fallback cap
    assert body_limit(read_model_info(image_model).signature, 1024) == FALLBACK_BODY_BYTES


def test_state_input_batched_on_axis_1_and_a_0d_input(state_model):
    c = _client(state_model)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    state = rng.standard_normal((2, 3, 4)).astype(np.float32)
    feeds = {"x": x, "state": state, "scale": np.float32(2.0)}
    want = _ref(state_model, {**feeds, "scale": np.array(2.0, np.float32)})
    r = c.post("/predict", json={"inputs": {"x": x.tolist(), "state": state.tolist(), "scale": 2.0}})
    assert r.status_code == 200, r.get_json()
    out = r.get_json()["outputs"]
    np.testing.assert_allclose(out["y"], want[0], rtol=1e-5)
    np.testing.assert_allclose(out["new_state"], want[1], rtol=1e-5)

    v2 = c.post("/v2/models/state/infer", json={"inputs": [
        {"name": "x", "shape": [3, 4], "datatype": "FP32", "data": x.reshape(-1).tolist()},
        {"name": "state", "shape": [2, 3, 4], "datatype": "FP32", "data": state.reshape(-1).tolist()},
        {"name": "scale", "shape": [], "datatype": "FP32", "data": [2.0]}]})
    assert v2.status_code == 200, v2.get_json()
    # the batch is counted along each input's batch axis: 3 rows, not 2
    too_many = np.zeros((2, 9, 4), np.float32)
    r = c.post("/predict", json={"inputs": {"x": np.zeros((9, 4)).tolist(), "state": too_many.tolist(),
                                            "scale": 1.0}})
    assert r.status_code == 400 and "batch of 9 rows" in r.get_json()["error"]
    r = c.post("/predict", json={"inputs": {"x": x.tolist(), "state": np.zeros((2, 4, 4)).tolist(),
                                            "scale": 1.0}})
    assert r.status_code == 400 and "dimension 'batch' is 3 in input 'x' but 4" in r.get_json()["error"]
    r = c.post("/predict", json={"inputs": {"x": x.tolist(), "state": state.tolist(), "scale": [2.0]}})
    assert r.status_code == 400 and "(rank 0)" in r.get_json()["error"]


def test_batching_merges_along_each_batch_axis_and_passes_0d_inputs_through(state_model):
    info = read_model_info(state_model)
    holder = SessionHolder(info, ort_threads=1)
    metrics = Metrics(batching=True)
    executor = Executor(holder, metrics, max_batch_size=64, timeout_ms=200)
    rng = np.random.default_rng(2)
    requests = []
    for i in range(8):
        rows = 1 + i % 3
        requests.append({"x": rng.standard_normal((rows, 4)).astype(np.float32),
                         "state": rng.standard_normal((2, rows, 4)).astype(np.float32),
                         "scale": np.array(1.0 if i % 2 else 3.0, np.float32)})
    results: list = [None] * len(requests)

    def run(i):
        rows = requests[i]["x"].shape[0]
        results[i] = executor.infer(requests[i], rows)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    with executor.paused():  # the runner is busy: every request queues, then one batch each
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while executor.waiting() < len(requests) and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    for feeds, got in zip(requests, results):
        want = _ref(state_model, feeds)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    # requests with different 0-d scales never share a run; those with the same one do
    samples = {s.name: s.value for s in metrics.batch_size.collect()[0].samples}
    assert samples["onnxdeploy_batch_size_count"] == 2


def test_dims_helpers_are_the_modelfile_ones():
    assert not modelfile.is_fixed_dim(-1) and not modelfile.is_fixed_dim(0)
    assert modelfile.dim_name("?") is None and modelfile.dim_name("batch") == "batch"
