"""Export: built-ins and user factories to ONNX, parity, bad input (real torch, real ORT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from onnxdeploy.cli import cli
from onnxdeploy.data import digits_split
from onnxdeploy.export import ExportOptions, export_model
from onnxdeploy.modelfile import classifier_info, external_data_files, signature
from onnxdeploy.runtime import make_session

USER = Path(__file__).parent / "data" / "user_model.py"


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def load_user_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_model_for_tests", USER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,shape", [("digits-cnn", (1, 8, 8)), ("digits-mlp", (64,))])
def test_builtin_exports_single_file_classifier_running_at_batch_1_and_7(builtin_onnx, name, shape):
    path = builtin_onnx(name)
    assert external_data_files(path) == [] and not Path(f"{path}.data").exists()
    model = onnx.load(str(path))
    sig = signature(model)
    assert sig.inputs[0].name == "x" and sig.inputs[0].shape == ("batch", *shape)
    assert sig.outputs[0].name == "logits" and sig.outputs[0].shape == ("batch", 10)
    assert len(model.graph.value_info) == 0
    info = classifier_info(model)
    assert info.labels == tuple(str(i) for i in range(10))
    assert info.input_scaling["scale"] == pytest.approx(1 / 16)
    session = make_session(path)
    _, _, x, y = digits_split()
    for batch in (1, 7):
        (logits,) = session.run(None, {"x": x[:batch].reshape(batch, *shape)})
        assert logits.shape == (batch, 10)
    (logits,) = session.run(None, {"x": x.reshape(len(x), *shape)})
    assert np.mean(logits.argmax(1) == y) >= 0.95


def test_cli_json_report_has_the_contract_keys(tmp_path, zoo_cache):
    out = tmp_path / "cnn.onnx"
    result = run_cli("export", "digits-cnn", "-o", out, "--cache-dir", zoo_cache, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"onnx_path", "opset", "inputs", "outputs", "size_bytes", "parity"} <= report.keys()
    assert report["onnx_path"] == str(out) and report["opset"] == 18 and report["exporter"] == "dynamo"
    assert report["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 1, 8, 8], "batch_axis": 0}]
    assert report["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 10], "batch_axis": 0}]
    assert report["size_bytes"] == out.stat().st_size
    parity = report["parity"]
    assert parity["passed"] is True and parity["tolerance"] == 1e-4
    assert 0 <= parity["max_abs_diff"] <= 1e-4
    assert parity["batch_sizes"] == [1, 2, 7] and parity["data"] == "digits"
    assert report["accuracy"]["onnx"] == pytest.approx(report["accuracy"]["torch"], abs=0.01)
    assert report["metadata"]["onnxdeploy.task"] == "classification"
    text = run_cli("export", "digits-cnn", "-o", tmp_path / "again.onnx", "--cache-dir", zoo_cache)
    assert text.exit_code == 0 and "passed" in text.stdout and "batch, 1, 8, 8" in text.stdout


def test_torchscript_exporter_also_passes(tmp_path, zoo_cache):
    report = export_model("digits-cnn", tmp_path / "ts.onnx",
                          ExportOptions(exporter="torchscript", opset=17, cache_dir=zoo_cache))
    assert report.parity.passed and report.opset == 17
    assert report.inputs[0]["shape"] == ["batch", 1, 8, 8]


def test_exports_are_accepted_by_ort_quantizers(builtin_onnx, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, quantize_dynamic, quantize_static

    _, _, x, _ = digits_split()
    quantize_dynamic(str(builtin_onnx("digits-mlp")), str(tmp_path / "mlp8.onnx"),
                     op_types_to_quantize=["MatMul", "Gemm"])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": x[i : i + 16].reshape(-1, 1, 8, 8)} for i in range(0, 64, 16)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(builtin_onnx("digits-cnn")), str(tmp_path / "cnn8.onnx"), Reader())
    for name, feed in (("mlp8", x[:7]), ("cnn8", x[:7].reshape(7, 1, 8, 8))):
        (logits,) = make_session(tmp_path / f"{name}.onnx").run(None, {"x": feed})
        assert logits.shape == (7, 10)


def test_user_factory_from_file_with_default_shape_and_dynamic_axes(tmp_path):
    out = tmp_path / "user.onnx"
    result = run_cli("export", f"{USER}:make_model", "-o", out, "--json",
                     "--dynamic-axis", "image:2:height", "--dynamic-axis", "image:3:width")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "factory" and report["parity"]["data"] == "random"
    assert report["parity"]["passed"] and report["accuracy"] is None
    assert report["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert report["outputs"][0] == {"name": "output", "dtype": "float32", "shape": ["batch", 4], "batch_axis": 0}
    assert report["dynamic_axes"] == ["image:0:batch", "image:2:height", "image:3:width"]
    x = torch.randn(5, 3, 12, 10)
    expected = load_user_module().make_model().eval()(x).detach().numpy()
    (got,) = make_session(out).run(None, {"image": x.numpy()})
    assert np.abs(got - expected).max() < 1e-4


def test_user_factory_with_checkpoint_uses_its_weights(tmp_path):
    user = load_user_module()
    torch.manual_seed(123)
    trained = user.SmallConv().eval()
    ckpt = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), ckpt)
    out = tmp_path / "user.onnx"
    result = run_cli("export", f"{USER}:make_model", "-o", out, "--checkpoint", ckpt,
                     "--input-shape", "1,3,8,8", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint"] == str(ckpt)
    x = torch.randn(3, 3, 8, 8)
    (got,) = make_session(out).run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert np.abs(got - trained(x).numpy()).max() < 1e-4
        assert np.abs(got - user.make_model().eval()(x).numpy()).max() > 1e-3


def test_module_factory_needs_an_input_shape(tmp_path):
    out = tmp_path / "relu.onnx"
    result = run_cli("export", "torch.nn:ReLU", "-o", out)
    assert result.exit_code == 2 and "--input-shape is required" in result.stderr
    result = run_cli("export", "torch.nn:ReLU", "-o", out, "--input-shape", "1,5", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inputs"][0]["shape"] == ["batch", 5]


def test_parity_failure_exits_1_and_keeps_the_file(tmp_path):
    out = tmp_path / "diverging.onnx"
    result = run_cli("export", f"{USER}:diverging", "-o", out)
    assert result.exit_code == 1
    assert out.exists() and "kept for inspection" in result.stderr and "FAILED" in result.stdout
    result = run_cli("export", f"{USER}:diverging", "-o", out, "--json")
    assert result.exit_code == 1
    parity = json.loads(result.stdout)["parity"]
    assert parity["passed"] is False and parity["max_abs_diff"] == pytest.approx(0.5, abs=1e-4)
    loose = run_cli("export", f"{USER}:diverging", "-o", out, "--tolerance", "1")
    assert loose.exit_code == 0


def _bad_cases(tmp: Path):
    broken = tmp / "broken.py"
    broken.write_text("def make(:\n", encoding="utf-8")
    wrong_ckpt = tmp / "wrong.pt"
    torch.save(load_user_module().FlattenLinear().state_dict(), wrong_ckpt)
    junk = tmp / "junk.pt"
    junk.write_text("not a checkpoint", encoding="utf-8")
    user = f"{USER}:make_model"
    return {
        "unknown built-in": (["digits-rnn"], "ModelLoadError", "known: digits-cnn, digits-mlp"),
        "missing file": ([f"{tmp}/nope.py:make"], "ModelSourceError", "no such file"),
        "syntax error": ([f"{broken}:make"], "ModelSourceError", "SyntaxError"),
        "missing module": (["no_such_pkg_xyz.models:make"], "ModelSourceError", "cannot import no_such_pkg_xyz"),
        "missing function": ([f"{USER}:nope"], "ModelSourceError", "has no attribute 'nope'"),
        "not a module": ([f"{USER}:not_a_module"], "ModelSourceError", "returned dict; expected a torch.nn.Module"),
        "factory raises": ([f"{USER}:raises"], "ModelSourceError", "factory raised RuntimeError"),
        "checkpoint keys": ([user, "--checkpoint", wrong_ckpt], "ModelSourceError",
                            "missing keys: conv.weight, conv.bias, head.weight, head.bias; unexpected keys: fc.weight"),
        "checkpoint junk": ([user, "--checkpoint", junk], "ModelSourceError", "weights_only=True"),
        "checkpoint missing": ([user, "--checkpoint", tmp / "none.pt"], "ModelSourceError", "no such file"),
        "builtin checkpoint": (["digits-cnn", "--checkpoint", wrong_ckpt], "ModelSourceError", "does not fit digits-cnn"),
        "rejected shape": ([user, "--input-shape", "1,5,8,8"], "ModelSourceError", "rejects input shape 1,5,8,8"),
        "unparsable shape": ([user, "--input-shape", "1,a"], "OptionError", "positive integers"),
        "fixed axis": ([f"{USER}:fixed_size", "--dynamic-axis", "image:2:height"], "OptionError",
                       "fixes axis 2 of input 'image' to 8"),
        "unknown input": ([user, "--dynamic-axis", "img:2:h"], "OptionError", "no input 'img'"),
        "bad axis": ([user, "--dynamic-axis", "image:two:h"], "OptionError", "INPUT:AXIS:NAME"),
        "old opset": ([user, "--opset", "13"], "OptionError", "opset >= 18"),
    }


@pytest.fixture(scope="module")
def bad_cases(tmp_path_factory):
    return _bad_cases(tmp_path_factory.mktemp("bad-inputs"))


@pytest.mark.parametrize("case", [
    "unknown built-in", "missing file", "syntax error", "missing module", "missing function",
    "not a module", "factory raises", "checkpoint keys", "checkpoint junk", "checkpoint missing",
    "builtin checkpoint", "rejected shape", "unparsable shape", "fixed axis", "unknown input",
    "bad axis", "old opset",
])
def test_bad_input_is_one_line_exit_2_and_no_file(bad_cases, tmp_path, case):
    args, error, text = bad_cases[case]
    out_dir = tmp_path / "out"
    result = run_cli("export", *args, "-o", out_dir / "model.onnx")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{error}: "), result.stderr
    assert text in lines[0]
    assert result.stdout == ""
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
