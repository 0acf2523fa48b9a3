"""The measurement stage: A/A equality, a slowed-down model found slower, metrics by output kind."""

from __future__ import annotations

import numpy as np
from builders import mlp_classifier, mlp_with_extra_work, save

from onnxdeploy.judge import inprocess
from onnxdeploy.judge.words import speed_words
from onnxdeploy.measure import Variant, build_reference, measure_variants
from onnxdeploy.measure.latency import CONTROL, REFERENCE
from onnxdeploy.measure.numeric import NOT_EXERCISED, drift, equivalence, metric, output_kinds


def _variant(name, path):
    return Variant.of(name, path, parent=REFERENCE, produced_by={"step": "test"})


def test_two_copies_of_one_model_are_equal_and_a_slower_one_is_slower(tmp_path):
    src = save(mlp_classifier(), tmp_path / "a.onnx")
    copy = save(mlp_classifier(), tmp_path / "copy.onnx")
    slow = save(mlp_with_extra_work(), tmp_path / "slow.onnx")
    ref = build_reference(src, data="digits", threads=1)
    m = measure_variants(ref, _variant(REFERENCE, src), [_variant("copy", copy), _variant("slow", slow)],
                         max_disagreement=0.01, budget_s=1.0)
    lat = m.latency
    assert inprocess.speed(lat, "copy") == "equal", (lat.speedup("copy"), lat.margin)
    assert inprocess.speed(lat, "slow") == "slower", (lat.speedup("slow"), lat.margin)
    assert all(s < 1 / (1 + lat.margin) for s in lat.speedup("slow").values())
    # the slow model computes the same logits: its outputs pass, only its speed differs
    assert m.results["slow"].comparison.passed is True and m.results["slow"].comparison.max_abs_diff < 1e-5
    assert m.results["copy"].variant.sha256 == m.results[REFERENCE].variant.sha256
    d = lat.to_dict()
    assert set(d["variants"]) == {REFERENCE, "copy", "slow"} and set(d["control"]) == {"batch_1", "batch_32"}
    for fig in d["variants"]["copy"].values():
        assert fig["min_ms"] <= fig["median_ms"] <= fig["max_ms"] and fig["rounds"] >= 3
    assert CONTROL not in d["variants"] and d["noise"] == max(d["noise_by_batch"].values())
    # auto's choice never takes the slow one, however much smaller it is
    from types import SimpleNamespace

    from onnxdeploy.judge.choose import choose

    cands = [SimpleNamespace(name="copy", size_bytes=100, admissible=True),
             SimpleNamespace(name="slow", size_bytes=50, admissible=True)]
    assert choose(cands, lat, simplicity=["copy", "slow"]).name == "copy"


def test_speed_words():
    assert speed_words(2.1, 0.05) == "2.1x faster"
    assert speed_words(1 / 5.2, 0.05) == "5.2x slower"
    assert speed_words(1.07, 0.05) == "1.07x faster" and speed_words(23.4, 0.05) == "23x faster"
    assert speed_words(1.04, 0.06) == "equal (within 6% noise)"
    assert speed_words(None, 0.05) == "not measured"


def test_metrics_by_output_kind():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((64, 384)).astype(np.float32)
    noisy = emb + 0.15 * rng.standard_normal(emb.shape).astype(np.float32)
    # an embedding is no class score: judged by cosine, not argmax
    assert output_kinds({"e": emb}, task="sentence-embedding", labels=False) == {"e": "embedding"}
    kinds = output_kinds({"e": emb}, task=None, labels=False)
    assert kinds == {"e": "tensor"}
    cmp_ = drift({"e": emb}, {"e": noisy}, kinds, max_disagreement=0.01, min_cosine=0.97)
    assert cmp_.passed is True and cmp_.top1_agreement is None and 0.97 < cmp_.min_cosine < 1
    # a classifier's [batch, classes] output is judged by top-1
    logits = rng.standard_normal((64, 10)).astype(np.float32)
    kinds = output_kinds({"l": logits}, task="classification", labels=False)
    assert kinds == {"l": "class_scores"}
    assert drift({"l": logits}, {"l": logits}, kinds, max_disagreement=0.0).top1_agreement == 1.0
    # per-timestep probabilities: per-position argmax agreement
    p = rng.random((8, 40, 30)).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    kinds = output_kinds({"p": p}, task=None, labels=False)
    assert kinds == {"p": "sequence_scores"}
    assert drift({"p": p}, {"p": p * 1.001}, kinds, max_disagreement=0.01).outputs[0].agreement == 1.0
    # a probability map near zero on this data: neither pass nor failure
    tiny = np.full((4, 1, 32, 32), 1e-8, np.float32) + rng.random((4, 1, 32, 32)).astype(np.float32) * 1e-8
    m = metric("map", "tensor", tiny, tiny + 1.2e-5)
    assert not m.exercised
    cmp_ = drift({"map": tiny}, {"map": tiny + 1.2e-5}, {"map": "tensor"}, max_disagreement=0.01)
    assert cmp_.passed is None and cmp_.outputs[0].to_dict()["note"] == NOT_EXERCISED
    # SNR and allclose with an atol from the output's own scale
    m = metric("e", "embedding", emb, emb * 1.0001)
    assert m.allclose and m.snr_db > 70
    eq = equivalence({"e": emb}, {"e": emb + 1e-3}, {"e": "embedding"}, atol=1e-4)
    assert eq.passed is False and "output 'e'" in eq.failures[0] and "atol" in eq.failures[0]


def test_zipmap_outputs_are_class_scores():
    rows = [{0: 0.2, 1: 0.8}, {0: 0.9, 1: 0.1}]
    kinds = output_kinds({"label": np.array([1, 0]), "probabilities": rows}, task=None, labels=False)
    assert kinds == {"label": "labels", "probabilities": "class_scores"}
    cmp_ = drift({"label": np.array([1, 0]), "probabilities": rows},
                 {"label": np.array([1, 1]), "probabilities": [{0: 0.6, 1: 0.4}, {0: 0.4, 1: 0.6}]},
                 kinds, max_disagreement=0.01)
    assert cmp_.passed is False and len(cmp_.failures) == 2


def test_one_figure_under_two_names():
    # auto's "dynamic" is both the pipeline's int8-dynamic and, when chosen, its int8
    from onnxdeploy.measure.latency import Figure, Latency

    fig = {"batch_1": Figure(1.0, 0.9, 1.1, 10, 3, samples=(1.0, 0.9, 1.1))}
    lat = Latency({REFERENCE: fig, CONTROL: fig, "dynamic": fig, "static-qdq": fig}, {"batch_1": 0.0}, 1.0, 1)
    named = lat.renamed({"int8-dynamic": "dynamic", "int8": "dynamic"})
    assert set(named.figures) == {REFERENCE, CONTROL, "int8-dynamic", "int8"}
    assert named.median("int8") == named.median("int8-dynamic") == {"batch_1": 1.0}


def test_served_quality_below_the_bound_keeps_a_variant_from_shipping():
    from types import SimpleNamespace

    from onnxdeploy.pipeline import _within_bounds

    names = {"float32": REFERENCE, "int8": "dynamic-matmul-per-channel-mixed"}
    m = SimpleNamespace(results={REFERENCE: SimpleNamespace(), "dynamic-matmul-per-channel-mixed": SimpleNamespace()})
    quant = SimpleNamespace(candidates=[SimpleNamespace(name="dynamic-matmul-per-channel-mixed",
                                                        admissible=True, failures=[])])
    bench = SimpleNamespace(quality={"float32": {"passed": True}, "int8": {"passed": True, "min_cosine": 0.995}})
    report = SimpleNamespace(context={"names": names, "measurement": m, "bench": bench},
                             results={"quantize": quant})
    assert _within_bounds(report)["int8"] == ""
    bench.quality["int8"].update(passed=False, min_cosine=0.97)  # in process it passed; served it did not
    why = _within_bounds(report)
    assert "served" in why["int8"] and "0.97" in why["int8"] and why["float32"] == ""
    # without a served quality pass the in-process verdict stands
    del report.context["bench"]
    assert _within_bounds(report)["int8"] == ""
