"""OpenVINO int8 through NNCF as a candidate of ``quantize --mode auto`` (issue 23).

Real NNCF, real OpenVINO and ORT sessions, real files: the candidate is there when the extra is
installed and says why it is not when it is not; the file it writes is a QDQ ``.onnx`` with int8
weights that names OpenVINO in its metadata, and ``serve`` runs it there; a candidate that misses
the bound is rescued by the partial-int8 search through NNCF's ignored scope; and the choice
follows the judge's rule with runtime candidates in it (faster but outside the bound: never
chosen; ties: ORT before OpenVINO, float before int8).
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import onnx
import pytest
from partial_models import conv_data, conv_net, save

from onnxdeploy.quantize import QuantizeOptions, nncf_int8, quantize_model
from onnxdeploy.quantize import step as qstep

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'onnxdeploy[openvino]')")
pytest.importorskip("nncf", reason="the openvino extra is not installed (pip install 'onnxdeploy[openvino]')")

BOUND = 0.99


def _opts(data=None, **kw) -> QuantizeOptions:
    return QuantizeOptions(mode="auto", data=None if data is None else str(data), latency_budget_s=0.3,
                           latency_batch=8, threads=1, runtimes=True, **kw)


def _expected_choice(report):
    """auto's choice recomputed from its own recorded figures by the judge's rule."""
    from onnxdeploy.judge.choose import choose

    m = report.measurement
    measured = [c for c in report.candidates if c.name in m.results]
    return choose(measured, m.latency, simplicity=qstep.SIMPLICITY).name


def _qdq_weights(path) -> Counter:
    """Element types of the initializers DequantizeLinear reads (the int8 weights)."""
    model = onnx.load(str(path))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    return Counter(onnx.TensorProto.DataType.Name(inits[n.input[0]]) for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in inits)


# --------------------------------------------------------------------------- present, absent


def test_the_nncf_candidate_is_measured_on_openvino_beside_orts(builtin_onnx, tmp_path):
    out = tmp_path / "mlp.int8.onnx"
    report = quantize_model(builtin_onnx("digits-mlp"), out, _opts(allow_slower=True))
    by_name = {c.name: c for c in report.candidates}
    c = by_name[nncf_int8.NAME]
    assert (c.settings["runtime"], c.settings["precision"], c.settings["model_type"]) == \
        ("openvino", "int8", "default")
    assert c.settings["quantizer"].startswith("nncf ")
    v = report.measurement.results[nncf_int8.NAME].variant
    assert (v.runtime, v.precision) == ("openvino", "int8")
    assert c.op_counts.get("QuantizeLinear") and c.op_counts.get("DequantizeLinear") and c.int8_ops > 0
    # judged like every candidate (top-1 against float on the digits) and timed in the same run
    assert c.top1_agreement is not None and set(c.latency) == set(by_name["dynamic"].latency)
    assert report.calibration["data"].startswith("digits (training split)")
    assert report.chosen == _expected_choice(report), report.reason
    from onnxdeploy.modelfile import load_model, metadata

    meta = metadata(load_model(out))
    if report.chosen.startswith(nncf_int8.NAME):
        assert meta["onnxdeploy.runtime"] == "openvino" and meta["onnxdeploy.precision"] == "int8"
    else:
        assert "onnxdeploy.runtime" not in meta


def test_without_the_extra_there_is_no_candidate_and_the_report_says_why(builtin_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError
    report = quantize_model(builtin_onnx("digits-mlp"), tmp_path / "q.onnx", _opts(allow_slower=True))
    assert not any(c.name.startswith(nncf_int8.NAME) for c in report.candidates)
    why = [n for n in report.preprocessing if n.startswith(nncf_int8.NAME)]
    assert why == ["nncf-int8 (OpenVINO int8 through NNCF) left out: nncf not installed; "
                   "pip install 'onnxdeploy[openvino]'"]


def test_the_library_leaves_it_out_unless_asked_and_op_types_leave_it_out(builtin_onnx, tmp_path):
    report = quantize_model(builtin_onnx("digits-mlp"), tmp_path / "a.onnx",
                            QuantizeOptions(mode="auto", latency_budget_s=0.2, threads=1, op_types=("Gemm",),
                                            runtimes=True))
    assert not any(c.name.startswith(nncf_int8.NAME) for c in report.candidates)
    assert any("--op-types restricts" in n for n in report.preprocessing)


# --------------------------------------------------------------------------- rescue, file, serve


@pytest.fixture(scope="module")
def rescued(tmp_path_factory):
    """conv_net (an outlier channel conv3 writes and conv4 reads) with only the NNCF candidate:
    ORT's recipes are left out so that the search starts from NNCF's whatever the timing says."""
    from types import SimpleNamespace

    d = tmp_path_factory.mktemp("nncf-conv")
    path, data = d / "conv.onnx", d / "conv.npz"
    save(conv_net(), path)
    np.savez(data, **conv_data(64, 0))
    out = d / "conv.int8.onnx"
    mp = pytest.MonkeyPatch()
    mp.setattr(qstep, "auto_recipes", lambda *a, **k: ([], ["ORT's candidates left out by the test"]))
    try:
        report = quantize_model(path, out, _opts(data, allow_slower=True))
    finally:
        mp.undo()
    return SimpleNamespace(path=path, data=data, out=out, report=report)


def test_a_missed_nncf_candidate_is_rescued_by_the_partial_search(rescued):
    r = rescued.report
    full = next(c for c in r.candidates if c.name == nncf_int8.NAME)
    assert not full.admissible and full.min_cosine < BOUND - 0.01, full.min_cosine
    fb = r.to_dict()["fallback"]
    assert fb["base"] == nncf_int8.NAME and fb["candidate"] == nncf_int8.NAME + "-mixed"
    # the unit reading the outlier channel ranks first and is what stays float
    assert fb["ranking"][0]["node"] == "/conv4/Conv"
    assert "/conv4/Conv" in fb["kept_float"] and set(fb["kept_float"]) <= {"/conv3/Conv", "/conv4/Conv"}
    mixed = next(c for c in r.candidates if c.name == fb["candidate"])
    assert mixed.admissible and mixed.min_cosine >= BOUND
    assert mixed.settings["kept_float"] == fb["kept_float"] and mixed.settings["runtime"] == "openvino"
    # the only admissible candidate (slower models allowed): written, on OpenVINO
    assert r.chosen == mixed.name == _expected_choice(r) and r.output == str(rescued.out)


def test_the_written_file_is_qdq_int8_and_names_openvino(rescued):
    from onnxdeploy.measure import Variant
    from onnxdeploy.modelfile import load_model, metadata

    model = load_model(rescued.out)
    meta = metadata(model)
    assert (meta["onnxdeploy.runtime"], meta["onnxdeploy.precision"]) == ("openvino", "int8")
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 6
    weights = _qdq_weights(rescued.out)
    assert weights and set(weights) <= {"INT8", "UINT8"}, weights
    # the kept node reads float: no DequantizeLinear feeds conv4's weight
    produced = {o: n for n in model.graph.node for o in n.output}
    conv4 = next(n for n in model.graph.node if n.name == "/conv4/Conv")
    assert conv4.input[1] not in produced or produced[conv4.input[1]].op_type != "DequantizeLinear"
    v = Variant.of("int8", rescued.out, parent="float32", produced_by={})
    assert (v.runtime, v.precision) == ("openvino", "int8")


def test_serve_runs_the_written_int8_file_on_openvino(rescued):
    from onnxdeploy.runtimes import make_session
    from onnxdeploy.serve.app import create_app
    from onnxdeploy.serve.model import read_model_info

    assert read_model_info(rescued.out).runtime == "openvino"
    app = create_app({"MODEL_PATH": str(rescued.out), "ORT_THREADS": 1, "MAX_BATCH": 8, "LOAD_ON_START": True})
    x = conv_data(3, 7)["image"]
    r = app.test_client().post("/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.get_json()
    got = np.array(r.get_json()["outputs"]["embedding"], np.float32)
    (on_ov,) = make_session(rescued.out, runtime="openvino", precision="int8", threads=1).run(None, {"image": x})
    np.testing.assert_allclose(got, on_ov, rtol=1e-5, atol=1e-5)
    (ref,) = make_session(rescued.path, threads=1).run(None, {"image": x})
    cos = np.sum(got * ref, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= BOUND


# --------------------------------------------------------------------------- the rules


def _latency(**medians):
    from onnxdeploy.measure.latency import CONTROL, REFERENCE, Figure, Latency, _aa_noise

    def fig(batches):
        return {k: Figure(v, v, v, 10, 3, samples=(v, v, v)) for k, v in batches.items()}

    base = {"batch_1": 1.0, "batch_32": 100.0}
    figures = {REFERENCE: fig(base), CONTROL: fig(base), **{n: fig(m) for n, m in medians.items()}}
    return Latency(figures, {k: _aa_noise([v] * 3, [v] * 3) for k, v in base.items()}, 1.0, 1)


def _cand(name, admissible, size=100):
    from onnxdeploy.quantize.report import CandidateResult

    return CandidateResult(name, {}, size_bytes=size, admissible=admissible, int8_ops=4)


def test_a_faster_nncf_candidate_outside_the_bound_is_never_chosen():
    from onnxdeploy.judge.choose import choose

    lat = _latency(**{"dynamic-matmul-per-channel": {"batch_1": 0.6, "batch_32": 50.0},
                      "nncf-int8": {"batch_1": 0.3, "batch_32": 31.0},
                      "nncf-int8-mixed": {"batch_1": 0.4, "batch_32": 38.0}})
    cands = [_cand("dynamic-matmul-per-channel", True), _cand("nncf-int8", False), _cand("nncf-int8-mixed", True)]
    assert choose(cands, lat, simplicity=qstep.SIMPLICITY).name == "nncf-int8-mixed"
    cands[2].admissible = False
    assert choose(cands, lat, simplicity=qstep.SIMPLICITY).name == "dynamic-matmul-per-channel"


def test_ties_go_to_ort_before_openvino_int8():
    from onnxdeploy.judge.choose import choose

    same = {"batch_1": 0.5, "batch_32": 40.0}
    lat = _latency(**{"dynamic-matmul-per-channel": same, "nncf-int8": same})
    cands = [_cand("nncf-int8", True), _cand("dynamic-matmul-per-channel", True)]
    assert choose(cands, lat, simplicity=qstep.SIMPLICITY).name == "dynamic-matmul-per-channel"


def test_the_verdict_prefers_float_on_openvino_to_int8_on_openvino_at_equal_speed():
    """The pipeline's order of the simpler: ORT before OpenVINO, float before int8 (NNCF's int8
    comes after the float variants on OpenVINO); the sentence names runtime and precision."""
    from types import SimpleNamespace

    from onnxdeploy import pipeline as P
    from onnxdeploy.judge.http import Speed, same
    from onnxdeploy.judge.ship import Contender, decide

    report = SimpleNamespace(context={"variants": {"int8": SimpleNamespace(runtime="openvino")}})
    order = P._simplicity(report)
    assert order.index("float32-openvino") < order.index("bf16-openvino") < order.index("int8")

    def speed(x):
        return Speed("faster", x, 0.05, 0.02, 3, "requests/s", "concurrency 8")

    base = Contender("float32", 4000, speed=same(3))
    bf16 = Contender("bf16-openvino", 4000, speed=speed(2.2),
                     shown=P._shown({"runtime": "openvino", "precision": "bf16", "precision_used": "bf16"}, ""))
    int8 = Contender("int8", 4000, speed=speed(2.25),
                     shown=P._shown({"runtime": "openvino", "precision": "int8"}, "nncf-int8-mixed"))
    d = decide([base, int8, bf16], simplicity=order)
    assert d.ship == "bf16-openvino" and d.text.startswith("Ship float32 on OpenVINO (bf16): ")
    d = decide([base, int8, bf16], simplicity=P._simplicity(SimpleNamespace(context={})))
    assert d.ship == "int8"  # on ORT, int8 is the simpler of the two
    bf16.admissible, bf16.why_not = False, "misses its quality bound"
    d = decide([base, int8, bf16], simplicity=order)
    assert d.text.startswith("Ship int8 on OpenVINO (nncf-int8-mixed): ")
