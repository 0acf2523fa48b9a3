"""Serving text: a model that carries its tokenizer takes texts on /predict and v2 (BYTES, JSON
and binary), batches texts of different lengths, and refuses bad texts with 400/413 JSON.

Every answer is compared with the ONNX model run in process on ``TextEncoder.encode(texts)``.
The models are the tiny random exports of ``hf_fixtures`` (cached per session) and one graph
built here whose output runs along the sequence (like ``last_hidden_state``).
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import hf_fixtures as hf
import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families
from test_serve_server import Server

from onnxdeploy import modelfile
from onnxdeploy.serve.app import create_app
from onnxdeploy.serve.batching import Executor
from onnxdeploy.serve.metrics import Metrics
from onnxdeploy.serve.model import SessionHolder, read_model_info
from onnxdeploy.serve.text import encode_bytes
from onnxdeploy.tokenizer import META_TEXT, META_TOKENIZER, TextEncoder

pytest.importorskip("tokenizers")

TOL = 1e-5
TEXTS = ["good great excellent", "bad awful terrible sad poor day for the lazy dog",
         "hello world"]
#: lengths differ a lot, so merged batches pad most requests
BATCH_TEXTS = [["a"], ["the quick brown fox jumps over the lazy dog"] * 2,
               ["hello world", "padding truncation and attention masks must agree"],
               ["onnx runtime runs exported transformer models on a cpu " * 3],
               ["similar texts", "different", "good great"], ["bad"]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_text")
    st = hf.exported("st")[0]
    return {"root": root, "clf": hf.exported("bert-classifier")[0], "st": st,
            "seq": _sequence_model(st, root / "seq.onnx")}


def _sequence_model(donor, path):
    """``input_ids, attention_mask [batch, sequence] -> tokens [batch, sequence, 2]`` (ids and
    mask as floats) and ``total [batch, 1]`` (sum of the unmasked ids), carrying donor's tokenizer."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["ids_f", "axis2"], ["ids3"]),
         helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
         helper.make_node("Concat", ["ids3", "mask3"], ["tokens"], axis=2),
         helper.make_node("Mul", ["ids_f", "mask_f"], ["kept"]),
         helper.make_node("ReduceSum", ["kept", "axis1"], ["total"], keepdims=1)],
        "seq",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
         for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "sequence", 2]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
         helper.make_tensor("axis1", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    meta = modelfile.metadata(modelfile.load_model(donor, load_external_data=False))
    modelfile.set_metadata(model, {k: meta[k] for k in (META_TOKENIZER, META_TEXT)})
    return modelfile.save_model(model, path)


_sessions: dict = {}


def reference(path, texts):
    """The model run in process on the carried tokenizer's feeds: outputs by name."""
    if path not in _sessions:
        _sessions[path] = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]),
                           TextEncoder.from_model(path))
    sess, encoder = _sessions[path]
    outs = sess.run(None, encoder.encode(texts))
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def close(got, want):
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=TOL, atol=TOL)


def _client(path, **config):
    return create_app({"MODEL_PATH": str(path), "ORT_THREADS": 1, "MAX_BATCH": 8,
                       **config}).test_client()


@pytest.fixture(scope="module")
def clients(models):
    return {k: _client(models[k]) for k in ("clf", "st", "seq")}


def v2_json(texts, shape=None, **extra):
    return {"inputs": [{"name": "text", "datatype": "BYTES",
                        "shape": shape or [len(texts)], "data": texts}], **extra}


def v2_binary(blob, count, outputs_binary=False):
    """A binary-extension body: JSON header, then the BYTES tensor; and its headers."""
    header = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [count],
                          "parameters": {"binary_data_size": len(blob)}}]}
    if outputs_binary:
        header["parameters"] = {"binary_data_output": True}
    head = json.dumps(header).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head)),
                         "Content-Type": "application/octet-stream"}


def binary_outputs(body, header_length):
    """Outputs of a binary v2 answer by name, as arrays."""
    head = orjson.loads(body[:header_length])
    out, pos = {}, header_length
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(body[pos:pos + size], "<f4").reshape(o["shape"])
        pos += size
    return out


# --------------------------------------------------------------------------- answers


def test_predict_texts_on_a_classifier_give_its_logits_predictions_and_labels(clients, models):
    r = clients["clf"].post("/predict", json={"inputs": TEXTS})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    want = reference(models["clf"], TEXTS)["logits"]
    assert body["model"] == models["clf"].stem and list(body["outputs"]) == ["logits"]
    close(body["outputs"]["logits"], want)
    assert body["predictions"] == want.argmax(1).tolist()
    assert body["labels"] == [hf.LABELS[i] for i in want.argmax(1)]


def test_texts_and_token_ids_give_the_same_rows(clients, models):
    feeds = TextEncoder.from_model(models["clf"]).encode(TEXTS)
    assert set(feeds) == {"input_ids", "attention_mask", "token_type_ids"}
    by_ids = clients["clf"].post("/predict", json={"inputs": {k: v.tolist() for k, v in feeds.items()}})
    by_text = clients["clf"].post("/predict", json={"inputs": {"text": TEXTS}})
    assert by_ids.status_code == by_text.status_code == 200, (by_ids.get_json(), by_text.get_json())
    close(by_ids.get_json()["outputs"]["logits"], reference(models["clf"], TEXTS)["logits"])
    assert by_ids.get_json()["outputs"] == by_text.get_json()["outputs"]
    # v2 with the token inputs keeps working on a text model
    v2 = {"inputs": [{"name": k, "datatype": "INT64", "shape": list(v.shape), "data": v.ravel().tolist()}
                     for k, v in feeds.items()]}
    r = clients["clf"].post(f"/v2/models/{models['clf'].stem}/infer", json=v2)
    assert r.status_code == 200, r.get_json()
    close(np.reshape(r.get_json()["outputs"][0]["data"], (3, 2)), reference(models["clf"], TEXTS)["logits"])


def test_v2_bytes_json_and_binary_give_the_model_outputs(clients, models):
    c, name = clients["st"], models["st"].stem
    want = reference(models["st"], TEXTS)["sentence_embedding"]
    r = c.post(f"/v2/models/{name}/infer", json=v2_json(TEXTS, id="req-1"))
    assert r.status_code == 200, r.get_json()
    (out,) = r.get_json()["outputs"]
    assert r.get_json()["id"] == "req-1"
    assert out["name"] == "sentence_embedding" and out["shape"] == list(want.shape)
    close(np.reshape(out["data"], out["shape"]), want)
    body, headers = v2_binary(encode_bytes(TEXTS), len(TEXTS), outputs_binary=True)
    r = c.post(f"/v2/models/{name}/infer", data=body, headers=headers)
    assert r.status_code == 200, r.data[:300]
    close(binary_outputs(r.data, int(r.headers["Inference-Header-Content-Length"]))["sentence_embedding"], want)


def test_non_ascii_and_empty_texts_round_trip_through_binary_bytes(clients, models):
    texts = ["naïve café — ünïcode ✓", "", "日本語のテキスト"]
    body, headers = v2_binary(encode_bytes(texts), 3)
    r = clients["st"].post(f"/v2/models/{models['st'].stem}/infer", data=body, headers=headers)
    assert r.status_code == 200, r.get_json()
    close(np.reshape(r.get_json()["outputs"][0]["data"], (3, -1)),
          reference(models["st"], texts)["sentence_embedding"])


def test_texts_are_truncated_at_the_models_max_length(clients, models):
    encoder = TextEncoder.from_model(models["st"])
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)
    assert encoder.encode([long])["input_ids"].shape[1] == encoder.max_length == 48
    longer = long + " and then something else entirely at the very end"
    r = clients["st"].post("/predict", json={"inputs": [long, longer, "short"]})
    assert r.status_code == 200, r.get_json()
    rows = np.asarray(r.get_json()["outputs"]["sentence_embedding"])
    close(rows, reference(models["st"], [long, longer, "short"])["sentence_embedding"])
    np.testing.assert_array_equal(rows[0], rows[1])  # the tail past 48 tokens was dropped
    spec = clients["st"].get("/openapi.json").get_json()["paths"]["/predict"]["post"]
    assert "truncated at 48 tokens" in spec["description"]
    assert spec["requestBody"]["content"]["application/json"]["example"]["inputs"][0].startswith("The")


def test_metadata_lists_the_text_bytes_input(clients, models):
    meta = clients["clf"].get(f"/v2/models/{models['clf'].stem}").get_json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]
    assert meta["parameters"]["labels"] == ["negative", "positive"]
    text = meta["parameters"]["text"]
    assert text["max_length"] == 64 and text["max_chars"] == 100_000
    assert [t["name"] for t in text["token_inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    # a model without a tokenizer lists its own inputs only
    from builders import mlp_classifier, save

    plain = _client(save(mlp_classifier(), models["root"] / "mlp.onnx"))
    meta = plain.get("/v2/models/mlp").get_json()
    assert [i["name"] for i in meta["inputs"]] == ["x"] and "text" not in meta.get("parameters", {})


# --------------------------------------------------------------------------- batching


def _run_concurrently(executor, encoder, requests):
    results: list = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def run(i):
        feeds = encoder.encode(requests[i])
        start.wait()
        results[i] = executor.infer(feeds, len(requests[i]), padded=True)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    with executor.paused():  # the runner is busy: every request queues, then they merge
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while executor.waiting() < len(requests) and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize("kind", ["st", "seq"])
def test_batched_texts_of_different_lengths_get_their_own_rows(models, kind):
    path = models[kind]
    holder = SessionHolder(read_model_info(path), ort_threads=1)
    metrics = Metrics(batching=True)
    executor = Executor(holder, metrics, max_batch_size=64, timeout_ms=300)
    results = _run_concurrently(executor, holder.encoder(), BATCH_TEXTS)
    samples = {s.name: s.value for s in metrics.batch_size.collect()[0].samples}
    assert samples["onnxdeploy_batch_size_count"] < len(BATCH_TEXTS)  # requests were merged
    names = [o.name for o in holder.info.signature.outputs]
    for texts, got in zip(BATCH_TEXTS, results):
        want = reference(path, texts)  # this request alone, padded to its own longest text
        for name, arr in zip(names, got):
            assert arr.shape == want[name].shape, (name, texts)
            close(arr, want[name])


def test_batched_sequence_outputs_are_cut_to_each_requests_length(models):
    # the seq model makes the padding visible: its tokens output is the ids themselves
    holder = SessionHolder(read_model_info(models["seq"]), ort_threads=1)
    executor = Executor(holder, Metrics(batching=True), max_batch_size=64, timeout_ms=300)
    short, long = ["a"], ["the quick brown fox jumps over the lazy dog"]
    got_short, got_long = _run_concurrently(executor, holder.encoder(), [short, long])
    assert got_short[0].shape == (1, 3, 2)  # [CLS] a [SEP], not the long request's length
    assert got_long[0].shape[1] > 3
    assert (got_short[0][0, :, 1] == 1).all()  # no padding left in the short caller's rows


# --------------------------------------------------------------------------- refusals


BAD = [
    ("/predict", {"inputs": "one text"}, 400, "inputs: got a string; expected a list of strings"),
    ("/predict", {"inputs": []}, 400, "inputs: empty list; expected at least one text"),
    ("/predict", {"inputs": ["fine", 3]}, 400, "inputs[1]: got a number; expected a string"),
    ("/predict", {"inputs": ["fine", None]}, 400, "inputs[1]: got null; expected a string"),
    ("/predict", {"inputs": [["nested"]]}, 400, "inputs[0]: got a list; expected a string"),
    ("/predict", {"inputs": ["t"] * 9}, 400, "inputs: 9 texts; expected at most 8 per request"),
    ("/predict", {"inputs": ["x" * 51]}, 413, "inputs[0]: 51 characters; expected at most 50"),
    ("/predict", {"inputs": {"text": ["a"], "input_ids": [[1]]}}, 400, "not both"),
    ("/predict", {"inputs": {"text": "a"}}, 400, "inputs.text: got a string; expected a list"),
    ("v2", v2_json(["a", 1]), 400, "input 'text'[1]: got a number; expected a string"),
    ("v2", v2_json([]), 400, "input 'text': empty list; expected at least one text"),
    ("v2", v2_json(["a", "b"], shape=[3]), 400, "'data' has 2 elements but shape [3] needs 3"),
    ("v2", v2_json(["a", "b"], shape=[2, 1]), 400, "shape [2, 1]; expected [N]"),
    ("v2", v2_json(["t"] * 9), 400, "input 'text': 9 texts; expected at most 8 per request"),
    ("v2", v2_json(["x" * 51]), 413, "input 'text'[0]: 51 characters; expected at most 50"),
    ("v2", {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": ["a"]}]}, 400,
     "datatype 'FP32'; expected 'BYTES'"),
    ("v2", {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}, 400, "no 'data'"),
    ("v2", {"inputs": [*v2_json(["a"])["inputs"],
                       {"name": "input_ids", "datatype": "INT64", "shape": [1, 1], "data": [1]}]},
     400, "expected either 'text' (texts) or the token inputs"),
    ("v2", {"inputs": [{"name": "txt", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}, 400,
     "unknown input 'txt'; expected inputs: text, input_ids"),
]


@pytest.fixture(scope="module")
def strict(models):
    """The embedder with a 50-character text limit and 8 texts a request."""
    return _client(models["st"], MAX_TEXT_CHARS=50)


@pytest.mark.parametrize("route,payload,status,message", BAD)
def test_bad_texts_are_refused_with_a_json_error(strict, models, route, payload, status, message):
    path = route if route != "v2" else f"/v2/models/{models['st'].stem}/infer"
    r = strict.post(path, json=payload)
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/json"
    assert message in r.get_json()["error"], r.get_json()


BAD_BINARY = [
    (encode_bytes(["ok"]) + struct.pack("<I", 2) + b"\xff\xfe", 2, "element 1 is not valid UTF-8"),
    (encode_bytes(["ok"])[:-1], 1, "element 0 declares 2 bytes but only 1 remain"),
    (encode_bytes(["ok"]) + b"\x01\x00", 2, "element 1: 2 bytes left where a 4-byte"),
    (encode_bytes(["a", "b"]), 1, "more than the 1 elements of its shape"),
    (encode_bytes(["a"]), 2, "binary data holds 1 elements but shape [2] needs 2"),
    (encode_bytes(["x" * 51]), 1, "51 characters; expected at most 50"),
]


@pytest.mark.parametrize("blob,count,message", BAD_BINARY)
def test_bad_binary_bytes_are_refused(strict, models, blob, count, message):
    body, headers = v2_binary(blob, count)
    r = strict.post(f"/v2/models/{models['st'].stem}/infer", data=body, headers=headers)
    assert r.status_code == (413 if "characters" in message else 400), r.get_data(as_text=True)
    assert message in r.get_json()["error"], r.get_json()


def test_without_the_tokenizers_library_texts_are_501_and_token_ids_still_serve(models, monkeypatch):
    from onnxdeploy import tokenizer
    from onnxdeploy.errors import MissingDependencyError

    def missing(module, extra):
        raise MissingDependencyError(f"{module} is not installed; install it with: pip install "
                                     f"'onnxdeploy[{extra}]'")

    monkeypatch.setattr(tokenizer, "require", missing)
    c = _client(models["st"])
    r = c.post("/predict", json={"inputs": ["a text"]})
    assert r.status_code == 501 and "tokenizers" in r.get_json()["error"]
    ids = {"input_ids": [[2, 5, 3]], "attention_mask": [[1, 1, 1]]}
    r = c.post("/predict", json={"inputs": ids})
    assert r.status_code == 200, r.get_json()


# --------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def st_server(models):
    s = Server(models["st"], "--workers", "1", "--max-batch-size", "16", "--batch-timeout-ms", "150",
               "--batch-hold", "always",
               tmp=models["root"])
    yield s
    s.stop()


def _batch_count(server) -> float:
    text = server.get("/metrics")[2].decode()
    for family in text_string_to_metric_families(text):
        if family.name == "onnxdeploy_batch_size":
            return sum(s.value for s in family.samples if s.name.endswith("_count"))
    return 0.0


def test_server_answers_texts_on_every_route(st_server, models):
    name = models["st"].stem
    want = reference(models["st"], TEXTS)["sentence_embedding"]
    status, _, body = st_server.post_json("/predict", {"inputs": TEXTS})
    assert status == 200, body
    close(orjson.loads(body)["outputs"]["sentence_embedding"], want)
    status, _, body = st_server.post_json(f"/v2/models/{name}/infer", v2_json(TEXTS))
    assert status == 200, body
    close(np.reshape(orjson.loads(body)["outputs"][0]["data"], want.shape), want)
    payload, headers = v2_binary(encode_bytes(TEXTS), len(TEXTS), outputs_binary=True)
    status, h, body = st_server.request("POST", f"/v2/models/{name}/infer", payload, headers)
    assert status == 200, body
    close(binary_outputs(body, int(h["Inference-Header-Content-Length"]))["sentence_embedding"], want)
    status, _, body = st_server.get(f"/v2/models/{name}")
    assert orjson.loads(body)["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    # the ready line says the model takes texts, how it truncates, and shows a text curl
    ready = next(line for line in st_server.text().splitlines() if line.startswith("ready: "))
    assert "truncated at 48 tokens" in ready and "100,000 characters is refused with 413" in ready
    assert re.search(r"-d '\{\"inputs\":\[\"The service", ready), ready


def test_server_batches_concurrent_texts_and_equals_separate_requests(st_server, models):
    alone = []
    for texts in BATCH_TEXTS:  # one at a time: each runs by itself
        status, _, body = st_server.post_json("/predict", {"inputs": texts})
        assert status == 200, body
        alone.append(np.asarray(orjson.loads(body)["outputs"]["sentence_embedding"], np.float32))
    before = _batch_count(st_server)
    for _ in range(3):  # a burst at once, so the batcher merges them
        with ThreadPoolExecutor(len(BATCH_TEXTS)) as pool:
            answers = list(pool.map(lambda t: st_server.post_json("/predict", {"inputs": t}),
                                    BATCH_TEXTS))
        for texts, (status, _, body), single in zip(BATCH_TEXTS, answers, alone):
            assert status == 200, body
            got = orjson.loads(body)["outputs"]["sentence_embedding"]
            close(got, single)
            close(got, reference(models["st"], texts)["sentence_embedding"])
    runs = _batch_count(st_server) - before
    assert 0 < runs < 3 * len(BATCH_TEXTS), runs  # some requests shared a run


def test_server_refuses_bad_texts_with_json(st_server, models):
    name = models["st"].stem
    status, h, body = st_server.post_json("/predict", {"inputs": ["x" * 100_001]})
    assert status == 413 and "100,001 characters; expected at most 100,000" in orjson.loads(body)["error"]
    assert h["content-type"] == "application/json"
    status, _, body = st_server.post_json("/predict", {"inputs": ["fine", {"no": 1}]})
    assert status == 400 and "inputs[1]: got an object" in orjson.loads(body)["error"]
    status, _, body = st_server.post_json("/predict", {"inputs": ["t"] * 1025})
    assert status == 400 and "1025 texts; expected at most 1024" in orjson.loads(body)["error"]
    payload, headers = v2_binary(struct.pack("<I", 3) + b"a\xc3(", 1)
    status, _, body = st_server.request("POST", f"/v2/models/{name}/infer", payload, headers)
    assert status == 400 and "not valid UTF-8" in orjson.loads(body)["error"]


def test_server_classifier_predictions_over_http(models):
    s = Server(models["clf"], "--workers", "1", tmp=models["root"])
    try:
        status, _, body = s.post_json("/predict", {"inputs": TEXTS})
    finally:
        s.stop()
    assert status == 200, body
    answer = orjson.loads(body)
    want = reference(models["clf"], TEXTS)["logits"]
    close(answer["outputs"]["logits"], want)
    assert answer["predictions"] == want.argmax(1).tolist()
    assert answer["labels"] == [hf.LABELS[i] for i in want.argmax(1)]
