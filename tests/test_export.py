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
from onnxdeploy.runtimes import make_session

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
    out_dir.mkdir()  # the output's directory must exist (a missing one is its own error)
    result = run_cli("export", *args, "-o", out_dir / "model.onnx")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{error}: "), result.stderr
    assert text in lines[0]
    assert result.stdout == ""
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- any forward signature

TOKENS = Path(__file__).parent / "data" / "token_model.py"
TOKEN_SPECS = ["--input-spec", "input_ids:batch,seq:int64", "--input-spec", "mask:batch,seq:bool",
               "--input-spec", "segment:batch,seq:int64"]


def load_token_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("token_model_for_tests", TOKENS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_int_and_bool_inputs_with_a_dynamic_sequence_export_and_match_torch(tmp_path):
    out = tmp_path / "tokens.onnx"
    result = run_cli("export", f"{TOKENS}:make_token_model", "-o", out, *TOKEN_SPECS, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(i["name"], i["dtype"], i["shape"]) for i in report["inputs"]] == [
        ("input_ids", "int64", ["batch", "seq"]), ("mask", "bool", ["batch", "seq"]),
        ("segment", "int64", ["batch", "seq"])]
    assert report["parity"]["passed"] and report["parity"]["batch_sizes"] == [1, 2, 7]
    # every round moves the sequence too: batch 1 x seq 3, the traced 2 x 5, and 7 x 8
    assert list(report["parity"]["per_batch"]) == ["batch=1,seq=3", "batch=2,seq=5", "batch=7,seq=8"]
    # ids over the whole vocabulary (the parity draw itself stays below each embedding's size)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, size=(4, 11))
    mask = rng.random((4, 11)) < 0.7
    seg = rng.integers(0, 3, size=(4, 11))
    (got,) = make_session(out).run(None, {"input_ids": ids, "mask": mask, "segment": seg})
    with torch.no_grad():
        expected = load_token_module().make_token_model().eval()(
            torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(seg)).numpy()
    assert got.shape == (4, 4) and np.abs(got - expected).max() < 1e-4


def test_integer_inputs_draw_below_the_embedding_they_feed():
    from onnxdeploy.sources import load_source

    src = load_source(f"{TOKENS}:make_token_model", input_specs=TOKEN_SPECS[1::2])
    assert src.int_ranges == {"input_ids": (0, 100), "segment": (0, 3)}
    for rnd in src.parity_rounds():
        ids, mask, seg = rnd.args
        assert ids.dtype == torch.int64 and mask.dtype == torch.bool
        assert 0 <= int(ids.min()) and int(ids.max()) < 100 and int(seg.max()) < 3
    # a wide draw: ids reach far past the default [0, 10) bound
    assert max(int(r.args[0].max()) for r in src.parity_rounds()) >= 50
    explicit = load_source(f"{TOKENS}:make_token_model", input_specs=TOKEN_SPECS[1::2],
                           int_ranges=["input_ids=5:7"])
    assert explicit.int_ranges["input_ids"] == (5, 7)
    assert all(set(r.args[0].unique().tolist()) <= {5, 6} for r in explicit.parity_rounds())


def test_example_inputs_npz_are_used_for_export_and_parity(tmp_path):
    rng = np.random.default_rng(1)
    npz = tmp_path / "examples.npz"
    np.savez(npz, input_ids=rng.integers(0, 100, size=(5, 6)))
    out = tmp_path / "ids.onnx"
    result = run_cli("export", f"{TOKENS}:make_ids_model", "-o", out, "--example-inputs", npz,
                     "--dynamic-axis", "input_ids:1:seq", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"], "batch_axis": 0}
    assert report["parity"]["passed"] and report["parity"]["data"] == "example inputs examples.npz"
    (got,) = make_session(out).run(None, {"input_ids": np.arange(30).reshape(3, 10)})
    assert got.shape == (3, 8)


def test_token_model_without_specs_says_how_to_describe_its_inputs(tmp_path):
    result = run_cli("export", f"{TOKENS}:make_ids_model", "-o", tmp_path / "m.onnx", "--input-shape", "1,8")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("ModelSourceError: ")
    assert "rejects input shape 1,8 (float32)" in line and "--input-spec" in line and "int64" in line


@pytest.mark.parametrize("args,error,text", [
    (["--input-spec", "input_ids:batch,seq:float32"], "ModelSourceError",
     "forward raised RuntimeError"),
    (["--input-spec", "input_ids:batch,seq:int99"], "OptionError", "unknown dtype 'int99'"),
    (["--input-spec", "input_ids:batch,-3:int64"], "OptionError", "neither a positive integer nor a name"),
    (["--input-spec", "input_ids:batch,seq:int64", "--int-range", "input_ids=9:3"], "OptionError",
     "LOW < HIGH"),
    (["--input-spec", "input_ids:batch,seq:int64", "--int-range", "ids=0:3"], "OptionError",
     "names ids, not an input"),
    (["--input-spec", "a:batch", "--input-spec", "a:batch"], "OptionError", "more than once"),
    (["--input-spec", "input_ids:batch,seq:int64", "--int-range", "input_ids=0:1000"],
     "ModelSourceError", "forward raised IndexError"),
    (["--task", "sentence-embedding"], "OptionError", "only for a Hugging Face model directory"),
])
def test_bad_input_specs_are_one_line_errors(tmp_path, args, error, text):
    out_dir = tmp_path / "out"
    out_dir.mkdir()  # the output's directory must exist (a missing one is its own error)
    result = run_cli("export", f"{TOKENS}:make_ids_model", "-o", out_dir / "m.onnx", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{error}: "), result.stderr
    assert text in lines[0]
    if "forward raised" in text:  # the message names the input and the dtype it was given
        assert "input_ids" in lines[0] and ("float32" in lines[0] or "int64" in lines[0])
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_fixed_shape_spec_exports_without_a_batch_axis(tmp_path):
    out = tmp_path / "fixed.onnx"
    result = run_cli("export", "torch.nn:Identity", "-o", out, "--input-spec", "x:3,4:float32", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["inputs"][0]["shape"] == [3, 4] and report["parity"]["passed"]
    assert report["parity"]["batch_sizes"] == [3, 3, 3]
    assert list(report["parity"]["per_batch"]) == ["round 1", "round 2", "round 3"]


def test_output_option_spellings_and_missing_directory(tmp_path):
    from click.testing import CliRunner as Runner

    from onnxdeploy.cli import cli as root

    missing = tmp_path / "missing" / "dir" / "e.onnx"
    for cmd in (["export", "digits-mlp", "-o", str(missing)],
                ["quantize", str(tmp_path / "m.onnx"), "-o", str(missing)],
                ["optimize", str(tmp_path / "m.onnx"), "--output", str(missing)]):
        result = Runner().invoke(root, cmd)
        assert result.exit_code == 2 and "does not exist; create it first" in result.output, cmd
        assert not (tmp_path / "missing").exists()  # no directory the user did not ask for
    result = Runner().invoke(root, ["export", "digits-mlp", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output
