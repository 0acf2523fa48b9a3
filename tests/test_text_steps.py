"""Text data through the steps: a model that carries its tokenizer takes .txt/.jsonl data."""

from __future__ import annotations

import json

import hf_fixtures as hf
from click.testing import CliRunner

from onnxdeploy.cli import cli

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world",
         "onnx runtime is fast on cpu", "quantization keeps models small"] * 6


def test_compare_a_text_classifier_on_labelled_jsonl(tmp_path):
    src, _ = hf.exported("bert-classifier", "text-classification")
    data = tmp_path / "labelled.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": i % 2}) for i, t in enumerate(TEXTS)))
    result = CliRunner().invoke(cli, ["compare", str(src), str(src), "--data", str(data), "--json",
                                      "--latency-budget", "0.2"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output[result.output.index("{"):])
    assert d["data"] == "text:labelled.jsonl" and d["samples"] == len(TEXTS)
    assert d["outputs"][0]["kind"] == "class_scores" and d["top1_agreement"] == 1.0
    assert d["accuracy"]["a"] == d["accuracy"]["b"] is not None


def test_quantize_a_sentence_embedder_on_texts_judges_by_cosine(tmp_path, monkeypatch):
    src, _ = hf.exported("st")
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(TEXTS))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(cli, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--mode",
                                      "dynamic", "--data", str(data), "--json", "--latency-budget", "0.2"])
    assert result.exit_code in (0, 1), result.output
    d = json.loads(result.output[result.output.index("{"):])
    assert d["comparison"]["criterion"] == "output_drift" and d["comparison"]["top1_agreement"] is None
    out = d["comparison"]["outputs"][0]
    assert out["kind"] == "embedding" and out["min_cosine"] is not None
    assert d["passed"] == (out["min_cosine"] >= 0.99)
    assert list(cwd.iterdir()) == []  # the quantizer's scratch files stay in its temp dir


def test_pipeline_on_a_hugging_face_directory_with_texts(tmp_path):
    import os
    import subprocess
    import sys

    data = tmp_path / "texts.txt"
    data.write_text("\n".join(TEXTS))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "onnxdeploy", "pipeline", str(hf.built("st")), "--data", str(data),
         "--out", str(out), "--requests", "100", "--repeats", "1", "--concurrency", "2"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["export"]["text"] and report["compare"]["data"] == "text:texts.txt"
    rows = {r["name"]: r for r in report["summary"]["variants"]}
    assert rows["int8"]["min_cosine"] is not None and rows["int8"]["accuracy"] is None
    assert report["compare"]["outputs"][0]["kind"] == "embedding"
    assert report["verdict"]["ship"] in rows
    # the served models answered every request, sent as texts, and their served embeddings
    # are judged by cosine in the summary (never a "top-1" over an embedding)
    assert all(not r["errors"] for r in report["bench"]["runs"])
    assert report["bench"]["send"] == "texts"
    assert rows["float32"]["api_min_cosine"] > 0.9999 and rows["int8"]["api_min_cosine"] is not None
    assert rows["int8"]["api_accuracy"] in (None, {})
    assert "accuracy or min cosine (HTTP)" in (out / "report.md").read_text()
    # the served quality pass ran for the variant the verdict weighs
    assert report["bench"]["quality"]["int8"]["passed"] is not None
