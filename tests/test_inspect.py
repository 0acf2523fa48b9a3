"""``onnxdeploy inspect`` and output kinds: signatures as written, what onnxdeploy infers, --json."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import wild
from builders import mlp_classifier, save
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxdeploy.cli import cli
from onnxdeploy.inspection import inspect_model, type_str
from onnxdeploy.modelfile import TensorSpec
from onnxdeploy.outputkinds import output_kind


def _invoke(*args, columns=80):
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": str(columns)})


@pytest.fixture(scope="module")
def wild_paths(tmp_path_factory):
    out = tmp_path_factory.mktemp("wild-inspect")
    made = {}

    def get(name):
        if name not in made:
            made[name] = save(wild.BUILDERS[name](), out / f"{name}.onnx")
        return made[name]

    return get


def test_json_keeps_dims_as_written(wild_paths):
    result = _invoke("inspect", str(wild_paths("ocr-paddle-dims")), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["inputs"][0]["shape"] == [-1, 3, 8, "?"]
    assert report["outputs"][0]["shape"] == [-1, "?", 6]
    assert report["batch_axes"] == {"x": 0}
    assert report["opsets"] == {"": 17} and report["domains"] == ["ai.onnx"]
    assert report["op_counts"] == {"Conv": 1, "ReduceMean": 1, "Softmax": 1, "Transpose": 1}
    assert report["quantized"] is False and report["parameters"] == 6 * 3 * 3 * 3 + 6


def test_json_for_sklearn_zipmap_empty_dims_and_non_tensor_output(wild_paths):
    report = json.loads(_invoke("inspect", str(wild_paths("sklearn-zipmap")), "--json").stdout)
    assert report["inputs"][0]["shape"] == [None, 64]
    zipmap = next(o for o in report["outputs"] if o["name"] == "output_probability")
    assert zipmap["type"] == "seq(map(int64,tensor(float)))" and zipmap["kind"] == "sequence"
    assert zipmap["dtype"] is None and zipmap["shape"] is None
    assert "ai.onnx.ml" in report["domains"] and "ai.onnx.ml.ZipMap" in report["op_counts"]


def test_rnn_batch_axes_and_scalar_input(wild_paths):
    report = json.loads(_invoke("inspect", str(wild_paths("rnn-state")), "--json").stdout)
    assert report["batch_axes"] == {"input": 0, "state": 1, "sr": None}
    assert report["batch_dim"] == "batch"
    sr = next(i for i in report["inputs"] if i["name"] == "sr")
    assert sr["shape"] == [] and sr["dtype"] == "int64"
    assert any("'state' carries the batch on axis 1" in n for n in report["notes"])


def test_text_fits_80_columns_without_markup(wild_paths):
    for name in ("rnn-state", "sklearn-zipmap", "ocr-paddle-dims", "detection-constant-weights"):
        result = _invoke("inspect", str(wild_paths(name)))
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert max(len(line) for line in lines) <= 80, name
        assert "[/" not in result.output and "\\[" not in result.output
    text = _invoke("inspect", str(wild_paths("rnn-state"))).output
    assert "[2, batch, 16]" in text and "seq(map" not in text
    assert "[-1, 3, 8, ?]" in _invoke("inspect", str(wild_paths("ocr-paddle-dims"))).output
    assert "Constant nodes" in _invoke("inspect", str(wild_paths("detection-constant-weights"))).output


def test_metadata_task_makes_class_scores_and_long_values_are_cut(tmp_path):
    model = mlp_classifier()
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "onnxdeploy.tokenizer": "x" * 5000})
    path = save(model, tmp_path / "m.onnx")
    report = inspect_model(path)
    assert report.task == "classification" and report.outputs[0]["kind"] == "class_scores"
    assert report.metadata_truncated == ["onnxdeploy.tokenizer"]
    assert report.metadata["onnxdeploy.tokenizer"].endswith("(5000 characters)")
    assert len(report.metadata["onnxdeploy.tokenizer"]) < 300


def test_quantized_model_is_recognised(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
         numpy_helper.from_array(np.array(0, np.uint8), "z")])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "q.onnx")
    report = json.loads(_invoke("inspect", str(path), "--json").stdout)
    assert report["quantized"] is True
    assert report["quantized_ops"] == {"DequantizeLinear": 1, "QuantizeLinear": 1}
    assert not inspect_model(save(mlp_classifier(), tmp_path / "f.onnx")).quantized


def test_external_data_is_counted_without_loading_it(tmp_path):
    path = save(mlp_classifier(hidden=256), tmp_path / "ext.onnx", external_data=True)
    report = inspect_model(path)
    data = tmp_path / "ext.onnx.data"
    assert report.external_data == ["ext.onnx.data"]
    assert report.size_bytes == {"model": path.stat().st_size, "external_data": data.stat().st_size,
                                 "total": path.stat().st_size + data.stat().st_size}
    data.unlink()
    assert any("external data missing: ext.onnx.data" in n for n in inspect_model(path).notes)


@pytest.mark.parametrize("make", [
    lambda tmp: tmp / "absent.onnx",
    lambda tmp: tmp,
    lambda tmp: (tmp / "junk.onnx").write_bytes(b"\xff\xfe not a model" * 20) and tmp / "junk.onnx",
])
def test_bad_path_is_one_line_exit_2(tmp_path, make):
    path = make(tmp_path)
    result = _invoke("inspect", str(path))
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "ModelLoadError" in result.output
    assert "Traceback" not in result.output


def test_type_strings():
    seq = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64,
                                                                     helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    assert type_str(seq) == "seq(map(int64,tensor(float)))"
    assert type_str(helper.make_tensor_type_proto(TensorProto.BOOL, [2])) == "tensor(bool)"


@pytest.mark.parametrize("shape, dtype, task, values, kind", [
    (("batch", 10), np.float32, "classification", None, "class_scores"),
    (("batch", 10), np.float32, None, None, "tensor"),  # an embedding looks the same: no guess
    (("batch", 384), np.float32, "sentence-embedding", None, "embedding"),
    (("batch", "time", 6), np.float32, "classification", None, "sequence_scores"),
    (("batch", 1), np.float32, "classification", None, "tensor"),
    (("batch",), np.int64, "classification", None, "tensor"),
    (("batch", 3), np.float32, None, np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], np.float32), "class_scores"),
    (("batch", 3), np.float32, None, np.array([[0.2, 0.3, 0.6]], np.float32), "tensor"),
    ((-1, "?", 6), np.float32, None, np.full((2, 4, 6), 1 / 6, np.float32), "sequence_scores"),
    (("batch", 1, 16, 16), np.float32, "classification", None, "tensor"),
])
def test_output_kind(shape, dtype, task, values, kind):
    assert output_kind(TensorSpec("o", np.dtype(dtype), shape), task, values) == kind


def test_output_kind_non_tensor():
    assert output_kind(TensorSpec("p", None, None, kind="sequence"), "classification") == "sequence"


def test_report_option_writes_the_json(wild_paths, tmp_path):
    rep = tmp_path / "inspect.json"
    result = _invoke("inspect", str(wild_paths("control-flow")), "--report", str(rep))
    assert result.exit_code == 0, result.output
    written = json.loads(rep.read_text())
    assert written["batch_axes"] == {"x": 0, "flag": None, "n": None}
    assert written["op_counts"]["If"] == 1 and written["op_counts"]["Loop"] == 1


def test_notes_say_what_random_data_would_guess(wild_paths):
    notes = inspect_model(wild_paths("multi-output")).notes
    assert "random data: dim 'seq' set to 8; change it with --dim seq=N" in notes
    notes = inspect_model(wild_paths("ocr-paddle-dims")).notes
    assert any("--dim x:3=N" in n for n in notes)


def test_bracketed_values_print_literally(tmp_path):
    model = mlp_classifier()
    onnx.helper.set_model_props(model, {"note": "[red]not markup[/red]"})
    path = save(model, tmp_path / "[weird].onnx")
    result = _invoke("inspect", str(path))
    assert result.exit_code == 0, result.output
    assert "[red]not markup[/red]" in result.output and "[weird].onnx" in result.output
