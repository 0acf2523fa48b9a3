"""``serve`` speaks KServe's runtime contract: --model_name/--model_dir/--http_port, PORT, and
every option from ``ONNXDEPLOY_<OPTION>`` (a flag wins over its variable, PORT over the default).

Real server processes (granian) on free ports, like tests/test_serve_server.py.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from builders import mlp_classifier, save

from onnxdeploy.bench.servers import free_port
from onnxdeploy.environment import FLAG_NAMES, cpu_flags
from onnxdeploy.errors import ModelLoadError
from onnxdeploy.modelfile import MEASURED_CPU_SUFFIX, served_model_in
from onnxdeploy.serve.runner import measured_cpu_warning

START_TIMEOUT_S = 30
#: variables a developer's shell might set that would change what these tests start
CLEAN = ("PORT", "ONNXDEPLOY_PORT", "ONNXDEPLOY_NAME", "ONNXDEPLOY_MAX_BATCH_SIZE",
         "ONNXDEPLOY_MODEL", "ONNXDEPLOY_MODEL_DIR", "ONNXDEPLOY_HOST")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update(extra or {})
    return env


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxdeploy", "serve", *map(str, args)],
                          capture_output=True, text=True, env=_env(env), timeout=60)


class Proc:
    """``onnxdeploy serve ARGS`` with the environment given; ready once ``port`` answers."""

    def __init__(self, args, port: int, env: dict[str, str], log: Path):
        self.port = port
        self.log_path = log
        self.log = open(log, "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "onnxdeploy", "serve", *map(str, args)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=_env(env))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.text()}")
            try:
                if self.request("GET", "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready on {port}:\n{self.text()}")

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body else {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def text(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kserve")
    one = root / "one"
    one.mkdir()
    save(mlp_classifier(seed=0), one / "digits.onnx")
    baked = save(mlp_classifier(seed=1), root / "baked.onnx")
    empty = root / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("k8s links and dotfiles do not count")
    return {"root": root, "one": one, "baked": baked, "empty": empty}


@pytest.fixture
def start(dirs):
    procs: list[Proc] = []

    def _start(*args, port: int, env: dict[str, str] | None = None):
        procs.append(Proc(args, port, env or {}, dirs["root"] / f"serve-{port}.log"))
        return procs[-1]

    yield _start
    for p in procs:
        p.stop()


def _infer(proc: Proc, name: str, x: np.ndarray) -> np.ndarray:
    status, body = proc.request("POST", f"/v2/models/{name}/infer", orjson.dumps({"inputs": [
        {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}))
    assert status == 200, body
    out = json.loads(body)
    assert out["model_name"] == name
    return np.array(out["outputs"][0]["data"], np.float32).reshape(len(x), -1)


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _batching_on(proc: Proc) -> bool:
    status, body = proc.request("GET", "/metrics")
    assert status == 200
    return b"onnxdeploy_batch_size" in body


X = np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32)


def test_kserve_flags_serve_the_model_dir_on_http_port(start, dirs):
    port = free_port()
    # the runtime's own args; PORT disagrees and loses to the flag; MODEL is the baked fallback
    p = start(dirs["baked"], "--model_name=digits-v1", f"--model_dir={dirs['one']}",
              f"--http_port={port}", port=port, env={"PORT": str(free_port())})
    got = _infer(p, "digits-v1", X)
    np.testing.assert_allclose(got, _ort(dirs["one"] / "digits.onnx", X), rtol=1e-5, atol=1e-6)
    assert "digits.onnx: " in p.text() and " workers x 1 ORT threads" in p.text()


def test_port_and_env_precedence(start, dirs):
    # PORT alone sets the port; an empty --model_dir falls back to MODEL; ONNXDEPLOY_* options
    port = free_port()
    p = start(dirs["baked"], "--model_dir", dirs["empty"], port=port,
              env={"PORT": str(port), "ONNXDEPLOY_MAX_BATCH_SIZE": "4",
                   "ONNXDEPLOY_NAME": "from-env", "ONNXDEPLOY_WORKERS": "1"})
    np.testing.assert_allclose(_infer(p, "from-env", X), _ort(dirs["baked"], X), rtol=1e-5, atol=1e-6)
    assert _batching_on(p)
    assert "is empty; serving" in p.text()

    # ONNXDEPLOY_PORT beats PORT; flags beat their variables
    port2 = free_port()
    q = start(dirs["baked"], "--max-batch-size", "0", "--model_name", "from-flag", port=port2,
              env={"PORT": str(free_port()), "ONNXDEPLOY_PORT": str(port2),
                   "ONNXDEPLOY_MAX_BATCH_SIZE": "4", "ONNXDEPLOY_NAME": "from-env",
                   "ONNXDEPLOY_WORKERS": "1"})
    _infer(q, "from-flag", X)
    assert not _batching_on(q)


def test_sigterm_exits_0_and_readiness_needs_the_model(start, dirs):
    port = free_port()
    p = start("--model_dir", dirs["one"], "--graceful-timeout", "5", port=port,
              env={"PORT": str(port), "ONNXDEPLOY_WORKERS": "1"})
    status, body = p.request("GET", "/v2/models/digits/ready")
    assert status == 200 and json.loads(body)["ready"] is True
    assert p.stop() == 0


@pytest.mark.parametrize("args, expected", [
    (["--name", "a", "--model_name", "b", "m.onnx"], "--name a and --model_name b disagree"),
    (["--port", "9000", "--http_port", "9001", "m.onnx"], "--port 9000 and --http_port 9001 disagree"),
    ([], "no model given"),
])
def test_disagreeing_or_missing_flags_exit_2_with_one_line(args, expected):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], r.stderr


def test_bad_port_variable_exits_2(dirs):
    r = cli(dirs["baked"], env={"PORT": "eighty"})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "OptionError: PORT='eighty': not a TCP port; expected a number from 1 to 65535 (or give --port)"]


def test_model_dirs_without_exactly_one_onnx_exit_2(dirs, tmp_path):
    two = tmp_path / "two"
    two.mkdir()
    for n in ("a.onnx", "b.onnx"):
        shutil.copy(dirs["baked"], two / n)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "weights.bin").write_bytes(b"\0")
    cases = [
        (["--model_dir", two], "2 .onnx files (a.onnx, b.onnx); expected exactly one"),
        (["--model_dir", junk], "no .onnx file (found: weights.bin); expected exactly one"),
        # a non-empty --model_dir wins over MODEL, so its problem is the one reported
        ([dirs["baked"], "--model_dir", junk], "no .onnx file (found: weights.bin)"),
        (["--model_dir", dirs["empty"]], "no .onnx file (found: nothing)"),
        (["--model_dir", tmp_path / "absent"], "not a directory"),
    ]
    for args, expected in cases:
        r = cli(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and expected in lines[0], (args, r.stderr)


def test_pipeline_dir_serves_the_shipped_variant(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for n, seed in (("model.onnx", 0), ("model.int8.onnx", 1), ("model.opt.onnx", 2)):
        save(mlp_classifier(seed=seed), run / n)
    report = {"verdict": {"ship": "int8"}, "variants": [
        {"name": "float32", "path": "/elsewhere/out/model.onnx"},
        {"name": "int8", "path": "/elsewhere/out/model.int8.onnx"},  # the directory moved
        {"name": "float32-opt", "path": "/elsewhere/out/model.opt.onnx"}]}
    (run / "report.json").write_text(json.dumps(report))
    assert served_model_in(run) == run / "model.int8.onnx"
    report["verdict"]["ship"] = "bf16-openvino"
    (run / "report.json").write_text(json.dumps(report))
    with pytest.raises(ModelLoadError, match="names no shipped variant"):
        served_model_in(run)


def test_measured_cpu_warning_names_missing_flags_and_precision(dirs, tmp_path):
    model = save(mlp_classifier(), tmp_path / "m.onnx")
    assert measured_cpu_warning(model) is None  # nothing recorded: nothing to say
    every = {f: True for f in FLAG_NAMES}
    (tmp_path / ("m.onnx" + MEASURED_CPU_SUFFIX)).write_text(
        json.dumps({"cpu": "Big Iron 9000", "flags": every}))
    text = measured_cpu_warning(model, flags={**every, "vnni": False, "amx": False})
    assert "Big Iron 9000" in text and "lacks vnni, amx" in text and "serving fp32 on onnxruntime" in text
    assert measured_cpu_warning(model, flags=every) is None


def test_measured_cpu_warning_is_logged_at_start(start, dirs, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    save(mlp_classifier(), d / "m.onnx")
    (d / ("m.onnx" + MEASURED_CPU_SUFFIX)).write_text(
        json.dumps({"cpu": "Big Iron 9000", "flags": {f: True for f in FLAG_NAMES}}))
    port = free_port()
    p = start(d / "m.onnx", "--port", port, port=port, env={"ONNXDEPLOY_WORKERS": "1"})
    here = cpu_flags()
    missing = [f for f in FLAG_NAMES if not here[f]]
    if missing:  # parametrized by the CPU: a CPU with every flag has nothing to warn about
        assert f"this CPU lacks {', '.join(missing)}" in p.text()
    else:
        assert "this CPU lacks" not in p.text()
