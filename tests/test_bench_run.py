"""Real benches: `onnxdeploy serve` children on free ports, loaded over real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import mlp_classifier, save, two_input_int_model
from click.testing import CliRunner

from onnxdeploy.bench import BenchOptions, run_bench, write_outputs
from onnxdeploy.bench.bodies import encode_all
from onnxdeploy.bench.engines.locust import render_locustfile
from onnxdeploy.bench.engines.native import LoadSpec, run_load
from onnxdeploy.bench.servers import ServerPool, ServerSpec, free_port, port_in_use
from onnxdeploy.bench.targets import Target, prepare, url_signature
from onnxdeploy.cli import cli
from onnxdeploy.compare import accuracy
from onnxdeploy.data import load_data
from onnxdeploy.errors import ServerError
from onnxdeploy.modelfile import signature
from onnxdeploy.runtimes import make_session, run

pytestmark = pytest.mark.slow


def _alive_with(text: str) -> list[int]:
    """Pids of processes whose command line mentions ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    return save(mlp_classifier(seed=1), d / "a.onnx"), save(mlp_classifier(seed=2, hidden=48), d / "b.onnx")


@pytest.fixture(scope="module")
def bench_report(models, tmp_path_factory):
    opts = BenchOptions(models=[str(m) for m in models], concurrency=[1, 4], requests=150, repeats=2,
                        warmup=20)
    report = run_bench(opts)
    return report, tmp_path_factory.mktemp("out")


@pytest.fixture(scope="module")
def running(models):
    """One real server kept up for the engine tests."""
    with ServerPool() as pool:
        (server,) = pool.start_all([ServerSpec(str(models[0]), "mlp", free_port(), threads=4)])
        name, sig = url_signature(server.url, None)
        target = Target(name, server.url, None, sig=sig)
        prepare(target, "digits", {})
        yield target


def test_report_structure_and_numbers(bench_report, models):
    report, _ = bench_report
    d = report.to_dict()
    assert [t["name"] for t in d["targets"]] == ["a", "b"]
    assert all(t["url"].startswith("http://127.0.0.1:") for t in d["targets"])
    assert len(d["runs"]) == 2 * 2 * 2 and d["mode"] == "closed"
    for entry in d["runs"]:
        assert entry["requests"] == 150 and entry["errors"] == {} and entry["rps"] > 0
        lat = entry["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert entry["mode"] == "closed" and entry["repeat"] in (0, 1)
        assert entry["server"]["compute_ms"] > 0 and 0 < entry["server"]["compute_share"] <= 1
    assert {(e["target"], e["concurrency"], e["repeats"]) for e in d["aggregated"]} == {
        (t, c, 2) for t in "ab" for c in (1, 4)}
    gen = d["generator"]
    assert gen["engine"] == "native" and gen["ceiling_rps"] > 0 and gen["cpu_percent"] > 0
    v = d["verdict"]
    assert v["rps_ratio"] > 0 and v["p99_ratio"] > 0 and isinstance(v["within_noise"], bool)
    # two repeats never rank; the smaller model (a: hidden 32 against 48) ships when speed is unranked
    assert not v["ranked"] and v["speed"] == "undecided"
    assert any("2 repeat(s), 3 needed to rank" in f for f in v["findings"])
    assert v["ship"] == "a" and v["text"].startswith("Ship a") and v["speedup"]["rps"] == pytest.approx(v["rps_ratio"])
    assert d["environment"]["cores"] >= 1 and "onnxruntime" in d["environment"]["versions"]
    assert d["failures"]["a"]["error_count"] == 0 and d["failure"] is None
    assert {s["target"] for s in d["server_split"]} == {"a", "b"}


def test_accuracy_through_api_matches_in_process(bench_report, models):
    report, _ = bench_report
    for name, path in zip("ab", models):
        data = load_data("digits", signature(onnx.load(str(path))))
        expected = accuracy(run(make_session(path, threads=1), data.inputs), data.labels)
        assert report.accuracy[name] == pytest.approx(expected, abs=1e-12)
    assert report.accuracy_delta == pytest.approx(report.accuracy["b"] - report.accuracy["a"])


def test_servers_are_gone_and_outputs_written(bench_report, models):
    report, out = bench_report
    for target in report.targets:
        assert not port_in_use(int(target.url.rsplit(":", 1)[1]))
    assert not _alive_with(str(models[0]))
    paths = write_outputs(report, out)
    names = {p.name for p in paths}
    assert {"report.json", "report.md", "latency_distribution.png", "rps_p99_by_level.png"} <= names
    loaded = json.loads((out / "report.json").read_text())
    assert loaded["verdict"]["text"] == report.verdict["text"]
    assert (out / "rps_p99_by_level.png").read_bytes()[:4] == b"\x89PNG"
    assert report.verdict["text"] in (out / "report.md").read_text()


def test_open_loop_keeps_its_schedule(running):
    host, port = running.host_port
    rate, total = 200.0, 300
    res = run_load(LoadSpec(host, port, encode_all(running.requests, f"{host}:{port}"), concurrency=2,
                            total=total, rate=rate, arrivals="uniform"))
    assert res.mode == "open" and res.errors == {} and res.ok == total
    achieved = total / res.elapsed_s
    assert achieved == pytest.approx(rate, rel=0.15)
    # sends left on time: the median send within 20 ms of its scheduled time (4 send intervals at
    # this rate; quiet cores give well under 2 ms, two CPU hogs on both cores gave 3.6 ms: the
    # bound catches a generator that lost its schedule, not a busy machine)
    assert res.lateness_us.min() >= 0 and np.median(res.lateness_us) < 20_000
    # latency runs from the scheduled time, so it includes any lateness of the send
    assert res.latencies_us.min() > 0


def test_bench_url_mode_with_locust(running):
    opts = BenchOptions(urls=[running.url], names=[running.name], concurrency=[2], requests=120,
                        repeats=1, warmup=0, engine="locust", accuracy=False)
    report = run_bench(opts)
    (run_,) = report.runs
    assert run_.engine == "locust" and run_.requests >= 120 and run_.errors == {}
    assert run_.latency_ms["p50"] <= run_.latency_ms["p99"] <= run_.latency_ms["max"]
    # sub-millisecond resolution: Locust's own stats would round these to whole ms
    assert (run_.latencies_us % 1000 != 0).mean() > 0.5
    assert report.generator["ceiling_rps"] > 0 and report.verdict is None


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not on the PATH (apt-get install wrk)")
def test_bench_url_mode_with_wrk(running):
    opts = BenchOptions(urls=[running.url], names=[running.name], concurrency=[2], duration_s=1.0,
                        repeats=1, warmup=0, engine="wrk", accuracy=False)
    (run_,) = run_bench(opts).runs
    assert run_.engine == "wrk" and run_.requests > 50 and run_.errors == {}
    assert 0 < run_.latency_ms["p50"] <= run_.latency_ms["p99"] <= run_.latency_ms["max"]


def test_locustfile_is_valid_python(running):
    text = render_locustfile(list(running.requests.bodies))
    compile(text, "locustfile.py", "exec")
    assert "FastHttpUser" in text and "/predict" in text


def test_server_that_fails_to_load_leaves_nothing_behind(tmp_path, models):
    bad = mlp_classifier(seed=3)
    bad.graph.node[1].op_type = "NoSuchOp"  # parses as ONNX, ONNX Runtime refuses it
    bad_path = tmp_path / "broken.onnx"
    onnx.save(bad, str(bad_path))
    good = save(mlp_classifier(seed=1), tmp_path / "good.onnx")  # not the one the module server uses
    opts = BenchOptions(models=[str(good), str(bad_path)], concurrency=[1], requests=10,
                        repeats=1, ready_timeout_s=15)
    with pytest.raises(ServerError) as err:
        run_bench(opts)
    assert "broken" in str(err.value) and "log" in str(err.value)
    assert "NoSuchOp" in str(err.value)
    assert not _alive_with(str(bad_path)) and not _alive_with(str(good))


def test_cli_user_errors_exit_2(tmp_path, models):
    runner = CliRunner()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        res = runner.invoke(cli, ["bench", str(models[0]), str(models[1]), "--ports", f"{port},{free_port()}",
                                  "--requests", "10", "--repeats", "1"])
    finally:
        busy.close()
    assert res.exit_code == 2 and f"port {port}" in res.output and "in use" in res.output
    two = save(two_input_int_model(), tmp_path / "two.onnx")
    res = runner.invoke(cli, ["bench", str(models[0]), str(two), "--data", "digits"])
    assert res.exit_code == 2 and "DataError" in res.output and "two" in res.output
    res = runner.invoke(cli, ["bench", str(models[0]), "--concurrency", "0,x"])
    assert res.exit_code == 2 and "--concurrency" in res.output


def test_tables_fit_an_80_column_terminal(bench_report, monkeypatch, capsys):
    from onnxdeploy.cli.bench import render

    report, _ = bench_report
    monkeypatch.setenv("COLUMNS", "80")
    render(report)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out and "target" in out and "req/s" in out and "p99 ms" in out
    assert report.verdict["text"].split()[0] in out
