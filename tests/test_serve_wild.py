"""Serving models as converters write them: a ZipMap (sequence of maps) output, RNN state with a
batch axis on 1 and a 0-d input, Paddle-style dims; answers equal ONNX Runtime's in process."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from wild import save_fixture

from onnxdeploy.serve.app import create_app


def _client(path):
    return create_app({"MODEL_PATH": str(path), "ORT_THREADS": 1, "MAX_BATCH": 64}).test_client()


@pytest.fixture(scope="module")
def wild_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("serve_wild")


def test_zipmap_output_served_as_rows_of_label_scores(wild_dir):
    path = save_fixture("sklearn-zipmap", wild_dir)
    client = _client(path)
    x = np.random.default_rng(0).random((3, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ref = sess.run(None, {name: x})
    r = client.post("/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.get_json()
    outs = r.get_json()["outputs"]
    names = [o.name for o in sess.get_outputs()]
    labels, probs = outs[names[0]], outs[names[1]]
    assert labels == ref[0].tolist()
    assert [sorted(row) for row in probs] == [sorted(str(k) for k in row) for row in ref[1]]
    for got, want in zip(probs, ref[1]):
        assert all(abs(got[str(k)] - v) < 1e-6 for k, v in want.items())
    # the Open Inference Protocol has no map type: each row is one BYTES element holding its JSON
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    r = client.post("/v2/models/sklearn-zipmap/infer", json=body)
    assert r.status_code == 200, r.get_json()
    seq = next(o for o in r.get_json()["outputs"] if o["name"] == names[1])
    assert seq["datatype"] == "BYTES" and seq["shape"] == [3]
    assert orjson.loads(seq["data"][0]).keys() == {str(k) for k in ref[1][0]}


def test_rnn_state_and_scalar_input_served(wild_dir):
    path = save_fixture("rnn-state", wild_dir)
    client = _client(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    feeds = {}
    for i in sess.get_inputs():
        shape = [3 if not isinstance(d, int) else d for d in i.shape]
        if "int64" in i.type:
            feeds[i.name] = np.array(16000, dtype=np.int64).reshape(shape) if shape else np.array(16000, np.int64)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    ref = sess.run(None, feeds)
    r = client.post("/predict", json={"inputs": {k: v.tolist() for k, v in feeds.items()}})
    assert r.status_code == 200, r.get_json()
    outs = r.get_json()["outputs"]
    for o, want in zip(sess.get_outputs(), ref):
        assert np.allclose(np.asarray(outs[o.name]), want, atol=1e-5)
