"""Step 3: onnxdeploy optimize. Passes must be shown to change the graph and keep the outputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from builders import (
    conv_bias_bn_deadend,
    conv_bn_constant_params,
    if_subgraph_model,
    ml_domain_model,
    mlp_classifier,
    save,
)
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnxdeploy.cli import cli
from onnxdeploy.data import digits_split, load_data
from onnxdeploy.errors import OptionError
from onnxdeploy.modelfile import (
    classifier_info,
    external_data_files,
    load_model,
    model_size,
    op_counts,
    signature,
)
from onnxdeploy.optimize import (
    DEFAULT_PASSES,
    OptimizeOptions,
    available_passes,
    optimize_model,
    parse_passes,
)
from onnxdeploy.optimize.passes import UNKNOWN_DESCRIPTION
from onnxdeploy.runtimes import make_session, run

FAST = {"latency_rounds": 0}


def _outputs(path, feeds):
    return run(make_session(path, optimization="disable"), feeds)


def _digits_feeds():
    x = digits_split()[2]
    return {"x": x.reshape(-1, 1, 8, 8)}


@pytest.fixture
def handbuilt(tmp_path):
    return save(conv_bias_bn_deadend(), tmp_path / "handbuilt.onnx")


def test_default_passes_leave_one_conv_no_batchnorm_no_dead_end(handbuilt, tmp_path):
    out = tmp_path / "opt.onnx"
    report = optimize_model(handbuilt, out, OptimizeOptions(**FAST))
    before, after = op_counts(load_model(handbuilt)), op_counts(load_model(out))
    assert before["Conv"] == 1 and before["BatchNormalization"] == 1 and before["Add"] == 1
    assert after == {"Conv": 1, "Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1, "Relu": 1}
    # outputs match, checked here independently of the step's own verification
    feeds = _digits_feeds()
    ref, got = _outputs(handbuilt, feeds), _outputs(out, feeds)
    np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-4, rtol=0)
    assert report.passed and 0 < report.comparison["max_abs_diff"] < 1e-4
    assert report.comparison["data"] == "digits" and report.comparison["samples"] == len(feeds["x"])
    info = classifier_info(load_model(out))
    assert info is not None and info.labels == tuple(str(i) for i in range(10))
    assert report.size_bytes["after"] < report.size_bytes["before"]


def test_per_pass_report(handbuilt, tmp_path):
    report = optimize_model(handbuilt, tmp_path / "opt.onnx", OptimizeOptions(latency_rounds=1))
    rows = {p.name: p for p in report.passes}
    assert [p.name for p in report.passes] == ["fold_constants", *DEFAULT_PASSES]
    fold, dead, bias, bn = (rows[n] for n in ["fold_constants", *DEFAULT_PASSES])
    assert (fold.nodes_before, fold.nodes_after, fold.changed) == (9, 9, False)
    assert fold.note == "nothing constant to fold"
    assert (dead.nodes_before, dead.nodes_after, dead.op_delta) == (9, 7, {"Neg": -1, "Sigmoid": -1})
    assert (bias.nodes_before, bias.nodes_after, bias.op_delta) == (7, 6, {"Add": -1})
    assert bias.folded == {"Squeeze": 1} and "Squeeze" in bias.note
    assert (bn.nodes_before, bn.nodes_after, bn.op_delta) == (6, 5, {"BatchNormalization": -1})
    assert all(p.changed for p in (dead, bias, bn))
    d = report.to_dict()
    assert d["op_counts"]["before"]["BatchNormalization"] == 1
    assert "BatchNormalization" not in d["op_counts"]["after"]
    assert d["nodes"] == {"before": 9, "after": 5}
    assert d["comparison"]["passed"] is True and d["comparison"]["tolerance"] == 1e-4
    assert d["culprit"] is None and d["warnings"] == []
    assert set(d["latency_ms"]) == {"before", "after"}
    assert set(d["latency_ms"]["after"]) == {"batch_1", "batch_32"}
    assert all(v > 0 for v in d["latency_ms"]["after"].values())


def test_without_folding_the_bias_squeeze_blocks_the_batchnorm_fusion(handbuilt, tmp_path):
    report = optimize_model(handbuilt, tmp_path / "opt.onnx",
                            OptimizeOptions(fold_constants=False, **FAST))
    rows = {p.name: p for p in report.passes}
    assert "fold_constants" not in rows
    assert rows["fuse_add_bias_into_conv"].op_delta == {"Add": -1, "Squeeze": 1}
    assert rows["fuse_bn_into_conv"].changed is False
    assert "no BatchNormalization directly follows a Conv" in rows["fuse_bn_into_conv"].note
    assert report.passed


def test_constant_node_batchnorm_does_not_grow(tmp_path):
    src = save(conv_bn_constant_params(), tmp_path / "cbn.onnx")
    folded = optimize_model(src, tmp_path / "a.onnx", OptimizeOptions(**FAST))
    unfolded = optimize_model(src, tmp_path / "b.onnx", OptimizeOptions(fold_constants=False, **FAST))
    assert folded.nodes["before"] == 6
    # the fusion on its own replaces BatchNorm by runtime arithmetic on the Constant parameters
    assert unfolded.nodes["after"] > unfolded.nodes["before"]
    assert op_counts(load_model(tmp_path / "a.onnx")) == {"Conv": 1}
    assert folded.passes[0].name == "fold_constants" and folded.passes[0].folded == {"Constant": 4}
    assert folded.passed and unfolded.passed


def test_quantized_model(tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    src = save(conv_bias_bn_deadend(), tmp_path / "f32.onnx")
    q = tmp_path / "int8.onnx"
    quantize_dynamic(str(src), str(q))
    before = op_counts(load_model(q))
    assert before.get("ConvInteger") == 1 and before.get("DynamicQuantizeLinear", 0) >= 1
    report = optimize_model(q, tmp_path / "opt.onnx", OptimizeOptions(**FAST))
    after = op_counts(load_model(tmp_path / "opt.onnx"))
    assert report.passed
    assert after["ConvInteger"] == 1 and after["DynamicQuantizeLinear"] == before["DynamicQuantizeLinear"]
    assert "Sigmoid" not in after and "Neg" not in after
    assert report.size_bytes["after"] <= report.size_bytes["before"]


def test_static_qdq_weights_stay_quantized(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": digits_split()[0][:16]}])

        def get_next(self):
            return next(self.items, None)

    src = save(mlp_classifier(hidden=64), tmp_path / "f32.onnx")
    q = tmp_path / "qdq.onnx"
    quantize_static(str(src), str(q), Reader(), quant_format=QuantFormat.QDQ)
    before = op_counts(load_model(q))
    report = optimize_model(q, tmp_path / "opt.onnx", OptimizeOptions(**FAST))
    after = op_counts(load_model(tmp_path / "opt.onnx"))
    # folding DequantizeLinear of int8 weights would turn them back into float32
    assert after["DequantizeLinear"] == before["DequantizeLinear"]
    assert report.size_bytes["after"] <= model_size(q) < model_size(src)
    assert report.passed


def test_tolerance_failure_names_the_culprit_and_keeps_the_file(handbuilt, tmp_path):
    out = tmp_path / "opt.onnx"
    result = CliRunner().invoke(cli, [
        "optimize", str(handbuilt), "-o", str(out), "--tolerance", "1e-12", "--latency-rounds", "0", "--json"])
    assert result.exit_code == 1, result.output
    assert out.exists()
    report = json.loads(result.stdout)
    assert report["comparison"]["passed"] is False
    assert report["comparison"]["max_abs_diff"] > 1e-12
    assert report["culprit"] == "fuse_bn_into_conv"
    diffs = {p["name"]: p["max_abs_diff"] for p in report["passes"]}
    # the dead-end removal replays exactly; the BatchNorm fusion changes float rounding
    assert diffs["fold_constants"] == 0.0 and diffs["eliminate_deadend"] == 0.0
    assert diffs["fuse_bn_into_conv"] > 1e-12
    assert diffs["fuse_bn_into_conv"] == report["comparison"]["max_abs_diff"]


def test_relative_tolerance_is_applied(handbuilt, tmp_path):
    strict = optimize_model(handbuilt, tmp_path / "a.onnx", OptimizeOptions(tolerance=0.0, **FAST))
    loose = optimize_model(handbuilt, tmp_path / "b.onnx",
                           OptimizeOptions(tolerance=1e-6, rtol=1e-3, **FAST))
    assert not strict.passed and strict.culprit is not None
    assert loose.passed and loose.comparison["rtol"] == 1e-3


def test_unknown_pass_suggests_the_closest_names(handbuilt, tmp_path):
    out = tmp_path / "opt.onnx"
    result = CliRunner().invoke(cli, ["optimize", str(handbuilt), "-o", str(out),
                                      "--passes", "eliminate_deadend,fuse_bn_into_cnv"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown pass 'fuse_bn_into_cnv'; did you mean fuse_bn_into_conv" in result.stderr
    assert not out.exists()
    with pytest.raises(OptionError, match="did you mean eliminate_identity"):
        parse_passes("eliminate_identiy")


def _invalid_graph(path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["not_defined_anywhere"], ["y"])], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(path))


@pytest.mark.parametrize("kind, message", [
    ("text", "not an ONNX model"),
    ("missing", "no such file"),
    ("invalid", "invalid ONNX graph"),
])
def test_bad_input_exits_2_without_output(tmp_path, kind, message):
    src = tmp_path / "in.onnx"
    if kind == "text":
        src.write_text("this is not a model\n" * 10)
    elif kind == "invalid":
        _invalid_graph(src)
    out = tmp_path / "out" / "opt.onnx"
    out.parent.mkdir()  # the output's directory must exist (a missing one is its own error)
    result = CliRunner().invoke(cli, ["optimize", str(src), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.strip().count("\n") == 0
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))


def test_list_passes():
    result = CliRunner().invoke(cli, ["optimize", "--list-passes", "--json"])
    assert result.exit_code == 0
    listed = json.loads(result.stdout)
    import onnxoptimizer

    assert set(listed["passes"]) == set(onnxoptimizer.get_available_passes())
    assert listed["default"] == list(DEFAULT_PASSES)
    assert all(listed["passes"][name] != UNKNOWN_DESCRIPTION for name in DEFAULT_PASSES)
    assert available_passes()["fuse_bn_into_conv"].startswith("Fold a BatchNormalization")
    text = CliRunner().invoke(cli, ["optimize", "--list-passes"]).output
    assert "eliminate_deadend *" in text


def test_if_subgraph_identity_removed(tmp_path):
    src = save(if_subgraph_model(), tmp_path / "if.onnx")
    opts = OptimizeOptions(passes="eliminate_identity,eliminate_deadend", **FAST)
    report = optimize_model(src, tmp_path / "opt.onnx", opts)
    after = op_counts(load_model(tmp_path / "opt.onnx"))
    assert op_counts(load_model(src))["Identity"] == 1 and "Identity" not in after
    assert after["If"] == 1 and report.passed
    # both branches: a batch summing above zero and one below
    x = np.abs(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    for feeds in ({"x": x}, {"x": -x}):
        np.testing.assert_allclose(_outputs(tmp_path / "opt.onnx", feeds)["y"],
                                   _outputs(src, feeds)["y"], atol=1e-6)


def test_non_default_domain(tmp_path):
    src = save(ml_domain_model(), tmp_path / "ml.onnx")
    report = optimize_model(src, tmp_path / "opt.onnx",
                            OptimizeOptions(passes="eliminate_identity", **FAST))
    after = op_counts(load_model(tmp_path / "opt.onnx"))
    assert after == {"Relu": 1, "ai.onnx.ml.Scaler": 1}
    assert report.passed and report.comparison["data"] == "random"


def test_external_data_model(tmp_path):
    src = save(conv_bias_bn_deadend(channels=64), tmp_path / "ext.onnx", external_data=True)
    assert external_data_files(src)
    out = tmp_path / "o" / "opt.onnx"
    report = optimize_model(src, out, OptimizeOptions(**FAST))
    assert report.passed
    assert external_data_files(out) and all(p.exists() for p in external_data_files(out))
    assert op_counts(load_model(out))["Conv"] == 1
    assert report.size_bytes["after"] == model_size(out)


def test_ort_levels(handbuilt, tmp_path):
    basic = optimize_model(handbuilt, tmp_path / "b.onnx", OptimizeOptions(ort_level="basic", **FAST))
    assert basic.passes[-1].name == "ort_basic" and basic.passed
    assert not any("tied to onnxruntime" in w for w in basic.warnings)
    full = optimize_model(handbuilt, tmp_path / "a.onnx", OptimizeOptions(ort_level="all", **FAST))
    assert full.passed and any("tied to onnxruntime" in w for w in full.warnings)
    assert classifier_info(load_model(tmp_path / "a.onnx")) is not None


def test_cli_renders_the_report(handbuilt, tmp_path):
    report_path = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["optimize", str(handbuilt), "-o", str(tmp_path / "o.onnx"),
                                      "--latency-rounds", "0", "--report", str(report_path)])
    assert result.exit_code == 0, result.output
    for text in ("fuse_bn_into_conv", "−1 BatchNormalization", "PASSED", "9 -> 5"):
        assert text in result.output
    assert json.loads(report_path.read_text())["comparison"]["passed"] is True


def test_random_data_and_dims(tmp_path):
    src = save(mlp_classifier(), tmp_path / "mlp.onnx")
    report = optimize_model(src, tmp_path / "o.onnx", OptimizeOptions(data="random", count=7, **FAST))
    assert report.comparison["data"] == "random" and report.comparison["samples"] == 7
    assert len(load_data("random", signature(load_model(src)), count=7)) == 7
    assert all(not p.changed for p in report.passes)


def test_exported_builtin_has_nothing_to_fuse(builtin_onnx, tmp_path):
    src = builtin_onnx("digits-cnn")
    out = tmp_path / "cnn.opt.onnx"
    report = optimize_model(src, out, OptimizeOptions(**FAST))
    assert report.passed and report.comparison["max_abs_diff"] == 0.0
    assert [p.changed for p in report.passes] == [False] * len(report.passes)
    assert report.op_counts["before"] == report.op_counts["after"]
    assert "Conv" in report.op_counts["before"] and "BatchNormalization" not in report.op_counts["before"]
    notes = {p.name: p.note for p in report.passes}
    assert "already folded it into Conv" in notes["fuse_bn_into_conv"]
    assert notes["eliminate_deadend"] == "every node contributes to a graph output"
    assert classifier_info(load_model(out)) == classifier_info(load_model(src))
    # provenance the exporter put on nodes survives the passes
    assert [n.metadata_props for n in load_model(out).graph.node] == \
        [n.metadata_props for n in load_model(src).graph.node]
    assert load_model(out).graph.metadata_props == load_model(src).graph.metadata_props


def test_a_pass_that_breaks_the_graph_is_skipped(handbuilt, tmp_path, monkeypatch):
    import onnxoptimizer

    real = onnxoptimizer.optimize

    def broken(model, passes, fixed_point=False):
        new = real(model, passes, fixed_point=fixed_point)
        if passes == ["fuse_bn_into_conv"]:
            del new.graph.node[0]  # the Conv: its output is now undefined, the checker refuses it
        return new

    monkeypatch.setattr(onnxoptimizer, "optimize", broken)
    report = optimize_model(handbuilt, tmp_path / "o.onnx", OptimizeOptions(**FAST))
    row = report.passes[-1]
    assert row.name == "fuse_bn_into_conv" and not row.changed
    assert row.note.startswith("skipped: it produced an invalid graph")
    assert any("fuse_bn_into_conv: produced an invalid graph" in w for w in report.warnings)
    assert report.passed and op_counts(load_model(tmp_path / "o.onnx"))["BatchNormalization"] == 1


def test_data_that_does_not_fit_exits_2_without_output(tmp_path):
    src = save(ml_domain_model(), tmp_path / "ml.onnx")
    out = tmp_path / "o.onnx"
    result = CliRunner().invoke(cli, ["optimize", str(src), "-o", str(out), "--data", "digits"])
    assert result.exit_code == 2 and result.stderr.startswith("DataError: data 'digits'")
    assert not out.exists()
