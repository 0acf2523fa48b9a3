"""Every step on every fixture class that looks like the wild: it completes, or it refuses with
exit 1/2 and one line naming the cause; never a traceback (issue: any third-party ONNX model)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from wild import BUILDERS, save_fixture

from onnxdeploy.cli import cli

#: what each fixture must do per step: 0 completes; 2 refused (with the words expected)
REFUSALS = {
    ("sklearn-zipmap", "quantize-dynamic"): "nothing to quantize",
    ("sklearn-zipmap", "quantize-auto"): "nothing to quantize",
    ("sklearn-tensor", "quantize-dynamic"): "nothing to quantize",
    ("sklearn-tensor", "quantize-auto"): "nothing to quantize",
}
STEPS = ("quantize-dynamic", "quantize-auto", "optimize", "optimize-ort-all", "compare")


@pytest.fixture(scope="module")
def wild_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("wild")


def _args(step: str, src, out_dir, name):
    quick = ["--latency-budget", "0.2"]
    return {
        "quantize-dynamic": ["quantize", str(src), "-o", str(out_dir / f"{name}.dyn.onnx"), "--mode", "dynamic", *quick],
        "quantize-auto": ["quantize", str(src), "-o", str(out_dir / f"{name}.auto.onnx"), "--mode", "auto", *quick],
        "optimize": ["optimize", str(src), "-o", str(out_dir / f"{name}.opt.onnx"), "--latency-rounds", "0"],
        "optimize-ort-all": ["optimize", str(src), "-o", str(out_dir / f"{name}.all.onnx"), "--ort-level", "all",
                             "--latency-rounds", "0"],
        # compare the fixture against its own optimized copy: every kind of output, real sessions
        "compare": ["compare", str(src), str(out_dir / f"{name}.opt.onnx"), *quick],
    }[step]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_step_completes_or_refuses_in_one_line(wild_dir, name):
    src = save_fixture(name, wild_dir)
    runner = CliRunner()
    for step in STEPS:
        result = runner.invoke(cli, [*_args(step, src, wild_dir, name), "--json"])
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            step, repr(result.exception))
        refusal = REFUSALS.get((name, step))
        if refusal:
            lines = [line for line in result.output.splitlines() if "Error:" in line]
            assert result.exit_code == 2 and len(lines) == 1 and refusal in lines[0], (step, result.output)
            continue
        assert result.exit_code in (0, 1), (step, result.output[-2000:])
        report = json.loads(result.output[result.output.index("{"):])
        if step == "compare":
            # an optimized copy is the same function: no exercised output may fail
            assert report["passed"] in (True, None), report["failures"]
            assert report["max_abs_diff"] < 1e-3
            for out in report["outputs"]:
                assert out["exercised"] or out["passed"] is None
        if step.startswith("optimize"):
            assert report["comparison"]["passed"] in (True, None), report["comparison"]
        if step.startswith("quantize") and result.exit_code == 1:
            # a failed check names the output and the metric
            assert report["comparison"]["failures"] and "output '" in report["comparison"]["failures"][0]


def test_near_zero_outputs_are_not_exercised_and_not_passed(wild_dir):
    src = save_fixture("detection-constant-weights", wild_dir)
    result = CliRunner().invoke(cli, ["optimize", str(src), "-o", str(wild_dir / "det.opt.onnx"),
                                      "--latency-rounds", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["comparison"]["passed"] is None
    assert all(not o["exercised"] and "not exercised" in o["note"] for o in report["comparison"]["outputs"])


def test_rnn_state_batch_axis_is_axis_1_and_latency_tiles_it(wild_dir):
    src = save_fixture("rnn-state", wild_dir)
    result = CliRunner().invoke(cli, ["quantize", str(src), "-o", str(wild_dir / "rnn.q.onnx"),
                                      "--mode", "dynamic", "--latency-budget", "0.2", "--json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert set(report["latency"]["variants"]["float32"]) == {"batch_1", "batch_32"}
    # the fixed-at-batch-1 variant is timed at batch 1 only, and the report says why
    src = save_fixture("rnn-state-batch1", wild_dir)
    result = CliRunner().invoke(cli, ["quantize", str(src), "-o", str(wild_dir / "rnn1.q.onnx"),
                                      "--mode", "dynamic", "--latency-budget", "0.2", "--json"])
    report = json.loads(result.output[result.output.index("{"):])
    assert set(report["latency"]["variants"]["float32"]) == {"batch_1"}
    assert any("batch_32 skipped" in n for n in report["latency"]["notes"])


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_fixture_is_served_and_benched_without_errors(wild_dir, name):
    # bench starts `onnxdeploy serve` on a free port and loads it over real HTTP
    from onnxdeploy.bench import BenchOptions, run_bench

    src = save_fixture(name, wild_dir)
    report = run_bench(BenchOptions(models=[str(src)], concurrency=[2], requests=40, repeats=1,
                                    warmup=5, data="random", accuracy=False))
    runs = report.to_dict()["runs"]
    assert runs and all(not r["errors"] and r["rps"] > 0 for r in runs), runs
