"""``containerize`` beyond a digits-like model: one image, built with buildah, for a text model
that carries its tokenizer, run with podman the way its generated ServingRuntime says; then a model
with int32 (and bool) inputs and several outputs mounted read-only at ``/mnt/models`` in that same
image. Answers are compared with ONNX Runtime run directly: ``/predict`` with texts, v2 BYTES by
tritonclient.http (JSON and binary), every output of the mounted model by tritonclient.http.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from builders import save
from containers import configure, ensure_base_image, podman, podman_missing, wait_http
from test_deploy import _get, _run_as_rt, cli
from wild import multi_output

TEXTS = ["good great excellent", "bad awful terrible sad poor day for the lazy dog", "hello world"]
TOL = 1e-5


@pytest.fixture(scope="module")
def text_image(tmp_path_factory):
    """An image for a tokenizer-carrying BERT classifier built with ``--builder buildah`` on the
    Debian base, and its manifests."""
    why = podman_missing()
    if why:
        pytest.skip(why)
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (Debian package buildah)")
    pytest.importorskip("tokenizers")
    import hf_fixtures as hf

    root = tmp_path_factory.mktemp("deploy_models")
    configure(root)
    base = ensure_base_image()
    model = hf.exported("bert-classifier")[0]
    image = f"localhost/onnxdeploy-test-text:{os.getpid()}"
    kdir = root / "k8s"
    t0 = time.monotonic()
    r = cli("containerize", model, "-t", image, "--base", base, "--builder", "buildah",
            "--kserve", kdir, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    print(f"containerize --builder buildah (text model) {time.monotonic() - t0:.1f} s; "
          f"{report['image_size_bytes'] / 1e6:.0f} MB")
    assert report["builder"] == "buildah" and report["image_size_bytes"] > 100e6
    empty = root / "empty-models"
    empty.mkdir()
    empty.chmod(0o755)
    yield {"root": root, "model": model, "image": image, "k8s": kdir, "report": report,
           "empty": empty}
    podman("rmi", "-f", image, check=False)


def _reference(path, texts):
    """Outputs by name of the model run in process on its carried tokenizer's feeds."""
    from onnxdeploy.tokenizer import TextEncoder

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, TextEncoder.from_model(path).encode(texts))
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def _post(port: int, path: str, payload: dict) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, orjson.dumps(payload), {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


@pytest.mark.slow
def test_text_image_holds_tokenizers_but_no_torch_or_transformers(text_image):
    run = ("run", "--rm", "--read-only", "--entrypoint", "/opt/onnxdeploy/venv/bin/python",
           text_image["image"])
    assert podman(*run, "-c", "import tokenizers; print(tokenizers.__version__)").returncode == 0
    for module in ("torch", "transformers"):
        r = podman(*run, "-c", f"import {module}", check=False)
        assert r.returncode != 0 and f"No module named '{module}'" in r.stderr, r.stderr


@pytest.mark.slow
def test_text_image_answers_texts_as_the_servingruntime_runs_it(text_image):
    """The ServingRuntime's container with an empty /mnt/models: the baked text model serves;
    /predict with texts and v2 BYTES (tritonclient.http, JSON and binary) equal ONNX Runtime."""
    import tritonclient.http as httpclient

    name = "sentiment"
    cid, port, c = _run_as_rt(text_image, name, text_image["empty"])
    try:
        ready_s = wait_http(f"http://127.0.0.1:{port}{c['readinessProbe']['httpGet']['path']}")
        print(f"text image ready {ready_s:.1f} s after podman run")
        assert _get(port, c["livenessProbe"]["httpGet"]["path"])[0] == 200
        want = _reference(text_image["model"], TEXTS)["logits"]
        status, body = _post(port, "/predict", {"inputs": TEXTS})
        assert status == 200, body
        np.testing.assert_allclose(np.asarray(body["outputs"]["logits"], np.float32), want,
                                   rtol=TOL, atol=TOL)
        assert body["predictions"] == want.argmax(1).tolist()

        tc = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert tc.is_server_live() and tc.is_model_ready(name)
        meta = tc.get_model_metadata(name)
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}], meta
        for binary in (False, True):
            inp = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
            inp.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=binary)
            out = httpclient.InferRequestedOutput("logits", binary_data=binary)
            res = tc.infer(name, [inp], outputs=[out])
            np.testing.assert_allclose(res.as_numpy("logits"), want, rtol=TOL, atol=TOL)
        tc.close()
        logs = podman("logs", cid).stderr + podman("logs", cid).stdout
        assert "1 workers x 1 ORT threads (1 usable CPUs)" in logs, logs[-2000:]
    finally:
        podman("rm", "-f", cid, check=False)


@pytest.mark.slow
def test_int32_model_with_several_outputs_mounted_in_the_text_image(text_image, tmp_path):
    """A model with int32 and bool inputs and three outputs, mounted read-only at /mnt/models in
    the text model's image: every output over tritonclient.http (JSON and binary) equals ORT."""
    import tritonclient.http as httpclient

    models = tmp_path / "models"
    models.mkdir()
    path = save(multi_output(), models / "tagger.onnx")
    models.chmod(0o755)
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 50, (3, 7)).astype(np.int32)
    mask = rng.random((3, 7)) > 0.3
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = {o.name: v for o, v in zip(sess.get_outputs(),
                                      sess.run(None, {"tokens": tokens, "mask": mask}))}
    assert len(want) == 3
    name = "tagger-v1"
    cid, port, c = _run_as_rt(text_image, name, models)
    try:
        wait_http(f"http://127.0.0.1:{port}{c['readinessProbe']['httpGet']['path']}")
        tc = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert tc.is_model_ready(name)
        meta = tc.get_model_metadata(name)
        assert meta["name"] == name
        assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"tokens": "INT32",
                                                                      "mask": "BOOL"}
        assert sorted(o["name"] for o in meta["outputs"]) == sorted(want)
        for binary in (False, True):
            inputs = [httpclient.InferInput("tokens", list(tokens.shape), "INT32"),
                      httpclient.InferInput("mask", list(mask.shape), "BOOL")]
            inputs[0].set_data_from_numpy(tokens, binary_data=binary)
            inputs[1].set_data_from_numpy(mask, binary_data=binary)
            outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in want]
            res = tc.infer(name, inputs, outputs=outputs)
            for n, v in want.items():
                got = res.as_numpy(n)
                assert got is not None and got.shape == v.shape, (n, binary, got)
                np.testing.assert_allclose(got, v, rtol=1e-5, atol=1e-5)
        tc.close()
        # the answer names the mounted model, not the baked text model
        status, body = _post(port, "/predict", {"inputs": {"tokens": tokens.tolist(),
                                                            "mask": mask.tolist()}})
        assert status == 200, body
        assert sorted(body["outputs"]) == sorted(want)
        logs = podman("logs", cid).stderr + podman("logs", cid).stdout
        assert "tagger.onnx" in logs
    finally:
        podman("rm", "-f", cid, check=False)
