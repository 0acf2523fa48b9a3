"""``serve --grpc-port``: the Open Inference Protocol over gRPC, against real servers.

Clients are tritonclient's (its gRPC client, and its own generated ``service_pb2`` for typed
contents and raw bytes), so the wire format is checked against Triton's, not against ours. The
refusals are the REST cases of ``test_serve_views.CASES`` that name an inference request,
translated to gRPC: each is sent as REST v2 (binary extension) and as gRPC (raw and typed
contents) to one server, and must get the mapped code and the same one-line message.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from builders import mlp_classifier, save, two_input_int_model
from prometheus_client.parser import text_string_to_metric_families
from test_serve_server import Server
from test_serve_views import CASES, KEY

from onnxdeploy.bench.servers import free_port

grpc = pytest.importorskip("grpc")
tc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as tpb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as tpb_grpc  # noqa: E402

from onnxdeploy.serve.grpc_service import CODES  # noqa: E402

AUTH = (("authorization", f"Bearer {KEY}"),)
INFER = "/inference.GRPCInferenceService/ModelInfer"


class GrpcServer(Server):
    """A ``Server`` with ``--grpc-port`` on a second free port."""

    def __init__(self, model, *args, **kw):
        self.grpc_port = free_port()
        super().__init__(model, "--grpc-port", str(self.grpc_port), *args, **kw)
        deadline = time.monotonic() + 30
        while True:  # HTTP answers ready as soon as one worker is up; wait for gRPC as well
            try:
                if self.client().is_server_live():
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def client(self):
        return tc.InferenceServerClient(self.target)

    def channel(self):
        # a channel of its own (its own TCP connection), not one shared from grpc's global pool
        return grpc.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])

    def counts(self, name="onnxdeploy_requests_total"):
        text = self.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})[2].decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name:
                    out[tuple(sorted(s.labels.items()))] = s.value
        return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_grpc")
    return {"root": root, "mlp": save(mlp_classifier(), root / "mlp.onnx"),
            "two": save(two_input_int_model(), root / "two.onnx")}


@pytest.fixture(scope="module")
def server(models):
    # the configuration test_serve_views' cases were written for: the key, 8 rows a request
    s = GrpcServer(models["mlp"], "--workers", "1", "--max-batch", "8", "--api-key-env",
                   "GRPC_TEST_KEY", env={"GRPC_TEST_KEY": KEY}, tmp=models["root"],
                   headers={"Authorization": f"Bearer {KEY}"})
    yield s
    s.stop()


@pytest.fixture
def start(models):
    servers = []

    def _start(model, *args, env=None):
        servers.append(GrpcServer(models[model], *args, env=env, tmp=models["root"]))
        return servers[-1]

    yield _start
    for s in servers:
        s.stop()


def _ref(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _stub(server):
    return tpb_grpc.GRPCInferenceServiceStub(server.channel())


# ----------------------------------------------------------------------- the happy paths


def test_metadata_and_readiness(server):
    client = server.client()
    kw = {"headers": {"authorization": f"Bearer {KEY}"}}
    assert client.is_server_live()  # public, as /v2/health/live
    assert client.is_server_ready(**kw) and client.is_model_ready("mlp", **kw)
    assert client.is_model_ready("mlp", "1", **kw)
    meta = client.get_server_metadata(as_json=True, **kw)
    assert meta["name"] == "onnxdeploy" and meta["extensions"] == ["binary_tensor_data"]
    model = client.get_model_metadata("mlp", as_json=True, **kw)
    rest = json.loads(server.get("/v2/models/mlp", headers={"Authorization": f"Bearer {KEY}"})[2])
    for key in ("name", "versions", "platform"):
        assert model[key] == rest[key]
    for key in ("inputs", "outputs"):  # JSON of int64 shapes comes back as strings
        assert [{**t, "shape": [int(d) for d in t["shape"]]} for t in model[key]] == rest[key]
    with pytest.raises(tc.InferenceServerException) as err:
        client.get_model_metadata("other", **kw)
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_infer_raw_and_typed_equal_onnx_runtime(server, models):
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    (want,) = _ref(models["mlp"], {"x": x})
    inp = tc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # raw_input_contents
    result = server.client().infer("mlp", [inp], request_id="r1",
                                   headers={"authorization": f"Bearer {KEY}"})
    np.testing.assert_array_equal(result.as_numpy("logits"), want)
    assert result.get_response().id == "r1"

    req = tpb.ModelInferRequest(model_name="mlp", model_version="1", id="typed")
    tensor = req.inputs.add(name="x", datatype="FP32", shape=x.shape)
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    resp = _stub(server).ModelInfer(req, metadata=AUTH)
    assert resp.id == "typed" and [list(o.shape) for o in resp.outputs] == [[4, 10]]
    np.testing.assert_array_equal(np.frombuffer(resp.raw_output_contents[0], np.float32)
                                  .reshape(4, 10), want)
    req.parameters["binary_data_output"].bool_param = False  # typed contents out, when asked
    resp = _stub(server).ModelInfer(req, metadata=AUTH)
    assert not resp.raw_output_contents
    np.testing.assert_array_equal(np.array(resp.outputs[0].contents.fp32_contents,
                                           np.float32).reshape(4, 10), want)


def test_two_input_int_model_typed_contents(start, models):
    server = start("two", "--workers", "1", "--name", "pair")
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    idx = np.array([0, 9, 4], np.int64)
    (want,) = _ref(models["two"], {"x": x, "idx": idx})
    req = tpb.ModelInferRequest(model_name="pair")
    req.inputs.add(name="x", datatype="FP32", shape=[3, 4]).contents.fp32_contents.extend(
        x.reshape(-1).tolist())
    req.inputs.add(name="idx", datatype="INT64", shape=[3]).contents.int64_contents.extend(
        idx.tolist())
    out = req.outputs.add(name=_ref_name(models["two"]))
    out.parameters["binary_data"].bool_param = False
    resp = _stub(server).ModelInfer(req)
    np.testing.assert_allclose(np.array(resp.outputs[0].contents.fp32_contents).reshape(3, 3),
                               want, rtol=1e-6)


def _ref_name(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()[0].name


# ----------------------------------------------------------------------- refusals, as REST


def _translate(case: str):
    """A ``test_serve_views.CASES`` entry naming an inference request as a protocol-neutral
    request: (model, version, [(name, datatype, shape, array or None)], authorization), or None
    when the case is about HTTP itself (paths, methods, content types, JSON syntax)."""
    path, body, headers, *method = CASES[case]
    if method or not (path == "/predict" or path.endswith("/infer")):
        return None
    if "%" in path or headers.get("Content-Type", "application/json") != "application/json":
        return None
    model, version = "mlp", ""
    if path != "/predict":
        parts = unquote(path).split("/")  # /v2/models/NAME[/versions/V]/infer
        model, version = parts[3], (parts[5] if len(parts) == 7 else "")
    binary = b""
    if "Inference-Header-Content-Length" in headers:
        length = headers["Inference-Header-Content-Length"]
        if not length.isdigit():
            return None
        body, binary = body[:int(length)], body[int(length):]
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    inputs = []
    if path == "/predict":
        try:
            arr = np.asarray(payload["inputs"], np.float64)
        except (KeyError, TypeError, ValueError):
            return None
        with np.errstate(over="ignore"):  # 1e39 is inf in float32, as on the wire
            inputs.append(("x", "FP32", list(arr.shape), arr.astype(np.float32)))
    else:
        for item in payload.get("inputs", []):
            shape = item.get("shape")
            if not all(type(d) is int for d in shape):
                return None  # a JSON type (true as a dim) protobuf cannot carry
            dtype = {"FP32": np.float32, "INT64": np.int64}[item["datatype"]]
            if "data" in item:
                arr = np.asarray(item["data"], dtype)
            else:
                size = item["parameters"]["binary_data_size"]
                arr, binary = np.frombuffer(binary[:size], dtype), binary[size:]
            inputs.append((item["name"], item["datatype"], shape, arr))
    return model, version, inputs, headers.get("Authorization")


TRANSLATED = sorted(c for c in CASES if _translate(c) is not None)


def test_every_inference_case_translates():
    # the REST inference refusals that have a gRPC form: none may silently drop out
    assert {"no key", "wrong key", "wrong shape", "non-finite", "too many rows", "v2 version 7",
            "v2 other model", "v2 wrong datatype", "v2 impossible shape", "v2 binary",
            "v2 JSON"} <= set(TRANSLATED)


def _rest_binary(server, model, version, inputs, auth):
    """The request as REST v2 with the binary extension (the same bytes gRPC's raw carries)."""
    entries, blobs = [], []
    for name, datatype, shape, arr in inputs:
        raw = arr.tobytes()
        entries.append({"name": name, "datatype": datatype, "shape": shape,
                        "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    header = orjson.dumps({"inputs": entries})
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    headers = {"Inference-Header-Content-Length": str(len(header)),
               "Content-Type": "application/octet-stream"}
    if auth:
        headers["Authorization"] = auth
    status, _, body = server.request("POST", path, header + b"".join(blobs), headers)
    return status, (json.loads(body).get("error") if status != 200 else None)


def _grpc_request(model, version, inputs, *, typed: bool):
    req = tpb.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, arr in inputs:
        tensor = req.inputs.add(name=name, datatype=datatype, shape=shape)
        if typed:
            field = {"FP32": "fp32_contents", "INT64": "int64_contents"}[datatype]
            getattr(tensor.contents, field).extend(arr.reshape(-1).tolist())
        else:
            req.raw_input_contents.append(arr.tobytes())
    return req


def _call(server, request, auth):
    try:
        _stub(server).ModelInfer(request, metadata=(("authorization", auth),) if auth else ())
        return grpc.StatusCode.OK, None, ()
    except grpc.RpcError as exc:
        return exc.code(), exc.details(), exc.trailing_metadata()


@pytest.mark.parametrize("contents", ["raw", "typed"])
@pytest.mark.parametrize("case", TRANSLATED)
def test_grpc_answers_as_rest_does(server, case, contents):
    model, version, inputs, auth = _translate(case)
    status, message = _rest_binary(server, model, version, inputs, auth)
    path, body, headers, *_ = CASES[case]
    assert status == server.request("POST", path, body, headers)[0]  # as the REST case itself
    code, details, _ = _call(server, _grpc_request(model, version, inputs,
                                                   typed=contents == "typed"), auth)
    assert code == (grpc.StatusCode.OK if status == 200 else CODES[status]), (details, message)
    assert details == message


def _raw_call(server, raw: bytes):
    call = server.channel().unary_unary(INFER)  # bytes in, bytes out: no serializer at all
    try:
        return grpc.StatusCode.OK, call(raw, metadata=AUTH)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


def test_malformed_messages_are_invalid_argument_and_the_server_keeps_serving(server):
    x = np.zeros((2, 64), np.float32)
    good = _grpc_request("mlp", "", [("x", "FP32", [2, 64], x)], typed=False)
    short = tpb.ModelInferRequest()
    short.CopyFrom(good)
    short.raw_input_contents[0] = x.tobytes()[:-4]
    both = tpb.ModelInferRequest()
    both.CopyFrom(good)
    both.inputs[0].contents.fp32_contents.append(1.0)
    wrong_field = _grpc_request("mlp", "", [("x", "FP32", [1, 64], np.zeros(64, np.int64))],
                                typed=True)
    wrong_field.inputs[0].datatype = "FP32"
    wrong_field.inputs[0].contents.Clear()
    wrong_field.inputs[0].contents.int_contents.extend([0] * 64)
    extra = tpb.ModelInferRequest()
    extra.CopyFrom(good)
    extra.raw_input_contents.append(b"")
    expected = {
        b"\xff\xff\xff\xff": "not a ModelInferRequest",
        short.SerializeToString(): "508 bytes of binary data but shape [2, 64] of FP32 needs 512",
        both.SerializeToString(): "both contents and raw_input_contents",
        wrong_field.SerializeToString(): "datatype FP32 takes fp32_contents; got int_contents",
        extra.SerializeToString(): "raw_input_contents has 2 entries but there are 1 inputs",
    }
    for raw, words in expected.items():
        code, details = _raw_call(server, raw)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, (code, details)
        assert "\n" not in details
    code, answer = _raw_call(server, good.SerializeToString())
    assert code == grpc.StatusCode.OK and tpb.ModelInferResponse.FromString(answer).outputs
    assert server.proc.poll() is None


def test_message_over_the_size_limit_is_resource_exhausted(server):
    from onnxdeploy.serve.model import read_model_info
    from onnxdeploy.serve.validation import body_limit

    cap = body_limit(read_model_info(server.model).signature, 8)
    big = _grpc_request("mlp", "", [("x", "FP32", [1, 64], np.zeros(64, np.float32))],
                        typed=False)
    big.raw_input_contents[0] = bytes(cap + 1)
    code, details = _raw_call(server, big.SerializeToString())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == f"request message is {big.ByteSize()} bytes; expected at most {cap} bytes"
    assert _raw_call(server, _grpc_request("mlp", "", [("x", "FP32", [1, 64], np.zeros(
        64, np.float32))], typed=False).SerializeToString())[0] == grpc.StatusCode.OK


def test_grpc_requests_are_counted_beside_http(server):
    before = server.counts()
    _call(server, _grpc_request("mlp", "", [("x", "FP32", [1, 64], np.zeros(64, np.float32))],
                                typed=False), f"Bearer {KEY}")
    _call(server, _grpc_request("nope", "", [], typed=False), f"Bearer {KEY}")
    after = server.counts()

    def delta(endpoint, status, protocol):
        key = (("endpoint", endpoint), ("protocol", protocol), ("status", status))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("v2_infer", "200", "grpc") == 1 and delta("v2_infer", "404", "grpc") == 1
    assert delta("v2_infer", "200", "http") == 0


# ----------------------------------------------------------------------- shedding and drain


def _slow(start, *extra, hold_ms=1500):
    # every request waits for its batch to fill (1000 rows) until the timeout: held in flight
    return start("mlp", "--workers", "1", "--max-batch-size", "1000", "--batch-hold", "always",
                 "--batch-timeout-ms",
                 str(hold_ms), *extra)


def _infer_timed(server, x, channel):
    stub = tpb_grpc.GRPCInferenceServiceStub(channel)
    req = _grpc_request("mlp", "", [("x", "FP32", list(x.shape), x)], typed=False)
    t0 = time.monotonic()
    try:
        resp = stub.ModelInfer(req, timeout=30)
        return grpc.StatusCode.OK, resp, (), time.monotonic() - t0
    except grpc.RpcError as exc:
        return exc.code(), exc.details(), dict(exc.trailing_metadata()), time.monotonic() - t0


@pytest.mark.slow
def test_shedding_over_grpc_with_counts(start, models):
    hold_s, bound, burst = 1.5, 8, 24
    server = _slow(start, "--max-inflight", str(bound))
    channel = server.channel()
    xs = [np.full((1, 64), i, np.float32) for i in range(burst)]
    with ThreadPoolExecutor(burst) as pool:
        results = list(pool.map(lambda x: _infer_timed(server, x, channel), xs))
    codes = [r[0] for r in results]
    assert codes.count(grpc.StatusCode.OK) == bound, codes
    assert codes.count(grpc.StatusCode.UNAVAILABLE) == burst - bound, codes
    for x, (code, answer, trailing, seconds) in zip(xs, results):
        if code == grpc.StatusCode.UNAVAILABLE:  # at once, with the retry hint and REST's words
            assert trailing.get("retry-after") == "1" and "busy" in answer
            assert seconds < hold_s - 0.5, seconds
        else:
            (want,) = _ref(models["mlp"], {"x": x})
            np.testing.assert_array_equal(
                np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(1, 10), want)
    counts = server.counts()
    key = (("endpoint", "v2_infer"), ("protocol", "grpc"))
    assert counts[(*key, ("status", "503"))] == burst - bound
    assert counts[(*key, ("status", "200"))] == bound


@pytest.mark.slow
def test_sigterm_drains_in_flight_rpcs_and_refuses_new_ones(start):
    server = _slow(start, hold_ms=2000)
    channel = server.channel()
    x = np.zeros((1, 64), np.float32)
    assert _infer_timed(server, x, channel)[0] == grpc.StatusCode.OK  # connected
    with ThreadPoolExecutor(6) as pool:
        held = [pool.submit(_infer_timed, server, x, channel) for _ in range(6)]
        time.sleep(0.5)  # all six accepted, waiting for their batch
        os.killpg(server.proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        late = _infer_timed(server, x, channel)
        results = [f.result() for f in held]
    assert [r[0] for r in results] == [grpc.StatusCode.OK] * 6
    assert late[0] == grpc.StatusCode.UNAVAILABLE, late
    assert late[2].get("retry-after") == "1" and "shutting down" in late[1]
    assert server.proc.wait(20) == 0


# ----------------------------------------------------------------------- batching


def test_one_batch_holds_rest_and_grpc_requests(start, models):
    # one worker, every batch held until 64 rows or 400 ms (--batch-hold always): requests sent
    # together, over both protocols, meet in the one batcher; the batches are counted by the
    # protocols they held
    server = start("mlp", "--workers", "1", "--max-batch-size", "64", "--batch-hold", "always",
                   "--batch-timeout-ms", "400")
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(6)]
    channel = server.channel()
    assert _infer_timed(server, xs[0], channel)[0] == grpc.StatusCode.OK  # connected

    def rest(x):
        status, _, body = server.post_json("/predict", {"inputs": x.tolist()})
        assert status == 200, body
        return np.asarray(json.loads(body)["outputs"]["logits"], np.float32)

    def rpc(x):
        code, resp, _, _ = _infer_timed(server, x, channel)
        assert code == grpc.StatusCode.OK, resp
        return np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(1, 10)

    with ThreadPoolExecutor(len(xs)) as pool:
        got = list(pool.map(lambda ix: (rest if ix[0] % 2 else rpc)(ix[1]), enumerate(xs)))
    for x, answer in zip(xs, got):
        np.testing.assert_allclose(answer, _ref(models["mlp"], {"x": x})[0], rtol=1e-5, atol=1e-6)
    mixes = {dict(k)["protocols"]: v for k, v in
             server.counts("onnxdeploy_batch_protocols_total").items()}
    assert mixes.get("grpc+http", 0) >= 1, mixes
    assert sum(server.counts("onnxdeploy_batch_size_sum").values()) == len(xs) + 1  # rows
    counts = server.counts()
    key = (("endpoint", "v2_infer"), ("protocol", "grpc"))
    assert counts[(*key, ("status", "200"))] == 4
    assert counts[(("endpoint", "predict"), ("protocol", "http"), ("status", "200"))] == 3


def test_lone_requests_are_never_held_with_adaptive_batching(start, models):
    # adaptive hold (the default) with a 60 s bound: one client at a time, over either protocol,
    # is never in flight beside another request, so every batch runs at once ("alone"); a held
    # request would count as "held" (and take a minute)
    server = start("mlp", "--workers", "1", "--max-batch-size", "64", "--batch-timeout-ms",
                   "60000")
    channel = server.channel()
    # (lone requests skip the batcher's queue, in the event loop and in gRPC's threads alike:
    # every batch is still counted, and in /metrics as soon as its answer is)
    x = np.zeros((1, 64), np.float32)
    for i in range(10):
        if i % 2:
            assert server.post_json("/predict", {"inputs": x.tolist()}, timeout=30)[0] == 200
        else:
            assert _infer_timed(server, x, channel)[0] == grpc.StatusCode.OK
    hows = {dict(k)["how"]: v for k, v in server.counts("onnxdeploy_batches_total").items()}
    assert hows == {"alone": 10}, hows
    mixes = {dict(k)["protocols"]: v for k, v in
             server.counts("onnxdeploy_batch_protocols_total").items()}
    assert mixes == {"grpc": 5, "http": 5}, mixes
    assert sum(server.counts("onnxdeploy_batch_size_count").values()) == 10
    assert sum(server.counts("onnxdeploy_batch_size_sum").values()) == 10  # rows
    assert sum(server.counts("onnxdeploy_batch_queue_seconds_count").values()) == 10


# ----------------------------------------------------------------------- workers


@pytest.mark.slow
def test_grpc_uses_every_worker(start):
    # connections are spread by the kernel's SO_REUSEPORT hash and re-spread each time the
    # server ages one out (here every 0.4 s): both workers get their share as connections age.
    # Which worker a connection lands on is a hash of its random source port, so the test drives
    # in rounds and asks for the share over all rounds so far (at most 10 rounds of 2 s: on a
    # loaded machine a round may see few reconnections); it fails when a worker never serves
    # gRPC, or serves a share below a quarter however long the run.
    server = start("mlp", "--workers", "2", env={"ONNXDEPLOY_GRPC_CONNECTION_AGE_S": "0.4"})
    x = np.zeros((1, 64), np.float32)

    def drive(stop: float) -> int:
        channel = server.channel()
        n = 0
        while time.monotonic() < stop:
            n += _infer_timed(server, x, channel)[0] == grpc.StatusCode.OK
        return n

    total, per_worker = 0, {}
    with ThreadPoolExecutor(2) as pool:
        for _ in range(10):
            stop = time.monotonic() + 2
            total += sum(pool.map(drive, [stop, stop]))
            per_worker = {dict(k)["worker"]: v for k, v in
                          server.counts("onnxdeploy_worker_requests_total").items()
                          if dict(k)["protocol"] == "grpc"}
            if len(per_worker) == 2 and min(per_worker.values()) >= 0.25 * total:
                break
    assert len(per_worker) == 2, per_worker
    assert sum(per_worker.values()) >= total > 0
    assert min(per_worker.values()) >= 0.25 * total, (per_worker, total)


# ----------------------------------------------------------------------- text


@pytest.mark.slow
def test_text_model_takes_bytes(start, models):
    pytest.importorskip("tokenizers")
    import hf_fixtures as hf

    path = hf.exported("bert-classifier")[0]
    models["clf"] = path
    server = start("clf", "--workers", "1")
    texts = ["good great excellent", "bad awful terrible sad poor day", "hello"]
    rest = json.loads(server.post_json("/predict", {"inputs": texts})[2])
    # raw: 4-byte little-endian lengths, as Triton serializes BYTES
    inp = tc.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    result = server.client().infer(path.stem, [inp])
    name = next(iter(rest["outputs"]))
    np.testing.assert_allclose(result.as_numpy(name), rest["outputs"][name], rtol=1e-5,
                               atol=1e-6)
    # typed: bytes_contents
    req = tpb.ModelInferRequest(model_name=path.stem)
    req.inputs.add(name="text", datatype="BYTES", shape=[len(texts)]).contents \
        .bytes_contents.extend(t.encode() for t in texts)
    resp = _stub(server).ModelInfer(req)
    np.testing.assert_allclose(np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(
        len(texts), -1), rest["outputs"][name], rtol=1e-5, atol=1e-6)
    # a text that is not UTF-8 is the client's error
    bad = tpb.ModelInferRequest(model_name=path.stem)
    bad.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"\xff\xfe")
    with pytest.raises(grpc.RpcError) as err:
        _stub(server).ModelInfer(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ----------------------------------------------------------------------- bench over gRPC


def test_bench_grpc_client_against_a_server(start, models):
    from onnxdeploy.bench.bodies import predict_body
    from onnxdeploy.bench.grpcload import encode_infer, run_grpc_load, served_model
    from onnxdeploy.bench.targets import signature_from_metadata

    server = start("mlp", "--workers", "1")
    name, meta = served_model(server.target, None)  # the name read from the server itself
    assert name == "mlp" and meta["inputs"][0]["name"] == "x"
    sig = signature_from_metadata(meta)
    x = np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)
    bodies = encode_infer([predict_body(sig, {"x": x})], sig, name, texts=False)
    res = run_grpc_load(server.target, bodies, concurrency=4, total=40)
    assert res.ok == 40 and not res.errors
    bad = encode_infer([predict_body(sig, {"x": x})], sig, "nope", texts=False)
    res = run_grpc_load(server.target, bad, concurrency=2, total=4)
    assert res.errors == {"grpc_not_found": 4} and "unknown model 'nope'" in res.first_error


def test_our_proto_matches_tritons_field_for_field():
    from onnxdeploy.wire.proto import grpc_service_pb2 as ours

    def fields(d):
        return {f.name: (f.number, f.type, f.is_repeated) for f in d.fields}

    def walk(d, theirs):
        assert fields(d).items() <= fields(theirs).items(), d.full_name
        for nested in d.nested_types:
            walk(nested, theirs.nested_types_by_name[nested.name])

    for name, d in ours.DESCRIPTOR.message_types_by_name.items():
        walk(d, tpb.DESCRIPTOR.message_types_by_name[name])
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = tpb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        other = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            other.input_type.full_name, other.output_type.full_name)
