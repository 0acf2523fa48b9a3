"""The main job end to end: a real pipeline run (real training/export, quantization, servers, HTTP load)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from browser import CHROMIUM, probe_page

from onnxdeploy.errors import OptionError
from onnxdeploy.pipeline import (
    FLOAT_FILE,
    INT8_FILE,
    OPT_FILE,
    PipelineOptions,
    options_from_config,
)

SHORT = ["--concurrency", "1,4", "--requests", "150", "--repeats", "1"]


def _serve_processes() -> set[int]:
    """PIDs of running `onnxdeploy serve` processes (any we might have leaked)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"onnxdeploy" in part for part in cmd) and b"serve" in cmd:
            pids.add(int(entry.name))
    return pids


def _run(args, env, timeout=420):
    return subprocess.run([sys.executable, "-m", "onnxdeploy", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def env(zoo_cache):
    """The subprocess environment: the session's weight cache, so the built-in trains once per session."""
    return {**os.environ, "ONNXDEPLOY_CACHE": str(zoo_cache)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, env):
    out = tmp_path_factory.mktemp("pipeline") / "out"
    before = _serve_processes()
    proc = _run(["pipeline", "digits-cnn", "--out", str(out), *SHORT], env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert _serve_processes() - before == set()
    return out, proc


def test_artifacts_and_report_keys(run_dir):
    out, proc = run_dir
    for name in (FLOAT_FILE, INT8_FILE, OPT_FILE, "report.json", "report.md", "report.html", "config.yaml"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    for key in ("export", "quantize", "quantize_dynamic", "optimize", "compare", "bench", "summary"):
        assert key in report, key
    assert report["export"]["parity"]["passed"] is True
    assert report["quantize"]["size_bytes"]["after"] < report["quantize"]["size_bytes"]["before"]
    assert report["optimize"]["comparison"]["passed"] is True
    bench = report["bench"]
    assert {t["name"] for t in bench["targets"]} == {"float32", "int8"}
    assert all(not r["errors"] for r in bench["runs"])
    # accuracy measured through each server's HTTP API agrees with the in-process figure
    assert bench["accuracy"]["float32"] == pytest.approx(report["compare"]["accuracy"]["a"], abs=1e-9)
    assert bench["accuracy"]["int8"] == pytest.approx(report["compare"]["accuracy"]["b"], abs=1e-9)
    side_by_side = report["latency"]["variants"]
    assert set(side_by_side) == {"float", "int8_dynamic", "int8", "optimized"}
    assert all(v["batch_1"] > 0 and v["batch_32"] > 0 for v in side_by_side.values())
    variants = {v["variant"].split(":")[0]: v for v in report["summary"]["variants"]}
    assert variants["int8 dynamic"]["latency_ms"] == side_by_side["int8_dynamic"]
    assert variants["float32"]["rps"] > 0 and variants["int8 auto"]["p99_ms"] > 0
    assert [s["name"] for s in report["steps"]][:2] == ["export", "quantize_dynamic"]
    # the terminal shows a line per step and the summary table
    assert "serve + bench over HTTP" in proc.stdout and "req/s" in proc.stdout


def test_resolved_config_replays(run_dir):
    out, _ = run_dir
    options = options_from_config(out / "config.yaml", {})
    assert options.model == "digits-cnn" and options.concurrency == [1, 4] and options.requests == 150
    assert yaml.safe_load((out / "config.yaml").read_text())["pipeline"]["out"] == str(out)


def test_failing_step_names_itself_keeps_artifacts_and_leaves_no_server(run_dir, env, tmp_path):
    out, _ = run_dir
    float_bytes = (out / FLOAT_FILE).read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    before = _serve_processes()
    proc = _run(["pipeline", "digits-cnn", "--out", str(out), "--data", str(bad), *SHORT], env)
    assert proc.returncode == 2, proc.stderr
    assert "step 'quantize_dynamic' failed" in proc.stderr and "not a readable .npz" in proc.stderr
    assert (out / FLOAT_FILE).read_bytes() == float_bytes  # re-export into the same dir is deterministic
    assert (out / "report.html").is_file()
    assert _serve_processes() - before == set()


def test_unknown_model_fails_in_export(env, tmp_path):
    proc = _run(["pipeline", "no-such-model", "--out", str(tmp_path / "o")], env, timeout=120)
    assert proc.returncode == 2
    assert "step 'export' failed" in proc.stderr and "digits-cnn" in proc.stderr


def test_config_file_errors(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "digits-mlp"\nrequests = 10\nbogus = 1\n')
    with pytest.raises(OptionError, match="unknown option"):
        options_from_config(cfg, {})
    cfg.write_text('model = "digits-mlp"\nrequests = 10\n')
    opts = options_from_config(cfg, {"requests": 20})
    assert opts == PipelineOptions(model="digits-mlp", requests=20)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it as root)")
def test_report_page_in_browser(run_dir, tmp_path):
    out, _ = run_dir
    seen = probe_page(out / "report.html", tmp_path)
    assert {"summary", "export", "quantize", "optimize", "compare", "bench"} <= set(seen["sections"])
    for section in ("summary", "bench"):
        images = seen["sections"][section]["images"]
        assert images and all(i["complete"] and i["width"] > 100 for i in images), section
    assert [r for r in seen["resources"] if not r.startswith(("data:", "file:"))] == []
