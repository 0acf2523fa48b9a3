"""optimize --transformer: ORT's transformer fusions counted, proven, and never recommended slower."""

from __future__ import annotations

import json
import logging

import hf_fixtures as hf
import numpy as np
import onnx
import pytest
from builders import mlp_classifier, save
from click.testing import CliRunner
from onnx import helper, numpy_helper

import onnxdeploy.optimize as optimize_pkg
from onnxdeploy.cli import cli
from onnxdeploy.errors import OptionError
from onnxdeploy.judge.recommend import RESULT
from onnxdeploy.measure import Figure, Latency
from onnxdeploy.measure.latency import CONTROL, REFERENCE
from onnxdeploy.modelfile import load_model, metadata, op_counts
from onnxdeploy.optimize import OptimizeOptions, optimize_model, recommendation
from onnxdeploy.optimize.transformer import fusion_counts, resolve

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world",
         "onnx runtime runs exported transformer models on a cpu",
         "padding truncation and attention masks must agree", "good great excellent"] * 4


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS))
    return path


def _count(ops, op):
    return ops.get(op, 0) + ops.get(f"com.microsoft.{op}", 0)


def test_bert_fusions_are_counted_proven_and_keep_the_metadata(tmp_path, texts, capfd):
    src, _ = hf.exported("bert-classifier")
    out = tmp_path / "fused.onnx"
    capfd.readouterr()
    report = optimize_model(src, out, OptimizeOptions(transformer="auto", data=str(texts),
                                                      latency_rounds=0, threads=1))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # ORT's optimizer printed and logged nothing
    assert logging.getLogger("fusion_attention").propagate  # its loggers were given back

    (step,) = [p for p in report.passes if p.name == "transformer_bert"]
    assert report.transformer["model_type"] == "bert"
    # the exported-from directory is still there: heads and width come from its config.json
    assert (report.transformer["num_heads"], report.transformer["hidden_size"]) == (4, 32)
    before, after = op_counts(load_model(src)), op_counts(load_model(out))
    # every fusion's count is what the graph gained of that op, and nothing else was created
    assert step.fusions["SkipLayerNormalization"] > 0 and "Attention" in step.fusions
    for op, n in step.fusions.items():
        assert _count(after, op) - _count(before, op) == n, (op, n, before, after)
    contrib = {op.split(".")[-1] for op in after if op.startswith("com.microsoft.")}
    assert contrib and contrib <= {op for op, n in step.fusions.items() if n}, contrib
    assert step.op_delta == {op: after.get(op, 0) - before.get(op, 0)
                             for op in set(before) | set(after) if after.get(op, 0) != before.get(op, 0)}
    assert any("Fused SkipLayerNormalization" in line for line in step.log)

    attention = step.fusions["Attention"] + step.fusions.get("MultiHeadAttention", 0)
    sentence = [w for w in report.warnings if w.startswith("Attention did not fuse")]
    if attention:
        assert not sentence and "did not fuse" not in step.note
    else:  # our dynamo export: ORT's own reason and what the graph shows are both said
        assert len(sentence) == 1 and sentence[0] in step.note
        assert "failed to match qk path" in sentence[0] and "Softmax feeds IsNaN/Where" in sentence[0]

    # the proof ran on the texts and passed; the tokenizer and task travel with the fused file
    c = report.comparison
    assert c["passed"] is True and c["samples"] == len(TEXTS) and c["max_abs_diff"] <= c["tolerance"]
    assert metadata(load_model(out)) == metadata(load_model(src))
    assert report.recommended is None and "not measured" in report.recommendation


def _with_extra_work(path, work: int = 20, width: int = 1024):
    """The model plus ``work`` width x width MatMuls on a side branch added back times zero:
    the same outputs, made slower on purpose."""
    model = onnx.load(path)
    g = model.graph
    rng = np.random.default_rng(0)
    out = g.output[0].name
    classes = 2
    g.initializer.extend([
        numpy_helper.from_array((rng.standard_normal((classes, width)) * 0.1).astype(np.float32), "xw_up"),
        numpy_helper.from_array((rng.standard_normal((width, width)) * 0.02).astype(np.float32), "xw_sq"),
        numpy_helper.from_array(np.zeros((), np.float32), "xw_zero")])
    producer = next(n for n in g.node if out in n.output)
    producer.output[list(producer.output).index(out)] = "xw_raw"
    nodes = [helper.make_node("MatMul", ["xw_raw", "xw_up"], ["xw0"])]
    nodes += [helper.make_node("MatMul", [f"xw{i}", "xw_sq"], [f"xw{i + 1}"]) for i in range(work)]
    nodes += [helper.make_node("ReduceSum", [f"xw{work}"], ["xw_sum"], keepdims=1),
              helper.make_node("Mul", ["xw_sum", "xw_zero"], ["xw_nil"]),
              helper.make_node("Add", ["xw_raw", "xw_nil"], [out])]
    g.node.extend(nodes)
    return model


def test_a_fused_model_that_measures_slower_is_written_but_not_recommended(tmp_path, texts, monkeypatch):
    src, _ = hf.exported("bert-classifier")
    real_fuse = optimize_pkg.fuse

    def slow_fuse(model, settings, workdir):
        result = real_fuse(model, settings, workdir)
        path = workdir / "fused_then_slowed.onnx"
        onnx.save(result.model, path)
        result.model = _with_extra_work(path)
        return result

    monkeypatch.setattr(optimize_pkg, "fuse", slow_fuse)
    out, report_path = tmp_path / "fused.onnx", tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["optimize", str(src), "-o", str(out), "--transformer", "bert",
                                      "--data", str(texts), "--ort-threads", "1",
                                      "--latency-budget", "0.4", "--report", str(report_path)])
    assert result.exit_code == 0, result.output  # verified: a slower result is not a failed check
    d = json.loads(report_path.read_text())
    assert d["comparison"]["passed"] is True and out.exists()
    assert d["recommended"] is False, (d["recommendation"], d["latency"]["speedup"], d["latency"]["margin"])
    assert "keep the input" in d["recommendation"] and d["recommendation"] in d["warnings"]
    worst = min(d["latency"]["speedup"][RESULT].values())
    assert f"{worst:.2f}x the input's speed" in d["recommendation"]
    text = " ".join(result.output.split())
    assert "NO: the optimized model measured" in text and "keep the input" in text


def _latency(ratios: dict[str, float], *, noise: float = 0.01) -> Latency:
    """A measurement built from numbers: the float model at 100 ms, the result 100 / ratio ms."""
    figures = {REFERENCE: {}, CONTROL: {}, RESULT: {}}
    for key, ratio in ratios.items():
        ref = (100.0,) * 5
        figures[REFERENCE][key] = Figure(100.0, 100.0, 100.0, 5, 5, samples=ref)
        figures[CONTROL][key] = Figure(100.0, 100.0, 100.0, 5, 5, samples=ref)
        t = 100.0 / ratio
        figures[RESULT][key] = Figure(t, t, t, 5, 5, samples=(t,) * 5)
    return Latency(figures, {k: noise for k in ratios}, 1.0, 1)


@pytest.mark.parametrize("ratios, noise, expected, words", [
    ({"batch_1": 1.0, "batch_32": 0.86}, 0.01, False, "0.86x the input's speed at batch 32"),
    ({"batch_1": 1.3, "batch_32": 0.8}, 0.01, False, "0.80x the input's speed at batch 32"),
    ({"batch_1": 1.02, "batch_32": 0.97}, 0.01, True, "not slower"),
    ({"batch_1": 1.4, "batch_32": 1.2}, 0.01, True, "faster"),
    ({"batch_32": 0.97}, 0.06, True, "0.97x the input's speed at batch 32: equal"),  # within 2 x A/A
    # inside a wide margin, yet below the 5% floor: measured slower, not recommended
    ({"batch_1": 1.0, "batch_32": 0.925}, 0.11, False, "0.93x the input's speed at batch 32: inside"),
    ({"batch_32": 0.97}, 0.30, None, "too noisy"),
    ({"batch_32": 0.3}, 0.30, False, "0.30x"),  # slower even beyond a noisy run's margin
])
def test_recommendation_follows_the_measured_speed(ratios, noise, expected, words):
    recommended, sentence = recommendation(True, _latency(ratios, noise=noise))
    assert recommended is expected and words in sentence, sentence


def test_recommendation_without_a_pass_or_a_measurement():
    assert recommendation(False, _latency({"batch_32": 2.0}))[0] is False
    assert recommendation(None, _latency({"batch_32": 2.0}))[0] is None
    recommended, sentence = recommendation(True, None)
    assert recommended is None and "not measured" in sentence


def test_fusion_counts_are_increases_over_the_input():
    before = {"LayerNormalization": 5, "Add": 22}
    stats = {"Attention": 0, "LayerNormalization": 1, "SkipLayerNormalization": 4, "BiasGelu": 2, "Gelu": 0}
    assert fusion_counts(before, stats) == {"Attention": 0, "SkipLayerNormalization": 4, "BiasGelu": 2}
    assert fusion_counts({"com.microsoft.Attention": 1}, {"Attention": 3}) == {"Attention": 2}


@pytest.mark.parametrize("args, message", [
    (["--transformer", "gpt9"], "--transformer 'gpt9': expected one of auto, bert"),
    (["--transformer", "auto"], "does not look like a transformer encoder"),
])
def test_bad_transformer_choice_is_a_one_line_error(tmp_path, args, message):
    src = save(mlp_classifier(), tmp_path / "mlp.onnx")
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(cli, ["optimize", str(src), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("OptionError: ") and message in lines[0], lines
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["mlp.onnx"]


def test_auto_reads_the_exported_from_config(tmp_path):
    model = mlp_classifier()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_head": 12}))
    meta = {"onnxdeploy.source": str(tmp_path)}
    with pytest.raises(OptionError, match="is a 'gpt2' model"):
        resolve("auto", model, meta)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "distilbert", "n_heads": 12, "dim": 384}))
    s = resolve("auto", model, meta)
    assert (s.model_type, s.num_heads, s.hidden_size) == ("bert", 12, 384) and "config.json" in s.source
    s = resolve("bert", model, meta, num_heads=6)
    assert (s.num_heads, s.hidden_size) == (6, 384)
    with pytest.raises(OptionError, match="not a multiple"):
        resolve("bert", model, {}, num_heads=5, hidden_size=384)
    s = resolve("bert", model, {"onnxdeploy.source": str(tmp_path / "gone")})
    assert (s.num_heads, s.hidden_size) == (0, 0) and "ORT detects" in s.source


def test_a_failure_inside_ort_skips_the_step_with_a_warning(tmp_path, texts, monkeypatch):
    import onnxruntime.transformers.optimizer as ort_optimizer

    def broken(*args, **kwargs):
        raise AssertionError("shape inference failed")

    monkeypatch.setattr(ort_optimizer, "optimize_model", broken)
    src, _ = hf.exported("bert-classifier")
    report = optimize_model(src, tmp_path / "out.onnx", OptimizeOptions(
        transformer="bert", data=str(texts), latency_rounds=0, threads=1))
    (step,) = [p for p in report.passes if p.name == "transformer_bert"]
    assert not step.changed and step.fusions == {} and step.nodes_before == step.nodes_after
    assert step.note == "skipped: ORT's transformer optimizer failed (shape inference failed)"
    assert any("failed (shape inference failed); the step was skipped" in w for w in report.warnings)
    assert report.passed


def test_what_ort_warned_or_printed_is_said(tmp_path, texts):
    # the sentence-embedding export (mean pooling in the graph) breaks ORT's symbolic shape
    # inference, which ORT's SkipLayerNormalization fusion needs; ORT only prints that
    src, _ = hf.exported("st")
    out = tmp_path / "fused.onnx"
    report = optimize_model(src, out, OptimizeOptions(transformer="auto", data=str(texts),
                                                      latency_rounds=0, threads=1))
    (step,) = [p for p in report.passes if p.name == "transformer_bert"]
    assert "SkipLayerNormalization" not in step.fusions and step.fusions["Attention"] == 0
    (said,) = [w for w in report.warnings if w.startswith("transformer_bert: ORT warned")]
    assert "symbolic shape inference" in said and "failed in shape inference" in said
    assert "printed: failed in shape inference <class 'TypeError'>" in step.log
    after, before = op_counts(load_model(out)), op_counts(load_model(src))
    for op, n in step.fusions.items():
        assert _count(after, op) - _count(before, op) == n
    assert report.comparison["passed"] is True
    assert report.comparison["outputs"][0]["kind"] == "embedding"


def test_the_attention_hint_names_what_softmax_feeds():
    from onnxdeploy.optimize.transformer import attention_hint

    def graph(*nodes):
        x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 2])
        y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2])
        return helper.make_model(helper.make_graph(list(nodes), "g", [x], [y]))

    direct = graph(helper.make_node("Softmax", ["x"], ["s"]), helper.make_node("MatMul", ["s", "x"], ["y"]))
    assert attention_hint(direct) is None
    guarded = graph(helper.make_node("Softmax", ["x"], ["s"]), helper.make_node("IsNaN", ["s"], ["n"]),
                    helper.make_node("Where", ["n", "x", "s"], ["w"]), helper.make_node("MatMul", ["w", "x"], ["y"]))
    assert "Softmax feeds IsNaN/Where" in attention_hint(guarded) and "NaN rows" in attention_hint(guarded)
    other = graph(helper.make_node("Softmax", ["x"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
                  helper.make_node("MatMul", ["r", "x"], ["y"]))
    assert "Softmax feeds Relu" in attention_hint(other) and "NaN" not in attention_hint(other)


def test_a_fusion_that_changes_the_outputs_is_named_and_not_recommended(tmp_path, texts, monkeypatch):
    src, _ = hf.exported("bert-classifier")
    real_fuse = optimize_pkg.fuse

    def wrong_fuse(model, settings, workdir):
        result = real_fuse(model, settings, workdir)
        g = result.model.graph
        out = g.output[0].name
        producer = next(n for n in g.node if out in n.output)
        producer.output[list(producer.output).index(out)] = "pre_scale"
        g.initializer.append(numpy_helper.from_array(np.array(1.1, np.float32), "scale"))
        g.node.append(helper.make_node("Mul", ["pre_scale", "scale"], [out]))
        return result

    monkeypatch.setattr(optimize_pkg, "fuse", wrong_fuse)
    out = tmp_path / "fused.onnx"
    result = CliRunner().invoke(cli, ["optimize", str(src), "-o", str(out), "--transformer", "bert",
                                      "--data", str(texts), "--latency-rounds", "0", "--json"])
    assert result.exit_code == 1, result.output
    d = json.loads(result.stdout)
    assert d["comparison"]["passed"] is False and d["culprit"] == "transformer_bert"
    assert d["recommended"] is False and "failed the check" in d["recommendation"] and out.exists()
