"""modelfile: loading errors, atomic saves with external data, sizes, signatures, metadata."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import mlp_classifier, save, two_input_int_model

from onnxdeploy.errors import ModelLoadError
from onnxdeploy.modelfile import (
    check_model,
    classifier_info,
    copy_model,
    external_data_files,
    load_model,
    model_size,
    op_counts,
    opset_version,
    save_model,
    signature,
)
from onnxdeploy.runtimes import make_session, run


def test_missing_file_names_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "absent.onnx")


def test_garbage_is_not_an_onnx_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        load_model(bad)


def test_checker_failure_is_model_load_error():
    model = mlp_classifier()
    model.graph.node[0].input[1] = "no_such_tensor"
    with pytest.raises(ModelLoadError, match="invalid ONNX graph"):
        check_model(model)


def test_external_data_counted_and_copy_stays_loadable(tmp_path):
    path = save(mlp_classifier(hidden=256), tmp_path / "ext.onnx", external_data=True)
    data_files = external_data_files(path)
    assert data_files == [tmp_path / "ext.onnx.data"]
    assert model_size(path) == path.stat().st_size + data_files[0].stat().st_size
    assert data_files[0].stat().st_size > 64 * 256 * 4  # the weights really live there

    original_size = model_size(path)
    copied = copy_model(path, tmp_path / "elsewhere" / "copy.onnx")
    (tmp_path / "ext.onnx.data").unlink()  # the copy must not depend on the original's data file
    assert external_data_files(copied) == [tmp_path / "elsewhere" / "copy.onnx.data"]
    assert abs(model_size(copied) - original_size) < 1024
    feeds = {"x": np.ones((2, 64), np.float32)}
    out = run(make_session(copied), feeds)
    ref = run(make_session(mlp_classifier(hidden=256)), feeds)
    np.testing.assert_array_equal(out["logits"], ref["logits"])


def test_inline_save_leaves_no_temp_files(tmp_path):
    save_model(mlp_classifier(), tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_failed_save_keeps_previous_file(tmp_path):
    path = save(mlp_classifier(), tmp_path / "m.onnx")
    before = path.read_bytes()
    with pytest.raises(AttributeError):
        save_model("not a model", path)  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_signature_excludes_initializers_and_keeps_symbolic_dims():
    sig = signature(two_input_int_model())
    assert [(s.name, str(s.dtype), s.shape) for s in sig.inputs] == [
        ("x", "float32", ("batch", 4)),
        ("idx", "int64", ("batch",)),
    ]
    assert sig.outputs[0].to_dict() == {"name": "y", "dtype": "float32", "shape": ["batch", 3], "batch_axis": 0}
    assert sig.inputs[1].has_batch_axis


def test_classifier_metadata_round_trip(tmp_path):
    path = save(mlp_classifier(), tmp_path / "m.onnx")
    info = classifier_info(load_model(path))
    assert info is not None and info.labels == tuple(str(i) for i in range(10))
    assert info.input_scaling["scale"] == pytest.approx(1 / 16)
    assert classifier_info(two_input_int_model()) is None


def test_op_counts_descend_into_subgraphs():
    then_graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["r"])], "then", [],
        [onnx.helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, [2])])
    else_graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Neg", ["x"], ["n"])], "else", [],
        [onnx.helper.make_tensor_value_info("n", onnx.TensorProto.FLOAT, [2])])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph)],
        "g",
        [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, []),
         onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    assert op_counts(model) == {"If": 1, "Neg": 1, "Relu": 1}
    assert opset_version(model) == 17


def _io_model(inputs, outputs):
    vi = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", [inputs[0][0]], [o[0]]) for o in outputs], "g",
        [vi(n, onnx.TensorProto.FLOAT, s) for n, s in inputs], [vi(n, onnx.TensorProto.FLOAT, s) for n, s in outputs])
    return onnx.helper.make_model(graph)


def test_batch_axis_from_shared_name_and_not_from_another_named_dim():
    # position_ids [1, seq] carries no batch: its dynamic axis is 'seq', not the batch
    sig = signature(_io_model(
        [("input_ids", ["batch", "seq"]), ("mask", ["batch", "seq"]), ("position_ids", [1, "seq"]),
         ("state", [2, "batch", 8])],
        [("hidden", ["batch", "seq", 8])]))
    assert sig.batch_dim == "batch"
    assert sig.batch_axes == {"input_ids": 0, "mask": 0, "position_ids": None, "state": 1}
    assert sig.outputs[0].batch_axis == 0


def test_paddle_dims_are_dynamic_and_unnamed():
    from onnxdeploy.modelfile import dim_name, fmt_shape, is_fixed_dim

    sig = signature(_io_model([("x", [-1, 3, "?", "?"]), ("y", [0, "?"])], [("z", [-1, "?"])]))
    assert sig.batch_axes == {"x": 0, "y": 0} and sig.batch_dim is None
    assert [is_fixed_dim(d) for d in (-1, 0, "?", None, 3)] == [False, False, False, False, True]
    assert [dim_name(d) for d in (-1, "?", None, "batch")] == [None, None, None, "batch"]
    assert fmt_shape((-1, 3, "?", None)) == "[-1, 3, ?, ?]"


def test_batch_axis_overrides():
    from onnxdeploy.errors import OptionError
    from onnxdeploy.modelfile import parse_batch_axes

    sig = signature(_io_model([("x", ["batch", 4]), ("state", [2, "n", 8])], [("y", ["batch", 4])]))
    assert parse_batch_axes(["state=1", "x=none"]) == {"state": 1, "x": None}
    over = sig.with_batch_axes(parse_batch_axes(["state=-2", "x=none"]))
    assert over.batch_axes == {"x": None, "state": 1}
    with pytest.raises(OptionError, match="no such input"):
        sig.with_batch_axes({"nope": 0})
    with pytest.raises(OptionError, match="fixed at 2"):
        sig.with_batch_axes({"state": 0})
    with pytest.raises(OptionError, match="within its rank"):
        sig.with_batch_axes({"state": 3})
    with pytest.raises(OptionError, match="INPUT=AXIS"):
        parse_batch_axes(["state:1"])


def test_batch_axis_given_twice_differently_is_an_error():
    from onnxdeploy.errors import OptionError
    from onnxdeploy.modelfile import parse_batch_axes

    assert parse_batch_axes(["x=1", "x=1"]) == {"x": 1}
    with pytest.raises(OptionError, match="given twice"):
        parse_batch_axes(["x=1", "x=0"])


def test_batch_name_is_the_shared_first_name_not_the_most_common():
    # seq is carried by three inputs, batch by two: batch is still the batch
    sig = signature(_io_model(
        [("input_ids", ["batch", "seq"]), ("mask", ["batch", "seq"]), ("position_ids", [1, "seq"])],
        [("hidden", ["batch", "seq", 8])]))
    assert sig.batch_dim == "batch" and sig.batch_axes == {"input_ids": 0, "mask": 0, "position_ids": None}
    # time-major RNN: x [seq, batch, 8], h0 [2, batch, 8]: only batch is shared
    sig = signature(_io_model([("x", ["seq", "batch", 8]), ("h0", [2, "batch", 8])], [("y", ["seq", "batch", 8])]))
    assert sig.batch_dim == "batch" and sig.batch_axes == {"x": 1, "h0": 1}
