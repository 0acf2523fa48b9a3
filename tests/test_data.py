"""Data sources: digits, .npz, random; errors name what does not fit."""

from __future__ import annotations

import numpy as np
import pytest
from builders import mlp_classifier, two_input_int_model
from onnx import TensorProto, helper

from onnxdeploy.data import (
    DEFAULT_RANDOM_COUNT,
    DataSet,
    digits_split,
    load_data,
    parse_dims,
    parse_int_ranges,
)
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
    ({"x": np.zeros((0, 4), np.float32), "idx": np.zeros(0, np.int64)}, "hold no samples"),
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


def test_npz_unnamed_array_for_single_input(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, np.ones((3, 64), np.float64))  # np.savez names it arr_0
    data = load_data(path, signature(mlp_classifier()))
    assert data.inputs["x"].dtype == np.float32 and len(data) == 3


def test_npz_wrongly_named_array_is_an_error_naming_it(tmp_path):
    # It used to be fed to the one input anyway (issue 15): a misnamed array is a mistake.
    path = tmp_path / "one.npz"
    np.savez(path, pixels=np.ones((3, 64), np.float32))
    with pytest.raises(DataError, match="the file has pixels, the model needs x"):
        load_data(path, signature(mlp_classifier()))


def _model(inputs, outputs, nodes):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _int32_model():
    return _model([helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "seq"])],
                  [helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", "seq"])],
                  [helper.make_node("Identity", ["ids"], ["y"])])


def test_npz_int64_for_int32_is_cast_only_when_lossless(tmp_path):
    ok, bad = tmp_path / "ok.npz", tmp_path / "bad.npz"
    np.savez(ok, ids=np.array([[1, 2], [3, 2**31 - 1]], np.int64))
    np.savez(bad, ids=np.array([[1, 2**31]], np.int64))
    data = load_data(ok, signature(_int32_model()))
    assert data.inputs["ids"].dtype == np.int32 and data.inputs["ids"][1, 1] == 2**31 - 1
    with pytest.raises(DataError, match=r"int64 with values in \[1, 2147483648\]; the model expects int32"):
        load_data(bad, signature(_int32_model()))


def test_npz_float_into_int_input_is_refused(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, ids=np.ones((2, 3), np.float32))
    with pytest.raises(DataError, match="array 'ids' is float32; the model expects int32"):
        load_data(path, signature(_int32_model()))


def test_npz_float64_into_float32_is_fine_but_overflow_is_not(tmp_path):
    fine, huge = tmp_path / "fine.npz", tmp_path / "huge.npz"
    np.savez(fine, x=np.full((2, 64), 0.1, np.float64))
    np.savez(huge, x=np.full((2, 64), 1e300, np.float64))
    data = load_data(fine, signature(mlp_classifier()))
    assert data.inputs["x"].dtype == np.float32
    with pytest.raises(DataError, match="beyond the range of float32"):
        load_data(huge, signature(mlp_classifier()))


@pytest.mark.parametrize("content, message", [
    (b"x,y\n1,2\n", "not a readable .npz file (not a zip archive of arrays)"),
    (None, "a single .npy array, not an .npz"),
])
def test_file_that_is_not_an_npz_is_one_line(tmp_path, content, message):
    path = tmp_path / "data.npz"
    if content is None:
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_data(path, signature(mlp_classifier()))
    text = str(err.value)
    assert message in text and "\n" not in text and "allow_pickle" not in text


def test_npz_with_object_array_says_so_without_pickle_advice(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="holds Python objects") as err:
        load_data(path, signature(mlp_classifier()))
    assert "allow_pickle" not in str(err.value)


def test_npz_named_dims_must_agree(tmp_path):
    model = _model(
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", "seq"]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_node("Add", ["a", "b"], ["y"])])
    path = tmp_path / "d.npz"
    np.savez(path, a=np.zeros((2, 3), np.float32), b=np.zeros((2, 4), np.float32))
    with pytest.raises(DataError, match="array 'b' axis 1 \\(seq\\) is 4 but array 'a' axis 1 \\(seq\\) is 3"):
        load_data(path, signature(model))


def test_random_per_dtype_and_int_range():
    dtypes = [TensorProto.BOOL, TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
              TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
              TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE]
    inputs = [helper.make_tensor_value_info(f"i{k}", t, ["batch", 3]) for k, t in enumerate(dtypes)]
    outputs = [helper.make_tensor_value_info(f"o{k}", t, ["batch", 3]) for k, t in enumerate(dtypes)]
    nodes = [helper.make_node("Identity", [f"i{k}"], [f"o{k}"]) for k in range(len(dtypes))]
    sig = signature(_model(inputs, outputs, nodes))
    data = load_data("random", sig, count=200, int_ranges=parse_int_ranges(["i4=100:103", "i8=7:8"]))
    for k, t in enumerate(dtypes):
        arr = data.inputs[f"i{k}"]
        assert arr.dtype == helper.tensor_dtype_to_np_dtype(t) and arr.shape == (200, 3)
    assert set(np.unique(data.inputs["i4"])) == {100, 101, 102}
    assert set(np.unique(data.inputs["i8"])) == {7}
    assert set(np.unique(data.inputs["i0"])) == {False, True}
    assert data.inputs["i1"].min() >= 0 and data.inputs["i1"].max() < 10
    assert any("prove that the steps run" in n for n in data.notes)
    assert "i4 in [100, 103)" in data.notes[0]


@pytest.mark.parametrize("items, message", [
    (["x=1"], "INPUT=LO:HI"), (["x=5:5"], "LO < HI"), (["x"], "INPUT=LO:HI"), (["x=a:b"], "INPUT=LO:HI"),
])
def test_parse_int_ranges_refuses_bad_values(items, message):
    with pytest.raises(OptionError, match=message):
        parse_int_ranges(items)


@pytest.mark.parametrize("kwargs, message", [
    ({"int_ranges": {"nope": (0, 2)}}, "--int-range nope: no such input"),
    ({"int_ranges": {"x": (0, 2)}}, "input 'x' is float32; --int-range is for integer inputs"),
    ({"int_ranges": {"ids": (-1, 300)}}, "outside the range of uint8"),
    ({"dims": {"sequence": 4}}, "no dimension named 'sequence'; its named dims are batch, seq"),
    ({"dims": {"x:1": 4}}, "axis 1 of 'x' is fixed at 4"),
    ({"dims": {"y:0": 4}}, "no input 'y' with an axis 0"),
])
def test_random_options_that_name_nothing_are_errors(kwargs, message):
    model = _model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("ids", TensorProto.UINT8, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_node("Identity", ["x"], ["y"])])
    with pytest.raises(OptionError, match=message):
        load_data("random", signature(model), **kwargs)


def test_parse_dims_takes_input_axis_form():
    assert parse_dims(["x:3=320", "a:b:1=2", "seq=4"]) == {"x:3": 320, "a:b:1": 2, "seq": 4}
    with pytest.raises(OptionError, match="INPUT:AXIS=VALUE"):
        parse_dims(["x:w=3"])


def _state_model():
    """x [batch, 4], state [2, batch, 3] (batch on axis 1), sr 0-d -> y [batch, 4], s2 [2, batch, 3]."""
    return _model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 3]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("s2", TensorProto.FLOAT, [2, "batch", 3])],
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Neg", ["state"], ["s2"])])


def test_batch_axis_not_first_is_sliced_tiled_and_joined():
    data = load_data("random", signature(_state_model()), count=5)
    assert data.batch_axes == {"x": 0, "state": 1, "sr": None} and data.batched == {"x", "state"}
    assert data.inputs["state"].shape == (2, 5, 3) and data.inputs["sr"].shape == ()
    part = data.slice(1, 3)
    np.testing.assert_array_equal(part["state"], data.inputs["state"][:, 1:3])
    assert part["sr"].shape == () and part["state"].flags.c_contiguous
    tiled = data.feeds(12)
    assert tiled["x"].shape == (12, 4) and tiled["state"].shape == (2, 12, 3) and tiled["sr"].shape == ()
    np.testing.assert_array_equal(tiled["state"][:, 5], data.inputs["state"][:, 0])
    joined = data.head(2).concat(data)
    assert len(joined) == 7 and joined.inputs["state"].shape == (2, 7, 3) and joined.inputs["sr"].shape == ()
    assert [f["state"].shape[1] for f, _ in data.batches(2)] == [2, 2, 1]


def test_rebuilding_from_batched_keeps_the_axes():
    # quantize's calibration subset rebuilds DataSet(name, inputs, labels, data.batched)
    data = load_data("random", signature(_state_model()), count=5)
    again = DataSet(data.name, data.slice(0, 3), None, data.batched)
    assert again.batch_axes == {"x": 0, "state": 1, "sr": None} and len(again) == 3


def test_disagreeing_batch_counts_are_refused_at_construction():
    with pytest.raises(DataError, match="disagree on the number of samples"):
        DataSet("d", {"x": np.zeros((3, 4)), "state": np.zeros((2, 4, 3))}, None,
                batch_axes={"x": 0, "state": 1})


def test_run_dataset_joins_each_output_along_its_batch_axis():
    from onnxdeploy.runtimes import make_session, run_dataset

    data = load_data("random", signature(_state_model()), count=7)
    out = run_dataset(make_session(_state_model(), threads=1), data, batch_size=3)
    np.testing.assert_array_equal(out["y"], data.inputs["x"])
    np.testing.assert_array_equal(out["s2"], -data.inputs["state"])


def test_batch_sizes_without_batch_axis_or_with_a_state_fixed_at_one():
    fixed = _model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                   [helper.make_node("Identity", ["x"], ["y"])])
    sizes = load_data("random", signature(fixed)).batch_sizes([1, 32])
    assert sizes.usable == (1,) and "no input has a batch axis" in sizes.skipped[32]
    state1 = _model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_node("Identity", ["x"], ["y"])])
    sizes = load_data("random", signature(state1)).batch_sizes([1, 8, 32])
    assert sizes.usable == (1,) and sorted(sizes.skipped) == [8, 32]
    assert "'state' has no batch axis" in sizes.notes()[0]
    probed = load_data("random", signature(state1)).batch_sizes([1, 32], probe=lambda feeds: None)
    assert probed.usable == (1, 32)  # the probe (a real run) is trusted over the static rule


def test_cli_options_parse_batch_axes_and_int_ranges():
    import click
    from click.testing import CliRunner

    from onnxdeploy.cli.common import batch_axis_option, int_range_option

    seen = {}

    @click.command()
    @batch_axis_option
    @int_range_option
    def cmd(batch_axes, int_ranges):
        seen.update(batch_axes=batch_axes, int_ranges=int_ranges)

    runner = CliRunner()
    result = runner.invoke(cmd, ["--batch-axis", "state=1", "--batch-axis", "sr=none", "--int-range", "ids=0:5"])
    assert result.exit_code == 0, result.output
    assert seen == {"batch_axes": {"state": 1, "sr": None}, "int_ranges": {"ids": (0, 5)}}
    bad = runner.invoke(cmd, ["--batch-axis", "state"])
    assert isinstance(bad.exception, OptionError) and "INPUT=AXIS" in str(bad.exception)


def test_run_dataset_keeps_an_output_that_does_not_follow_the_batch():
    from onnx import numpy_helper

    from onnxdeploy.runtimes import make_session, run_dataset

    model = _model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
                    helper.make_tensor_value_info("c", TensorProto.FLOAT, [3])],
                   [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["k"], ["c"])])
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 2, 3], np.float32), "k"))
    data = load_data("random", signature(model), count=7)
    out = run_dataset(make_session(model, threads=1), data, batch_size=3)
    assert out["y"].shape == (7, 3) and out["c"].tolist() == [1, 2, 3]
