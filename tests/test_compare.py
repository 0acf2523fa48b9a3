"""compare: numeric differences, top-1 agreement, accuracy and latency through real ORT sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import mlp_classifier, save
from click.testing import CliRunner

from onnxdeploy.cli import cli
from onnxdeploy.compare import CompareOptions, compare_models, diff_outputs
from onnxdeploy.data import digits_split
from onnxdeploy.runtimes import make_session, run


def test_identical_models_agree_exactly(mlp_path, tmp_path):
    other = save(mlp_classifier(), tmp_path / "same.onnx", external_data=True)
    report = compare_models(mlp_path, other, CompareOptions(latency_budget_s=0.2))
    assert report.max_abs_diff == 0.0 and report.top1_agreement == 1.0
    assert report.cosine_similarity == pytest.approx(1.0)
    assert report.accuracy["a"] == report.accuracy["b"]
    assert set(report.latency_ms["a"]) == {"batch_1", "batch_32"}
    assert all(v > 0 for v in report.latency_ms["b"].values())


def test_different_models_measured_against_hand_computation(mlp_path, tmp_path):
    other = save(mlp_classifier(seed=1), tmp_path / "other.onnx")
    report = compare_models(mlp_path, other, CompareOptions(latency_budget_s=0.2))
    _, _, x, y = digits_split()
    a = run(make_session(mlp_path), {"x": x})["logits"]
    b = run(make_session(other), {"x": x})["logits"]
    assert report.max_abs_diff == pytest.approx(float(np.abs(a - b).max()), rel=1e-6)
    assert report.top1_agreement == pytest.approx(float(np.mean(a.argmax(1) == b.argmax(1))))
    assert report.accuracy["a"] == pytest.approx(float(np.mean(a.argmax(1) == y)))


def test_diff_outputs_rejects_shape_mismatch():
    from onnxdeploy.errors import DataError

    with pytest.raises(DataError, match="shape"):
        diff_outputs({"y": np.zeros((2, 3))}, {"y": np.zeros((3, 2))})


def test_cli_compare_json_and_errors(mlp_path, two_input_path, tmp_path):
    runner = CliRunner()
    report_file = tmp_path / "r.json"
    result = runner.invoke(cli, ["compare", str(mlp_path), str(mlp_path), "--json", "--count", "50",
                                 "--report", str(report_file)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["max_abs_diff"] == 0.0 and payload["samples"] == 50
    assert json.loads(report_file.read_text()) == payload

    result = runner.invoke(cli, ["compare", str(mlp_path), str(two_input_path)])
    assert result.exit_code == 2 and "different inputs" in result.output
    assert "INVALID_ARGUMENT" not in result.output

    result = runner.invoke(cli, ["compare", str(mlp_path), str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2 and "no such file" in result.output

    result = runner.invoke(cli, ["compare", str(two_input_path), str(two_input_path), "--data", "digits"])
    assert result.exit_code == 2 and "DataError" in result.output


def test_cli_version_and_help():
    runner = CliRunner()
    assert runner.invoke(cli, ["--version"]).output.startswith("onnxdeploy, version")
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "compare" in result.output


def test_latency_plan_times_tiny_models_over_many_runs_and_slow_ones_within_budget():
    from onnxdeploy.measure.latency import MAX_ITERS, MIN_ROUNDS, _plan

    # a ~10 µs model needs hundreds of runs to fill a 15 ms round
    rounds, iters = _plan(0.01, 1.0)
    assert 100 < iters <= MAX_ITERS and rounds >= MIN_ROUNDS
    # a 200 ms model on a 0.3 s budget: one run a round, never fewer than MIN_ROUNDS rounds
    rounds, iters = _plan(200.0, 0.3)
    assert (rounds, iters) == (MIN_ROUNDS, 1)


def test_multi_thread_sessions_do_not_spin(mlp_path):
    # an idle session's spinning pool thread steals the core its neighbour is being timed on
    two = make_session(mlp_path, threads=2)
    one = make_session(mlp_path, threads=1)
    assert two.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert one.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    forced = make_session(mlp_path, threads=2, spinning=True)
    assert forced.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_quiet_prints_nothing_but_errors_and_verbose_shows_the_cause(mlp_path, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["-q", "compare", str(mlp_path), str(mlp_path), "--latency-budget", "0.2"])
    assert result.exit_code == 0 and result.output == ""
    result = runner.invoke(cli, ["compare", str(mlp_path), str(mlp_path), "--latency-budget", "0.2"])
    assert "max abs diff" in result.output  # quiet does not leak into the next command
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    result = runner.invoke(cli, ["-v", "compare", str(mlp_path), str(bad)])
    assert result.exit_code == 2 and "caused by" in result.output
