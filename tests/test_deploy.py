"""``containerize``: the build context, the image (built with podman on a Debian base made here),
run the way the generated ServingRuntime says and as the generated Deployment (podman kube play),
bad input, and the manifests KServe reads.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
import yaml
from builders import mlp_classifier, mlp_with_extra_work, save
from containers import podman, wait_http

from onnxdeploy.bench.servers import free_port
from onnxdeploy.deploy import context as ctxmod
from onnxdeploy.deploy.context import ContainerizeOptions, containerize_model, render_containerfile
from onnxdeploy.deploy.image import GRPC_PORT
from onnxdeploy.deploy.manifests import (
    GRACE_MARGIN_S,
    ManifestOptions,
    Resources,
    deployment,
    inference_service,
    serving_runtime,
    target_from_bench,
)
from onnxdeploy.modelfile import MEASURED_CPU_SUFFIX, META_RUNTIME, set_metadata

IMAGE = f"localhost/onnxdeploy-test:{os.getpid()}"


def cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxdeploy", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _infer(port: int, name: str, x: np.ndarray, timeout: float = 30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", f"/v2/models/{name}/infer", orjson.dumps({"inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}),
            {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _stub_wheels(dest: Path, requirements: list[str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n")


def api_errors(docs: list[dict]) -> list[str | None]:
    """For each manifest: None if KServe's / Kubernetes' own API type accepts it, else why not
    (tests/kserve_types.py, in a process of its own: see there why)."""
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("kserve_types.py"))],
                       input=json.dumps(docs), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _manifest_options(**kw) -> ManifestOptions:
    return ManifestOptions(image="registry.example.com/digits:1", name="digits",
                           model_name="digits", resources=Resources(1, 192 * 2**20, 384 * 2**20),
                           storage_uri="pvc://models/digits", target_rps=200, canary=25, **kw)


# ----------------------------------------------------------------------------- fast: no builder


def test_containerfile_works_on_python_slim_and_debian_alike():
    text = render_containerfile(base="python:3.11-slim", model_file="m.onnx",
                                serve_env={"ONNXDEPLOY_MAX_BATCH_SIZE": "8"}, init=True,
                                sha256="ab" * 32, python="3.11")
    froms = [line for line in text.splitlines() if line.startswith("FROM")]
    assert froms == ["FROM python:3.11-slim AS build", "FROM python:3.11-slim"]
    assert "python3 -m venv /opt/onnxdeploy/venv" in text
    assert "/usr/local/bin/python" not in text and "\npip " not in text
    assert "--no-index" in text and "pip uninstall -y -q pip setuptools" in text
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["/opt/onnxdeploy/init", "--", "/opt/onnxdeploy/venv/bin/onnxdeploy", "serve"]' in text
    for env in ('PORT="8080"', 'ONNXDEPLOY_HOST="0.0.0.0"', 'TMPDIR="/tmp"',
                'ONNXDEPLOY_MODEL="/opt/onnxdeploy/model/m.onnx"', 'ONNXDEPLOY_MAX_BATCH_SIZE="8"'):
        assert env in text
    assert "torch" not in text


def test_requirements_are_the_serve_set_pinned_without_torch():
    reqs = ctxmod.pinned_requirements(ctxmod.SERVE_PACKAGES)
    names = {r.split("==")[0] for r in reqs}
    assert {"onnxruntime", "onnx", "numpy", "granian", "flask", "orjson", "prometheus-client"} <= names
    assert not names & {"torch", "transformers", "scikit-learn", "scipy", "sympy", "tokenizers"}
    import onnxruntime

    assert f"onnxruntime=={onnxruntime.__version__}" in reqs


def test_context_only_from_a_run_dir_takes_the_shipped_variant(tmp_path, monkeypatch):
    monkeypatch.setattr(ctxmod, "write_wheels", _stub_wheels)
    run = tmp_path / "run"
    run.mkdir()
    save(mlp_classifier(seed=0), run / "model.onnx")
    save(mlp_classifier(seed=1), run / "model.int8.onnx", external_data=True)
    flags = {"avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": False}
    (run / "report.json").write_text(json.dumps({
        "verdict": {"ship": "int8"}, "environment": {"cpu": "EPYC", "flags": flags},
        "variants": [{"name": "float32", "path": str(run / "model.onnx")},
                     {"name": "int8", "path": str(run / "model.int8.onnx")}]}))
    out = tmp_path / "ctx"
    report = containerize_model(ContainerizeOptions(source=str(run), image="x:1",
                                                    context_only=str(out)))
    assert report.model_file == "model.int8.onnx" and report.context == str(out)
    files = sorted(p.name for p in (out / "model").iterdir())
    assert "model.int8.onnx" in files and "model.onnx" not in files
    assert any(f.endswith(".data") for f in files)  # its external data travelled with it
    measured = json.loads((out / "model" / ("model.int8.onnx" + MEASURED_CPU_SUFFIX)).read_text())
    assert measured["flags"] == flags and measured["cpu"] == "EPYC"
    assert (out / "Containerfile").is_file() and not list(tmp_path.glob(".onnxdeploy-context-*"))


def test_bad_input_exits_2_with_one_line_and_leaves_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    two = tmp_path / "two"
    two.mkdir()
    for n in ("a.onnx", "b.onnx"):
        save(mlp_classifier(), two / n)
    model = save(mlp_classifier(), tmp_path / "m.onnx")
    out = tmp_path / "ctx"
    cases = [
        ([empty, "-t", "x", "--context-only", out], "no .onnx file (found: notes.txt)"),
        ([two, "-t", "x", "--context-only", out], "2 .onnx files (a.onnx, b.onnx)"),
        ([tmp_path / "nope.onnx", "-t", "x", "--context-only", out], "no such file or directory"),
        ([model, "-t", "x", "--context-only", out, "--set", "colour=blue"], "--set colour=blue"),
        ([model, "-t", "x", "--context-only", out, "--set", "max_batch_size=lots"],
         "ONNXDEPLOY_MAX_BATCH_SIZE='lots'"),
        ([model, "-t", "x", "--context-only", out, "--canary", "10"], "only means something with --kserve"),
        ([model, "-t", "x", "--context-only", out, "--kserve", tmp_path / "k", "--target-rps", "5",
          "--from-bench", tmp_path / "b.json"], "--target-rps and --from-bench"),
        ([model, "-t", "x", "--context-only", out, "--kserve", tmp_path / "k",
          "--from-bench", tmp_path / "b.json"], "--from-bench"),
        ([model, "-t", "x", "--context-only", empty], "already exists and is not an empty directory"),
    ]
    for args, expected in cases:
        r = cli("containerize", *args)
        assert expected in one_line(r), (args, r.stderr)
        assert not out.exists() and not (tmp_path / "k").exists()
        assert not list(tmp_path.glob(".onnxdeploy-context-*"))


def test_sigterm_mid_containerize_leaves_no_context_behind(tmp_path):
    # containerize writes its context into a temporary directory (beside --context-only's
    # destination); a SIGTERM while it gathers the wheels must unwind and remove it
    model = save(mlp_classifier(), tmp_path / "m.onnx")
    out = tmp_path / "ctx"
    proc = subprocess.Popen([sys.executable, "-m", "onnxdeploy", "containerize", str(model),
                             "-t", "x", "--context-only", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".onnxdeploy-context-*/model")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no context directory appeared"
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert not out.exists() and not list(tmp_path.glob(".onnxdeploy-context-*")), \
        sorted(p.name for p in tmp_path.iterdir())


def test_missing_builder_exits_2(tmp_path):
    model = save(mlp_classifier(), tmp_path / "m.onnx")
    # a PATH with no builder at all; python is given by its full path
    r = cli("containerize", model, "-t", "x", env={"PATH": str(tmp_path)})
    assert "no image builder works here" in one_line(r)
    r = cli("containerize", model, "-t", "x", "--builder", "buildah", env={"PATH": str(tmp_path)})
    assert "--builder buildah: buildah: not installed" in one_line(r)


def test_docker_client_without_daemon_does_not_count(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text("#!/bin/sh\n[ \"$1\" = info ] && { echo 'Cannot connect to the "
                                 "Docker daemon' >&2; exit 1; }\nexit 0\n")
    (fake / "docker").chmod(0o755)
    model = save(mlp_classifier(), tmp_path / "m.onnx")
    r = cli("containerize", model, "-t", "x", "--builder", "docker", env={"PATH": str(fake)})
    assert "'docker info' failed (Cannot connect to the Docker daemon)" in one_line(r)


def test_autoscaling_target_from_a_bench_slo_report(tmp_path):
    report = {"capacity": {"float32": {"rps": 500.0, "valid": True},
                           "int8": {"rps": 800.0, "valid": True}},
              "slo": {"bounds": [{"percentile": "p99", "ms": 20}]},
              "environment": {"usable_cores": 2}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(report))
    target, cores, source = target_from_bench(str(path), "int8")
    assert (target, cores) == (640, 2) and "p99 <= 20 ms" in source
    target, _, source = target_from_bench(str(path), "other")
    assert target == 400 and "lowest capacity" in source


def test_manifests_are_kserve_and_kubernetes_api_objects():
    o = _manifest_options()
    docs = [serving_runtime(o), inference_service(o), *deployment(o)]
    assert [d["kind"] for d in docs] == ["ServingRuntime", "InferenceService", "Deployment",
                                         "Service"]
    # the check refuses a wrong manifest: a field KServe does not have, a value of the wrong type,
    # a required field missing
    bad = [serving_runtime(o) for _ in range(3)] + [inference_service(o), deployment(o)[0]]
    c = bad[0]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    bad[1]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    del bad[2]["spec"]["containers"][0]["name"]
    bad[3]["spec"]["predictor"]["model"]["protocolVersions"] = ["v2"]
    del bad[4]["spec"]["selector"]
    errors = api_errors(json.loads(json.dumps(docs + bad)))
    assert errors[:4] == [None] * 4, errors[:4]
    assert errors[4] == ("ServingRuntime.spec.containers[0]: ['readinesProbe'] are not fields of "
                         "V1Container")
    assert errors[5] == ("ServingRuntime.spec.containers[0].ports[0].containerPort: '8080' is not "
                         "of type int")
    assert errors[6].startswith("ServingRuntime.spec.containers[0]: V1Container refused it") \
        and "name" in errors[6]
    assert errors[7] == ("InferenceService.spec.predictor.model: ['protocolVersions'] are not "
                         "fields of V1beta1ModelSpec")
    assert errors[8].startswith("Deployment.spec: V1DeploymentSpec refused it") \
        and "selector" in errors[8]


def _with_runtime(path: Path, runtime: str) -> Path:
    proto = mlp_classifier(seed=0)
    set_metadata(proto, {META_RUNTIME: runtime})
    return save(proto, path)


def test_an_openvino_variant_brings_openvino_into_the_image(tmp_path, monkeypatch):
    import openvino

    monkeypatch.setattr(ctxmod, "write_wheels", _stub_wheels)
    cases = [(_with_runtime(tmp_path / "ov.onnx", "openvino"), {}, "openvino"),
             (_with_runtime(tmp_path / "ort.onnx", "onnxruntime"), {}, "onnxruntime"),
             (save(mlp_classifier(), tmp_path / "plain.onnx"), {}, "onnxruntime"),
             (save(mlp_classifier(), tmp_path / "plain2.onnx"), {"ONNXDEPLOY_RUNTIME": "openvino"},
              "openvino")]
    for i, (model, env, runtime) in enumerate(cases):
        out = tmp_path / f"ctx{i}"
        report = containerize_model(ContainerizeOptions(source=str(model), image="x:1",
                                                        context_only=str(out), serve_env=env))
        assert report.runtime == runtime, model
        reqs = (out / "wheels" / "requirements.txt").read_text().split()
        text = (out / "Containerfile").read_text()
        names = {r.split("==")[0] for r in reqs}
        assert not names & {"torch", "nncf", "transformers"}
        if runtime == "openvino":
            assert f"openvino=={openvino.__version__.split('-')[0]}" in reqs, reqs
            assert ", grpc, openvino\"" in text  # the build fails if it cannot be imported
        else:
            assert "openvino" not in names and "openvino" not in text.split("LABEL")[0]
        assert f'io.onnxdeploy.runtime="{runtime}"' in text


def test_a_docker_client_without_a_daemon_exits_2_and_leaves_nothing(tmp_path):
    """This machine has the docker client (``/usr/local/bin/docker``) but no daemon (no
    dockerd, nothing at /var/run/docker.sock; the session cannot run one), so a docker build
    cannot run here: what is tested is that the client alone is refused before anything is made."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client here")
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        pytest.skip("a docker daemon answers here: the refusal cannot be shown")
    model = save(mlp_classifier(), tmp_path / "m.onnx")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    image = "localhost/onnxdeploy-docker-never:1"
    r = cli("containerize", model, "-t", image, "--builder", "docker", "--kserve", tmp_path / "k",
            env={"TMPDIR": str(scratch)})
    line = one_line(r)
    assert "--builder docker: docker: 'docker info' failed (Cannot connect to the Docker daemon" in line
    assert "expected a working podman, buildah or docker" in line
    assert not list(scratch.iterdir()) and not (tmp_path / "k").exists()  # no context, no manifests
    if shutil.which("podman"):
        assert subprocess.run(["podman", "image", "exists", image]).returncode != 0


# ----------------------------------------------------------------------------- podman


# the image (``built``, session-scoped) is conftest.py's: shared with test_serve_hostile_container


def _run_as_servingruntime(built, name: str, models: Path, extra=()) -> tuple[str, int, dict]:
    """(container id, host port of the first (HTTP) port, the container spec); every port the
    ServingRuntime lists is published (``c["host_ports"]`` maps container port -> host port)."""
    return _run_as_rt(built, name, models, extra)


def _run_as_rt(built, name: str, models: Path, extra=()) -> tuple[str, int, dict]:
    """podman run with the ServingRuntime's container: args ({{.Name}} filled in), env, port,
    user, resources; ``models`` mounted read-only at /mnt/models; read-only root."""
    rt = yaml.safe_load((built["k8s"] / "servingruntime.yaml").read_text())
    (c,) = rt["spec"]["containers"]
    host_ports = {p["containerPort"]: free_port() for p in c["ports"]}
    port = host_ports[c["ports"][0]["containerPort"]]
    c["host_ports"] = host_ports
    publish = [x for cp, hp in host_ports.items() for x in ("-p", f"127.0.0.1:{hp}:{cp}")]
    limits = c["resources"]["limits"]
    sec = c["securityContext"]
    args = [a.replace("{{.Name}}", name) for a in c["args"]]
    env = [x for e in c.get("env", []) for x in ("-e", f"{e['name']}={e['value']}")]
    argv = ["run", "-d", "--read-only", "--user", f"{sec['runAsUser']}:{sec['runAsGroup']}",
            "--cpus", limits["cpu"], "--memory", limits["memory"].replace("Mi", "m"), *publish,
            "-v", f"{models}:/mnt/models:ro", *env, *extra, c["image"], *args]
    print("podman " + " ".join(map(str, argv)))
    cid = podman(*argv).stdout.strip()
    return cid, port, c


@pytest.mark.slow
def test_image_runs_as_the_servingruntime_says(built, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    other = save(mlp_with_extra_work(work=400, seed=3), models / "other.onnx")  # ~0.1 s a request of 256 rows
    models.chmod(0o755)
    cid, port, c = _run_as_servingruntime(built, "digits-v2", models)
    try:
        ready_s = wait_http(f"http://127.0.0.1:{port}{c['readinessProbe']['httpGet']['path']}")
        assert _get(port, c["livenessProbe"]["httpGet"]["path"])[0] == 200
        x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
        status, answer = _infer(port, "digits-v2", x)
        assert status == 200 and answer["model_name"] == "digits-v2"
        got = np.array(answer["outputs"][0]["data"], np.float32).reshape(4, -1)
        np.testing.assert_allclose(got, _ort(other, x), rtol=1e-4, atol=1e-5)  # the mounted model
        assert not np.allclose(got, _ort(built["baked"], x), atol=1e-3)      # not the baked one
        logs = podman("logs", cid).stderr + podman("logs", cid).stdout
        assert "other.onnx: 1 workers x 1 ORT threads (1 usable CPUs)" in logs  # --cpus 1
        top = podman("top", cid, "user", "args").stdout
        assert "root" not in top.split("\n", 1)[1], top
        print(f"ready {ready_s:.1f} s after podman run")
        # the same model over gRPC, on the port the ServingRuntime lists (grpc-v2), by tritonclient
        import tritonclient.grpc as grpcclient

        grpc_port = c["host_ports"][GRPC_PORT]
        tc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert tc.is_server_live() and tc.is_model_ready("digits-v2")
        inp = grpcclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = tc.infer("digits-v2", [inp])
        out_name = tc.get_model_metadata("digits-v2").outputs[0].name
        np.testing.assert_allclose(res.as_numpy(out_name), _ort(other, x), rtol=1e-4, atol=1e-5)
        print(f"tritonclient.grpc infer digits-v2 on :{grpc_port}: {out_name} "
              f"{res.as_numpy(out_name).shape} equal to ONNX Runtime run directly")
        tc.close()

        # SIGTERM with requests in flight: none is lost, exit 0 within the grace period
        big = np.random.default_rng(1).standard_normal((256, 64)).astype(np.float32)
        want = _ort(other, big)
        results: list = []

        def one() -> None:
            try:
                status, answer = _infer(port, "digits-v2", big, timeout=60)
                results.append((status, answer))
            except Exception as exc:  # noqa: BLE001 - recorded and asserted below
                results.append(exc)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # every request sent; one runs, the rest wait in the worker
        grace = built["report"]["kserve"]["graceful_timeout_s"] + GRACE_MARGIN_S
        t0 = time.monotonic()
        answered_before = len(results)
        podman("kill", "--signal", "TERM", cid)
        for t in threads:
            t.join(60)
        code = podman("wait", cid, timeout=grace + 10).stdout.strip()
        took = time.monotonic() - t0
        assert len(results) == 8 and all(not isinstance(r, Exception) for r in results), results
        for status, answer in results:
            assert status == 200
            np.testing.assert_allclose(np.array(answer["outputs"][0]["data"], np.float32).reshape(
                want.shape), want, rtol=1e-4, atol=1e-4)
        assert code == "0" and took < grace, (code, took)
        assert answered_before <= 5, answered_before  # at least 3 were in flight at SIGTERM
        print(f"SIGTERM with {8 - answered_before} requests in flight: all answered, exit {code} "
              f"after {took:.1f} s (grace {grace} s)")
    finally:
        podman("rm", "-f", cid, check=False)


@pytest.mark.slow
def test_deployment_runs_under_podman_kube_play(built, tmp_path):
    docs = list(yaml.safe_load_all((built["k8s"] / "deployment.yaml").read_text()))
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    port = free_port()
    c["ports"][0]["hostPort"] = port  # podman 4.3's kube play publishes only hostPorts
    play = tmp_path / "deployment.yaml"
    play.write_text(yaml.safe_dump(dep))
    podman("kube", "play", play)
    try:
        wait_http(f"http://127.0.0.1:{port}{c['readinessProbe']['httpGet']['path']}")
        assert _get(port, c["livenessProbe"]["httpGet"]["path"])[0] == 200
        x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
        name = c["args"][0].split("=", 1)[1]
        status, answer = _infer(port, name, x)
        assert status == 200, answer
        np.testing.assert_allclose(np.array(answer["outputs"][0]["data"], np.float32).reshape(3, -1),
                                   _ort(built["baked"], x), rtol=1e-4, atol=1e-5)
    finally:
        podman("kube", "down", play, check=False)


@pytest.mark.slow
def test_image_holds_no_torch_and_runs_read_only_as_non_root(built):
    run = ("run", "--rm", "--read-only", "--entrypoint", "/opt/onnxdeploy/venv/bin/python", IMAGE)
    r = podman(*run, "-c", "import torch", check=False)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    r = podman(*run, "-c", "import sklearn", check=False)
    assert r.returncode != 0
    r = podman(*run, "-c", "import os, tempfile; print(os.getuid(), tempfile.mkdtemp())")
    uid, tmp = r.stdout.split()
    assert uid != "0" and tmp.startswith("/tmp/")
    size = built["report"]["image_size_bytes"]
    print(f"image size {size / 1e6:.0f} MB (base included)")
    assert size > 0


@pytest.mark.slow
def test_a_base_image_that_does_not_exist_exits_2(built, tmp_path):
    r = cli("containerize", built["baked"], "-t", "localhost/never:1", "--builder", "podman",
            "--base", "localhost/onnxdeploy-no-such-base:0")
    assert "--base localhost/onnxdeploy-no-such-base:0: not found locally" in one_line(r)
    assert podman("image", "exists", "localhost/never:1", check=False).returncode != 0


@pytest.mark.slow
def test_manifests_carry_what_kserve_requires(built):
    k = built["k8s"]
    docs = [doc for name in ("servingruntime.yaml", "inferenceservice.yaml", "deployment.yaml")
            for doc in yaml.safe_load_all((k / name).read_text())]
    assert api_errors(docs) == [None] * 4  # KServe's and Kubernetes' own API types accept them
    (rt,) = yaml.safe_load_all((k / "servingruntime.yaml").read_text())
    assert rt["apiVersion"] == "serving.kserve.io/v1alpha1" and rt["kind"] == "ServingRuntime"
    assert rt["spec"]["supportedModelFormats"] == [
        {"name": "onnx", "version": "1", "autoSelect": True, "priority": 1}]
    assert rt["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    (c,) = rt["spec"]["containers"]
    assert c["args"] == ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080",
                         "--grpc_port=8081"]
    assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP"},
                          {"name": "h2c", "containerPort": 8081, "protocol": "TCP"}] and c["image"] == IMAGE
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    res = c["resources"]
    assert res["requests"]["cpu"] == res["limits"]["cpu"] == "1"
    rss = built["report"]["kserve"]["resources"]["rss_bytes"]
    assert int(res["requests"]["memory"].removesuffix("Mi")) * 2**20 >= rss > 50 * 2**20

    (isvc,) = yaml.safe_load_all((k / "inferenceservice.yaml").read_text())
    p = isvc["spec"]["predictor"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert p["model"] == {"modelFormat": {"name": "onnx", "version": "1"}, "protocolVersion": "v2",
                          "runtime": rt["metadata"]["name"], "storageUri": "pvc://models/digits"}
    assert p["canaryTrafficPercent"] == 25 and p["scaleMetric"] == "rps" and p["scaleTarget"] == 200

    dep, svc = yaml.safe_load_all((k / "deployment.yaml").read_text())
    assert dep["kind"] == "Deployment" and svc["kind"] == "Service"
    spec = dep["spec"]["template"]["spec"]
    drain = int(next(e["value"] for e in spec["containers"][0]["env"]
                     if e["name"] == "ONNXDEPLOY_GRACEFUL_TIMEOUT"))
    assert spec["terminationGracePeriodSeconds"] > drain
    assert p["terminationGracePeriodSeconds"] > drain
    sec = spec["containers"][0]["securityContext"]
    assert sec["readOnlyRootFilesystem"] and sec["runAsNonRoot"] and sec["runAsUser"] != 0
    assert {"name": "tmp", "mountPath": "/tmp"} in spec["containers"][0]["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"])
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
