"""Bench with text: requests carry the data file's texts, quality is measured through the API.

Real servers on free ports, real load, the tiny Hugging Face exports of ``hf_fixtures`` (no
downloads). An embedding model is judged by the cosine of each served embedding to the float
model's in-process one (never a top-1), a classifier by accuracy from the served predictions.
"""

from __future__ import annotations

import json

import hf_fixtures as hf
import numpy as np
import pytest
from builders import mlp_classifier, save
from click.testing import CliRunner

from onnxdeploy.bench import BenchOptions, run_bench, write_outputs
from onnxdeploy.bench.bodies import text_body
from onnxdeploy.bench.httpclient import request
from onnxdeploy.bench.servers import ServerPool, ServerSpec, free_port
from onnxdeploy.bench.verdict import make_verdict
from onnxdeploy.cli import cli
from onnxdeploy.measure.numeric import nn_agreement, row_cosines
from onnxdeploy.measure.reference import build_reference
from onnxdeploy.runtimes import make_session
from onnxdeploy.tokenizer import TextEncoder

TEXTS = hf.CORPUS[:9] + ["a cat and a dog", "the server answers with one vector each"]
QUICK = dict(concurrency=[2], requests=40, repeats=1, warmup=5)


def _jsonl(path, texts, labels=True):
    path.write_text("\n".join(json.dumps({"text": t, **({"label": i % 2} if labels else {})})
                              for i, t in enumerate(texts)), encoding="utf-8")
    return path


def _in_process(path, texts, batch=64):
    """Embeddings in process, tokenized per batch like the server tokenizes one request."""
    session, encoder = make_session(path, threads=1), TextEncoder.from_model(path)
    return np.concatenate([session.run(None, encoder.encode(texts[i:i + batch]))[0]
                           for i in range(0, len(texts), batch)])


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    """A sentence embedder (float + dynamic per-channel int8) benched with labelled texts."""
    from onnxdeploy.quantize import QuantizeOptions, quantize_model

    src, _ = hf.exported("st")
    d = tmp_path_factory.mktemp("bench-text")
    int8 = d / "st.int8.onnx"
    quantize_model(src, int8, QuantizeOptions(mode="dynamic", per_channel=True), measure_latency=False)
    data = _jsonl(d / "labelled.jsonl", TEXTS)  # labels on an embedding model: still no accuracy
    # a bound int8 cannot meet: the verdict must then keep the float model for quality
    opts = BenchOptions(models=[str(src), str(int8)], names=["float32", "int8"], data=str(data),
                        min_cosine=0.999999, **QUICK)
    probe = []

    def progress(message: str) -> None:
        # while the bench's servers are up: send the fourth text's body to the float server
        if message.startswith("embedding quality of float32 through "):
            url = message.split(" through ")[1].removesuffix("/predict")
            probe.append(request(url, "POST", "/predict", text_body([TEXTS[3]])))

    report = run_bench(opts, progress=progress)
    report.probe = probe[0]
    return report, src, int8, d


def test_embedding_bench_sends_texts_and_judges_by_cosine(embedder):
    report, src, int8, out = embedder
    d = report.to_dict()
    assert d["send"] == "texts" and d["data"] == "text:labelled.jsonl"
    for target in report.targets:  # one text a request, in the data file's order
        assert target.requests.kind == "texts"
        assert [json.loads(b)["inputs"] for b in target.requests.bodies] == [[t] for t in TEXTS]
    assert all(not r["errors"] and r["requests"] == 40 for r in d["runs"])
    # an embedding has no top-1: labels in the data give no accuracy
    assert d["accuracy"] == {} and d["accuracy_delta"] is None and d["verdict"]["accuracy_delta"] is None
    f, q = d["quality"]["float32"], d["quality"]["int8"]
    assert f["kind"] == q["kind"] == "cosine" and f["reference"] == q["reference"] == "float32"
    # the served float model against itself in process: texts tokenized the same on both sides
    assert f["min_cosine"] > 0.99999 and f["mean_cosine"] > 0.99999 and f["nn_agreement"] == 1.0
    assert f["samples"] == q["samples"] == len(TEXTS) and f["output"] == "sentence_embedding"
    # int8 through the API moves exactly as far as int8 in process does
    base, moved = _in_process(src, TEXTS), _in_process(int8, TEXTS)
    cos = row_cosines(base, moved)
    assert q["min_cosine"] == pytest.approx(float(cos.min()), abs=2e-5)
    assert q["mean_cosine"] == pytest.approx(float(cos.mean()), abs=2e-5)
    assert q["min_cosine"] < 0.999999 and q["passed"] is False and f["passed"] is True
    v = d["verdict"]
    assert v["min_cosine"] == {"float32": f["min_cosine"], "int8": q["min_cosine"]}
    assert v["ship"] == "float32" and "int8's min cosine to float32 is" in v["text"], v["text"]
    # the same runs with a bound int8 meets: the smaller model ships (speed is unranked at 1 repeat)
    ok = {n: {**qq, "passed": True} for n, qq in d["quality"].items()}
    sizes = {"float32": src.stat().st_size, "int8": int8.stat().st_size}
    v2 = make_verdict(report.aggregated, ("float32", "int8"), {}, sizes=sizes, quality=ok)
    assert v2["ship"] == "int8" and "min cosine" in v2["text"] and v2["text"].startswith("Ship int8")
    written = {p.name: p for p in write_outputs(report, out / "out")}
    saved = json.loads(written["report.json"].read_text())
    assert saved["send"] == "texts" and saved["quality"]["int8"]["min_cosine"] == q["min_cosine"]
    md = written["report.md"].read_text()
    assert "Requests carried **texts**" in md and "| int8 | float32 | 11 |" in md


def test_served_text_body_is_answered_as_text(embedder):
    """The bench's own body, sent to the bench's own float server: one row, the in-process embedding."""
    report, src, _, _ = embedder
    assert report.targets[0].requests.bodies[3] == text_body([TEXTS[3]])  # what the load sent
    status, answer = report.probe
    assert status == 200, answer[:300]
    served = np.asarray(json.loads(answer)["outputs"]["sentence_embedding"])
    assert served.shape == (1, 32)
    np.testing.assert_allclose(served, _in_process(src, [TEXTS[3]]), atol=1e-5)


def test_classifier_accuracy_through_the_api_from_texts(tmp_path):
    src, _ = hf.exported("bert-classifier", "text-classification")
    data = _jsonl(tmp_path / "labelled.jsonl", TEXTS)
    expected = build_reference(src, data=str(data), threads=1).accuracy
    assert expected is not None
    # a running server (--url): its v2 metadata lists the text input, so texts are sent as they are
    with ServerPool() as pool:
        (server,) = pool.start_all([ServerSpec(str(src), "clf", free_port(), threads=2)])
        result = CliRunner().invoke(cli, ["bench", "--url", server.url, "--data", str(data), "--concurrency", "2",
                                          "--requests", "40", "--repeats", "1", "--warmup", "5", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["send"] == "texts" and d["samples"] == len(TEXTS) and all(not r["errors"] for r in d["runs"])
    assert d["accuracy"]["clf"] == pytest.approx(expected, abs=1e-12)
    assert d["quality"]["clf"] == {"kind": "accuracy", "accuracy": d["accuracy"]["clf"]}
    # tokens mode still works: tensors in the bodies, the same accuracy through the API
    tokens = run_bench(BenchOptions(models=[str(src)], names=["clf"], data=str(data), send="tokens", **QUICK))
    assert tokens.send == "tokens" and tokens.targets[0].requests.kind == "tokens"
    first = json.loads(tokens.targets[0].requests.bodies[0])["inputs"]
    assert set(first) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(not r.errors for r in tokens.runs)
    assert tokens.accuracy["clf"] == pytest.approx(expected, abs=1e-12)


def test_send_texts_user_errors_exit_2(tmp_path):
    src, _ = hf.exported("st")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS), encoding="utf-8")
    plain = save(mlp_classifier(), tmp_path / "mlp.onnx")
    cases = [([str(src), "--send", "texts", "--data", "random"], "--send texts needs --data a .txt/.jsonl"),
             ([str(plain), "--send", "texts", "--data", str(texts)], "needs a model file that carries a tokenizer")]
    for args, message in cases:
        result = CliRunner().invoke(cli, ["bench", *args, "--requests", "10"])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_nearest_neighbour_agreement_counts_swaps_and_forgives_ties():
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.1, 0.9]])
    assert nn_agreement(ref, ref + 1e-9) == 1.0  # rows 3 and 4 tie exactly: either is right
    served = ref.copy()
    served[2] = [1.0, 0.01]  # served, 0 and 1 find 2 nearest and 2 finds 0: only 3 and 4 agree
    assert nn_agreement(ref, served) == pytest.approx(2 / 5)
    assert nn_agreement(ref[:2], ref[:2]) is None
    cos = row_cosines(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [1.0, 0.0]]))
    assert cos[0] == pytest.approx(2 ** -0.5) and np.isnan(cos[1])


def test_quality_kind_follows_the_task_never_the_labels():
    from onnxdeploy.bench.quality import quality_kind

    for task in ("sentence-embedding", "feature-extraction"):  # labels on an embedding: still cosine
        assert quality_kind({"onnxdeploy.task": task}, True) == "cosine"
    assert quality_kind({"onnxdeploy.task": "text-classification"}, True) == "accuracy"
    assert quality_kind(None, True) == "accuracy" and quality_kind({}, False) is None
