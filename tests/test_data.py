"""Data sources: digits, .npz, random; errors name what does not fit."""

from __future__ import annotations

import numpy as np
import pytest
from builders import mlp_classifier, two_input_int_model
from onnx import TensorProto, helper

from onnxdeploy.data import DEFAULT_RANDOM_COUNT, digits_split, load_data, parse_dims
from onnxdeploy.errors import DataError, OptionError
from onnxdeploy.modelfile import signature


def _conv_signature():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])])
    return signature(helper.make_model(graph))


def test_digits_split_is_fixed_and_stratified():
    x_tr, y_tr, x_te, y_te = digits_split()
    assert x_tr.shape == (1347, 64) and x_te.shape == (450, 64)
    assert x_te.dtype == np.float32 and 0.0 <= x_te.min() and x_te.max() <= 1.0
    assert set(np.unique(y_te)) == set(range(10))
    again = digits_split.__wrapped__()
    np.testing.assert_array_equal(again[3], y_te)


@pytest.mark.parametrize("sig_factory, shape", [
    (lambda: signature(mlp_classifier()), (450, 64)),
    (_conv_signature, (450, 1, 8, 8)),
])
def test_digits_fits_flat_and_image_inputs(sig_factory, shape):
    data = load_data("digits", sig_factory())
    assert data.inputs["x"].shape == shape and data.labels.shape == (450,)
    assert len(data) == 450


def test_digits_refuses_two_input_model():
    with pytest.raises(DataError, match="one input; this model has 2"):
        load_data("digits", signature(two_input_int_model()))


def test_default_falls_back_to_random_when_digits_does_not_fit():
    data = load_data(None, signature(two_input_int_model()))
    assert data.name == "random" and data.labels is None


def test_random_respects_dtypes_and_dims():
    data = load_data("random", signature(two_input_int_model()), count=5)
    assert data.inputs["x"].dtype == np.float32 and data.inputs["x"].shape == (5, 4)
    assert data.inputs["idx"].dtype == np.int64 and data.inputs["idx"].max() < 10
    default = load_data("random", signature(two_input_int_model()))
    assert len(default) == DEFAULT_RANDOM_COUNT


def test_random_scalar_and_named_dims():
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])])
    sig = signature(helper.make_model(graph))
    data = load_data("random", sig, dims={"seq": 3}, count=4)
    assert data.inputs["x"].shape == (4, 3) and data.inputs["s"].shape == ()
    feeds = [f for f, _ in data.batches(3)]
    assert [f["x"].shape[0] for f in feeds] == [3, 1]
    assert all(f["s"].shape == () for f in feeds)


def test_npz_with_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((6, 4), np.float32), idx=np.arange(6), labels=np.arange(6) % 3)
    data = load_data(path, signature(two_input_int_model()))
    assert len(data) == 6 and data.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert data.inputs["idx"].dtype == np.int64


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((6, 4), np.float32)}, "no array for input"),
    ({"x": np.zeros((6, 5), np.float32), "idx": np.zeros(6, np.int64)}, "axis 1 must be 4"),
    ({"x": np.zeros((6, 4), np.float32), "idx": np.zeros(6, np.float32)}, "expects int64"),
    ({"x": np.zeros((6, 4), np.float32), "idx": np.zeros(5, np.int64)}, "disagree on the number"),
    ({"x": np.zeros((6, 4), np.float32), "idx": np.zeros(6, np.int64), "z": np.zeros(1)}, "match no model input"),
    ({"x": np.zeros((6, 4), np.float32), "idx": np.zeros(6, np.int64), "labels": np.zeros(4, np.int64)},
     "4 labels for 6 samples"),
])
def test_npz_that_does_not_fit(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_data(path, signature(two_input_int_model()))


def test_unknown_source_and_bad_dims(tmp_path):
    with pytest.raises(DataError, match="unknown data source"):
        load_data("imagenet", signature(mlp_classifier()))
    with pytest.raises(OptionError, match="NAME=VALUE"):
        parse_dims(["seq:3"])
    assert parse_dims(["seq=3", "h=2"]) == {"seq": 3, "h": 2}


def test_npz_single_array_for_single_input(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, pixels=np.ones((3, 64), np.float64))
    data = load_data(path, signature(mlp_classifier()))
    assert data.inputs["x"].dtype == np.float32 and len(data) == 3
