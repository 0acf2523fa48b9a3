"""Shared fixtures: small ONNX models written to a temporary directory."""

from __future__ import annotations

import pytest
from builders import mlp_classifier, save, two_input_int_model


@pytest.fixture
def mlp_path(tmp_path):
    """A one-input float classifier (x: [batch, 64] -> logits: [batch, 10])."""
    return save(mlp_classifier(), tmp_path / "mlp.onnx")


@pytest.fixture
def two_input_path(tmp_path):
    """A two-input model with one int64 input (x: [batch, 4] float, idx: [batch] int64)."""
    return save(two_input_int_model(), tmp_path / "two.onnx")


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    """The built-ins' weight cache for this session: ``$ONNXDEPLOY_CACHE`` if set, else a temp dir."""
    import os
    from pathlib import Path

    env = os.environ.get("ONNXDEPLOY_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(scope="session")
def builtin_onnx(tmp_path_factory, zoo_cache):
    """``builtin_onnx(name) -> Path``: a built-in exported once per session (trained once, cached)."""
    from pathlib import Path

    from onnxdeploy.export import ExportOptions, export_model

    out_dir = tmp_path_factory.mktemp("builtin-onnx")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            report = export_model(name, out_dir / f"{name}.onnx", ExportOptions(cache_dir=zoo_cache))
            assert report.parity.passed, report.to_dict()["parity"]
            made[name] = Path(report.onnx_path)
        return made[name]

    return get


@pytest.fixture(scope="session")
def wild_models():
    """``wild_models(name) -> ModelProto``: a fixture class of ``tests/wild.py``, built once a session."""
    import wild

    built: dict = {}

    def get(name):
        if name not in built:
            built[name] = wild.BUILDERS[name]()
        return built[name]

    return get


#: the image ``built`` makes (one a test process)
DEPLOY_IMAGE = f"localhost/onnxdeploy-test:{__import__('os').getpid()}"


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """An image for a small model built with podman on the Debian base, and its manifests: one
    build a session, shared by test_deploy and test_serve_hostile_container."""
    import json
    import subprocess
    import sys
    import time

    from containers import configure, ensure_base_image, podman, podman_missing

    why = podman_missing()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("deploy")
    configure(root)
    t0 = time.monotonic()
    base = ensure_base_image()
    base_s = time.monotonic() - t0
    baked = save(mlp_classifier(seed=0), root / "baked.onnx")
    kdir = root / "k8s"
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "onnxdeploy", "containerize", str(baked), "-t", DEPLOY_IMAGE,
         "--base", base, "--builder", "podman", "--kserve", str(kdir), "--target-rps", "200",
         "--canary", "25", "--storage-uri", "pvc://models/digits", "--report",
         str(root / "containerize.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    print(f"base image {base_s:.1f} s; containerize {time.monotonic() - t0:.1f} s: {r.stdout.strip()}")
    yield {"root": root, "baked": baked, "k8s": kdir, "base": base, "image": DEPLOY_IMAGE,
           "report": json.loads((root / "containerize.json").read_text())}
    podman("rmi", "-f", DEPLOY_IMAGE, check=False)
