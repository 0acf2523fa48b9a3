"""The main job end to end: a real pipeline run (real training/export, quantization, servers, HTTP load)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from browser import CHROMIUM, probe_page

from onnxdeploy.errors import OptionError
from onnxdeploy.measure import runtime_variants
from onnxdeploy.pipeline import (
    FLOAT_FILE,
    INT8_FILE,
    OPT_FILE,
    PipelineOptions,
    options_from_config,
)

SHORT = ["--concurrency", "1,4", "--requests", "150", "--repeats", "1"]
#: the float model on other runtimes the pipeline adds here (OpenVINO FP32, BF16 on BF16 CPUs)
RUNTIME_NAMES = {name for name, _, _ in runtime_variants()}


def _serve_processes(marker: str = "") -> set[int]:
    """PIDs of running `onnxdeploy serve` processes whose command line holds ``marker`` (the run's
    output directory: other test runs on the machine may serve models of their own)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (any(b"onnxdeploy" in part for part in cmd) and b"serve" in cmd
                and any(marker.encode() in part for part in cmd)):
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
    proc = _run(["pipeline", "digits-cnn", "--out", str(out), *SHORT], env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert _serve_processes(str(out)) == set()
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
    # float32, auto's int8, and at most one more in-process contender are served
    served = [t["name"] for t in bench["targets"]]
    assert served[:2] == ["float32", "int8"] and len(served) <= 3 and served == report["verdict"]["served"]
    assert all(not r["errors"] for r in bench["runs"])
    # accuracy measured through each server's HTTP API agrees with the in-process figure
    assert bench["accuracy"]["float32"] == pytest.approx(report["compare"]["accuracy"]["a"], abs=1e-9)
    assert bench["accuracy"]["int8"] == pytest.approx(report["compare"]["accuracy"]["b"], abs=1e-9)
    assert [s["name"] for s in report["steps"]][:2] == ["export", "optimize"]
    # the terminal shows a line per step and the summary table
    assert "serve + bench over HTTP" in proc.stdout and "req/s" in proc.stdout
    # one run, one verdict: exactly one line says "Ship", and it is the pipeline's
    ships = [line for line in proc.stdout.splitlines() if re.search(r"\bShip\b", line)]
    assert len(ships) == 1 and ships[0].lstrip().startswith("Verdict: Ship"), ships
    verdict = report["verdict"]
    assert verdict["ship"] in served and verdict["speed"] in ("faster", "equal", "slower", "undecided")
    assert verdict["rested_on"] in ("speed", "size", "simplicity", "size and quality")
    # no section holds a decision of its own that could disagree: bench reports findings only
    assert "ship" not in bench["verdict"] and "Ship" not in bench["verdict"]["text"]
    assert set(bench["verdict"]["comparisons"]) == set(served[1:])
    if verdict["rested_on"] == "size and quality":  # one repeat never ranks speed: it says so
        assert verdict["speed"] == "undecided" and "rests on size and quality" in verdict["text"]


def _medians(figures):
    return {k: f["median_ms"] for k, f in figures.items()}


def test_every_section_shows_the_one_latency_measurement(run_dir):
    out, _ = run_dir
    report = json.loads((out / "report.json").read_text())
    lat = report["latency"]
    names = {"float32", "int8-dynamic", "int8", "float32-opt"} | RUNTIME_NAMES
    assert set(lat["variants"]) == names
    for figs in lat["variants"].values():
        for f in figs.values():
            assert f["min_ms"] <= f["median_ms"] <= f["max_ms"] and f["runs"] >= f["rounds"] >= 3
    assert 0 <= lat["noise"] == max(lat["noise_by_batch"].values())
    v = {k: _medians(f) for k, f in lat["variants"].items()}
    assert report["quantize"]["latency_ms"] == {"before": v["float32"], "after": v["int8"]}
    assert report["quantize_dynamic"]["latency_ms"] == {"before": v["float32"], "after": v["int8-dynamic"]}
    assert report["optimize"]["latency_ms"] == {"before": v["float32"], "after": v["float32-opt"]}
    assert report["compare"]["latency_ms"] == {"a": v["float32"], "b": v["int8"]}
    rows = {r["name"]: r for r in report["summary"]["variants"]}
    assert {n: rows[n]["latency_ms"] for n in names} == v
    # auto's chosen candidate in its own table is the same figure too
    chosen = report["quantize"]["chosen"]["name"]
    cand = next(c for c in report["quantize"]["candidates"] if c["name"] == chosen)
    assert _medians(cand["latency"]) == v["int8"]


def test_lineage_verdict_environment_sessions(run_dir):
    import hashlib

    out, _ = run_dir
    report = json.loads((out / "report.json").read_text())
    lineage = {v["name"]: v for v in report["variants"]}
    assert set(lineage) == {"float32", "int8-dynamic", "int8", "float32-opt"} | RUNTIME_NAMES
    assert lineage["float32"]["parent"] == "pytorch:digits-cnn"
    for name, v in lineage.items():
        assert v["sha256"] == hashlib.sha256(Path(v["path"]).read_bytes()).hexdigest()
        assert v["size_bytes"] == Path(v["path"]).stat().st_size
        if name != "float32":
            assert v["parent"] == "float32" and v["produced_by"]["step"] in ("quantize", "optimize", "runtime")
        assert v["runtime"] == ("openvino" if name in RUNTIME_NAMES else "onnxruntime")
    assert report["verdict"]["ship"] in lineage and report["verdict"]["text"].startswith("Ship ")
    assert report["summary"]["verdict"] == report["verdict"]["text"]
    env = report["environment"]
    assert set(env["flags"]) == {"avx2", "avx512", "vnni", "bf16", "amx"} and env["cores"] >= 1
    assert "onnxruntime" in env["versions"]
    # the float model is loaded into three sessions: the reference, its A/A control, and one with
    # ORT's rewrites off for the optimizer's proof (export's parity session runs on its temp file)
    assert report["sessions"]["float32"] <= 3


def test_markdown_and_html_show_the_same_real_numbers(run_dir):
    out, _ = run_dir
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    int8 = report["latency"]["variants"]["int8"]["batch_1"]
    acc = report["export"]["accuracy"]["onnx"]
    for text in (f"{int8['median_ms']:.3f} ({int8['min_ms']:.3f}", f"{100 * acc:.2f}%",
                 report["verdict"]["ship"], report["variants"][2]["sha256"][:12]):
        assert text in md and text in page, text
    assert "Lineage" in md and "Environment" in md
    assert "http://" not in page and "https://" not in page


def test_resolved_config_replays(run_dir):
    out, _ = run_dir
    options = options_from_config(out / "config.yaml", {})
    assert options.model == "digits-cnn" and options.concurrency == [1, 4] and options.requests == 150
    assert yaml.safe_load((out / "config.yaml").read_text())["pipeline"]["out"] == str(out)


def test_failing_step_names_itself_keeps_artifacts_and_leaves_no_server(env, tmp_path):
    out = tmp_path / "failed"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    proc = _run(["pipeline", "digits-cnn", "--out", str(out), "--data", str(bad), *SHORT], env)
    assert proc.returncode == 2, proc.stderr
    assert "step 'optimize' failed" in proc.stderr and "bad.npz" in proc.stderr
    assert (out / FLOAT_FILE).is_file()  # the export that ran is kept
    assert not (out / "report.html").exists() and not (out / OPT_FILE).exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp leftovers
    assert _serve_processes(str(out)) == set()


@pytest.mark.parametrize("args, words", [
    (["no-such-model"], "unknown built-in model 'no-such-model'"),
    (["path/to/model.onnx"], "the pipeline starts from a PyTorch model"),
    (["digits-mlp", "--requests", "100", "--duration", "2"], "requests and duration"),
])
def test_bad_input_is_refused_before_any_step(env, tmp_path, args, words):
    out = tmp_path / "o"
    proc = _run(["pipeline", *args, "--out", str(out)], env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "OptionError" in lines[0] and words in lines[0], proc.stderr
    assert not out.exists()  # no config written for a run that never started


def test_config_file_errors(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "digits-mlp"\nrequests = 10\nbogus = 1\n')
    with pytest.raises(OptionError, match="unknown option"):
        options_from_config(cfg, {})
    cfg.write_text('model = "digits-mlp"\nrequests = 10\n')
    opts = options_from_config(cfg, {"requests": 20})
    assert opts == PipelineOptions(model="digits-mlp", requests=20)
    for text, words in (('repeats = "three"\n', "repeats = 'three': expected a positive integer"),
                        ("concurrency = [0, 8]\n", "expected a list of positive integers"),
                        ("max_accuracy_drop = 2.0\n", "max_accuracy_drop = 2.0")):
        cfg.write_text(text)
        with pytest.raises(OptionError, match=words.replace("[", r"\[")):
            options_from_config(cfg, {})


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it as root)")
def test_report_page_in_browser(run_dir, tmp_path):
    out, _ = run_dir
    seen = probe_page(out / "report.html", tmp_path)
    assert {"summary", "export", "quantize", "optimize", "compare", "bench", "lineage",
            "environment"} <= set(seen["sections"])
    assert json.loads((out / "report.json").read_text())["verdict"]["text"] in seen["sections"]["summary"]["text"]
    for section in ("summary", "bench"):
        images = seen["sections"][section]["images"]
        assert images and all(i["complete"] and i["width"] > 100 for i in images), section
    assert [r for r in seen["resources"] if not r.startswith(("data:", "file:"))] == []


def test_summary_table_fits_80_columns(run_dir):
    from rich.console import Console

    from onnxdeploy.cli.pipeline import summary_table
    from onnxdeploy.pipeline import PipelineReport

    out, _ = run_dir
    rows = json.loads((out / "report.json").read_text())["summary"]["variants"]
    console = Console(width=80, record=True)
    console.print(summary_table(PipelineReport(model="digits-cnn", out_dir=str(out), options={}, rows=rows),
                                width=80))
    text = console.export_text()
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    assert all(r["name"] in text for r in rows)
