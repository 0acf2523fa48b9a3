"""The outlier split: a MatMul input's few huge channels in float, the rest int8.

The model is the tiny BERT of test_quantize_fallback (torch-exported, with the "outlier feature"
of trained transformers in its last FFN): per-channel int8 misses the cosine bound there, and
splitting the outlier channel off keeps every weight MatMul int8 within it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_quantize_fallback import BOUND, MARGIN, _opts, outlier_bert  # noqa: F401 - the shared fixture

from onnxdeploy.data import load_data
from onnxdeploy.modelfile import signature
from onnxdeploy.quantize import quantize_model
from onnxdeploy.quantize.fallback import weight_matmuls
from onnxdeploy.quantize.outliers import (
    MAX_CHANNELS,
    OUTLIER_SUFFIX,
    outlier_channels,
    split_outliers,
)
from onnxdeploy.quantize.prepare import prepare

SPLIT = "dynamic-matmul-per-channel-outliers"


def test_outlier_channels_are_the_few_far_above_the_median():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 10, 64)).astype(np.float32)
    x[1, 3, 7] = 40.0
    x[2, 5, 50] = -35.0
    idx, peaks, median = outlier_channels(x)
    assert idx.tolist() == [7, 50] and peaks.tolist() == pytest.approx([40.0, 35.0])
    assert 2 < median < 4
    # no channel stands out: nothing to split
    assert outlier_channels(rng.standard_normal((8, 64)))[0].size == 0
    # too few channels to call any of them an outlier
    small = rng.standard_normal((8, 16))
    small[0, 0] = 100.0
    assert outlier_channels(small)[0].size == 0
    # at most MAX_CHANNELS a MatMul, the largest ones
    many = rng.standard_normal((8, 256))
    many[0, :20] = np.arange(20) + 50.0
    idx, _, _ = outlier_channels(many)
    assert idx.tolist() == list(range(20 - MAX_CHANNELS, 20))


def test_the_split_is_exact_in_float_and_finds_the_outlier_matmul(outlier_bert, tmp_path):  # noqa: F811
    path, data, culprit = outlier_bert
    model = onnx.load(str(path))
    ds = load_data(str(data), signature(model))
    out = tmp_path / "split.onnx"
    # as the step does it: on the pre-processed model (its biases are plain initializers)
    prepared = prepare(model, tmp_path, path.name).path
    split = split_outliers(prepared, out, ds, tmp_path, threads=1)
    assert culprit in [s.node for s in split.layers]
    layer = next(s for s in split.layers if s.node == culprit)
    assert 1 <= len(layer.channels) <= MAX_CHANNELS and max(layer.channel_max) > 6 * layer.median_max
    assert split.matmuls == len(weight_matmuls(model))
    # the rewrite changes no number beyond float rounding
    feeds = ds.slice(0, len(ds))
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    # torch writes MatMul then a bias Add: the outlier product is added after the bias, so ORT
    # can still fuse the int8 MatMul with its bias
    written = onnx.load(str(out))
    assert any(n.name.endswith("/add_outliers") for n in written.graph.node)
    # the weight is stored once: the split MatMul's original weight is gone from the file
    names = {i.name for i in written.graph.initializer}
    w = next(n.input[1] for n in model.graph.node if n.name == culprit)
    assert w not in names


def test_auto_keeps_the_outlier_model_in_full_int8_within_the_bound(outlier_bert, tmp_path):  # noqa: F811
    path, data, culprit = outlier_bert
    out = tmp_path / "bert.int8.onnx"
    report = quantize_model(path, out, _opts(data, allow_slower=True))
    by_name = {c.name: c for c in report.candidates}
    split, plain = by_name[SPLIT], by_name["dynamic-matmul-per-channel"]
    assert plain.min_cosine < BOUND - MARGIN and split.min_cosine >= BOUND, (plain.min_cosine, split.min_cosine)
    assert split.admissible and report.chosen == SPLIT and report.fallback is None
    info = split.settings["outlier_split"]
    assert culprit in [s["node"] for s in info["split"]] and "computed in float" in info["summary"]
    # every weight MatMul is int8 in the written file; only the small outlier products are float
    written = onnx.load(str(out))
    ops = Counter(n.op_type for n in written.graph.node)
    weights = len(weight_matmuls(onnx.load(str(path))))
    assert ops["MatMulInteger"] == weights
    outlier_products = [n for n in written.graph.node
                        if n.op_type == "MatMul" and n.name.endswith(OUTLIER_SUFFIX)]
    assert len(outlier_products) == len(info["split"])
    float_before = Counter(n.op_type for n in onnx.load(str(path)).graph.node)["MatMul"]
    assert ops["MatMul"] == float_before - weights + len(info["split"])


def test_a_matmul_without_a_bias_gets_its_sum_in_place_and_stays_exact(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from onnxdeploy.data import DataSet

    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
         helper.make_node("Relu", ["h"], ["y"], name="act")],
        "no-bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 48])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    x = rng.standard_normal((16, 64)).astype(np.float32)
    x[:, 5] *= 50.0  # one channel 50x the rest, in every row
    ds = DataSet(name="t", inputs={"x": x}, labels=None, batched=frozenset({"x"}))
    out = tmp_path / "split.onnx"
    split = split_outliers(src, out, ds, tmp_path, threads=1)
    assert [s.channels for s in split.layers] == [[5]]
    nodes = {n.name: n for n in onnx.load(str(out)).graph.node}
    assert "proj/sum" in nodes and nodes["proj/sum"].output[0] == "h"
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
