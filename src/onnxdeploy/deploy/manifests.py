"""KServe and Kubernetes manifests for a serving image: a ServingRuntime, an InferenceService, and
a Deployment + Service for clusters without KServe.

Resources come from measurement: the RSS of a started server (``measure_server``: the model
loaded, warmed up, ready) and the cores the capacity was measured on. The autoscaler's
per-replica target comes from ``--target-rps`` or from a ``bench --slo`` report: the capacity one
replica sustained within the SLO, times ``HEADROOM``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OptionError
from .image import GRACEFUL_TIMEOUT_S, GRPC_PORT, IMAGE_PORT, USER_ID

#: the autoscaler aims a replica at this share of its measured capacity within the SLO
HEADROOM = 0.8
#: the pod's grace beyond the server's own drain deadline (the drain must finish first)
GRACE_MARGIN_S = 10
MIB = 2**20
READY_TIMEOUT_S = 60


@dataclass
class Resources:
    cpu: int
    memory_request: int      #: bytes: the measured RSS, rounded up
    memory_limit: int        #: bytes: room for request bodies and batches
    rss_bytes: int | None = None
    source: str = ""

    def to_k8s(self) -> dict[str, dict[str, str]]:
        return {"requests": {"cpu": str(self.cpu), "memory": f"{self.memory_request // MIB}Mi"},
                "limits": {"cpu": str(self.cpu), "memory": f"{self.memory_limit // MIB}Mi"}}


@dataclass
class ManifestOptions:
    image: str
    name: str                                   #: the InferenceService / Deployment name
    model_name: str                             #: the model's name in URLs
    resources: Resources
    storage_uri: str | None = None
    target_rps: int | None = None
    target_source: str = ""
    canary: int | None = None
    graceful_timeout_s: int = GRACEFUL_TIMEOUT_S
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dns_name(text: str) -> str:
    """A DNS-1123 label from a model name (``model.int8`` -> ``model-int8``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:53].strip("-")
    return name if name and name[0].isalpha() else f"m-{name}".rstrip("-") or "model"


# ----------------------------------------------------------------------------- measurement


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def measure_server(model: Path, cores: int) -> int:
    """RSS in bytes of ``onnxdeploy serve MODEL`` with ``cores`` workers, once it answers ready."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXDEPLOY_") and k != "PORT"}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "onnxdeploy", "serve", str(model), "--port", str(port),
             "--workers", str(cores), "--ort-threads", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace").strip().splitlines()[-1:]
                    raise OptionError(f"{model.name}: a server could not be started to measure "
                                      f"its memory ({tail[0] if tail else 'no output'})")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready",
                                                timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.1)
            time.sleep(0.5)  # every worker has its session by now (ready needs one)
            return _tree_rss(proc.pid)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def resources_for(rss: int, cores: int, source: str) -> Resources:
    """Requests = the measured RSS (rounded up to 16 MiB); limit = twice that, at least 256 MiB."""
    request = math.ceil(rss * 1.1 / (16 * MIB)) * 16 * MIB
    limit = max(256 * MIB, math.ceil(rss * 2 / (64 * MIB)) * 64 * MIB)
    return Resources(cpu=max(1, cores), memory_request=request, memory_limit=limit,
                     rss_bytes=rss, source=source)


def target_from_bench(path: str, model_name: str) -> tuple[int, int, str]:
    """(per-replica rps target, cores it was measured on, where it came from) from a bench --slo
    report: ``capacity[target].rps`` x HEADROOM."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OptionError(f"--from-bench {path}: cannot read it as JSON ({exc}); expected the "
                          "report of bench --slo (--report PATH)") from None
    capacity = report.get("capacity") if isinstance(report, dict) else None
    if not isinstance(capacity, dict) or not capacity:
        raise OptionError(f"--from-bench {path}: has no 'capacity'; expected the report of a "
                          "bench run with --slo")
    valid = {k: v for k, v in capacity.items()
             if isinstance(v, dict) and v.get("valid") and (v.get("rps") or 0) > 0}
    if not valid:
        raise OptionError(f"--from-bench {path}: no target met its SLO (capacity entries "
                          f"{', '.join(capacity)} are not valid); expected a capacity to scale on")
    if model_name in valid:
        key, why = model_name, "the served model"
    elif len(valid) == 1:
        key, why = next(iter(valid)), "the only target"
    else:
        key = min(valid, key=lambda k: valid[k]["rps"])
        why = "the lowest capacity of its targets"
    cap = valid[key]
    cores = int((report.get("environment") or {}).get("usable_cores") or 1)
    bounds = (report.get("slo") or {}).get("bounds") if isinstance(report.get("slo"), dict) else None
    slo = ", ".join(f"{b.get('percentile')} <= {b.get('ms'):g} ms" for b in bounds or []
                    if isinstance(b, dict) and isinstance(b.get("ms"), (int, float)))
    source = (f"bench --slo capacity of '{key}' ({why}): {cap['rps']:.0f} req/s"
              + (f" within {slo}" if slo else "") + f" on {cores} core(s), x {HEADROOM}")
    return max(1, math.floor(cap["rps"] * HEADROOM)), cores, source


# ----------------------------------------------------------------------------- the manifests


def _probes() -> dict[str, Any]:
    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": IMAGE_PORT}, "periodSeconds": period,
                "timeoutSeconds": 2, "failureThreshold": failures}

    return {"readinessProbe": {**probe("/v2/health/ready", 5, 3), "initialDelaySeconds": 1},
            "livenessProbe": {**probe("/v2/health/live", 10, 6), "initialDelaySeconds": 5}}


def _security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}}


def _annotations(o: ManifestOptions) -> dict[str, str]:
    notes = {"onnxdeploy.io/memory": (f"measured RSS {o.resources.rss_bytes / MIB:.0f} MiB "
                                      f"({o.resources.source})" if o.resources.rss_bytes
                                      else o.resources.source),
             "onnxdeploy.io/drain-seconds": str(o.graceful_timeout_s)}
    if o.target_rps:
        notes["onnxdeploy.io/target-rps"] = f"{o.target_rps} ({o.target_source})"
    return {**notes, **o.notes}


def runtime_name(o: ManifestOptions) -> str:
    return f"onnxdeploy-{o.name}"[:63].rstrip("-")


def serving_runtime(o: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": runtime_name(o), "annotations": _annotations(o)},
        "spec": {
            "annotations": {"prometheus.kserve.io/port": str(IMAGE_PORT),
                            "prometheus.kserve.io/path": "/metrics"},
            "supportedModelFormats": [{"name": "onnx", "version": "1", "autoSelect": True,
                                       "priority": 1}],
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [{
                "name": "kserve-container",
                "image": o.image,
                "args": ["--model_name={{.Name}}", "--model_dir=/mnt/models",
                         f"--http_port={IMAGE_PORT}", f"--grpc_port={GRPC_PORT}"],
                "env": [{"name": "ONNXDEPLOY_GRACEFUL_TIMEOUT", "value": str(o.graceful_timeout_s)}],
                "ports": [{"containerPort": IMAGE_PORT, "protocol": "TCP"},
                          {"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"}],
                **_probes(),
                "resources": o.resources.to_k8s(),
                "securityContext": _security(),
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
        },
    }


def inference_service(o: ManifestOptions) -> dict[str, Any]:
    model: dict[str, Any] = {"modelFormat": {"name": "onnx", "version": "1"},
                             "protocolVersion": "v2", "runtime": runtime_name(o)}
    if o.storage_uri:
        model["storageUri"] = o.storage_uri
    predictor: dict[str, Any] = {"minReplicas": 1, "model": model}
    if o.target_rps:
        predictor.update({"scaleMetric": "rps", "scaleTarget": o.target_rps})
    if o.canary is not None:
        predictor["canaryTrafficPercent"] = o.canary
    # the pod must outlast the server's drain (KServe's predictor is a pod spec)
    predictor["terminationGracePeriodSeconds"] = o.graceful_timeout_s + GRACE_MARGIN_S
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": o.name, "annotations": _annotations(o)},
            "spec": {"predictor": predictor}}


def deployment(o: ManifestOptions) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": o.name, "app.kubernetes.io/part-of": "onnxdeploy"}
    container = {
        "name": "server",
        "image": o.image,
        "args": [f"--model_name={o.model_name}"],
        "env": [{"name": "ONNXDEPLOY_GRACEFUL_TIMEOUT", "value": str(o.graceful_timeout_s)}],
        "ports": [{"name": "http", "containerPort": IMAGE_PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}],
        **_probes(),
        "resources": o.resources.to_k8s(),
        "securityContext": _security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": o.name, "labels": labels, "annotations": _annotations(o)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(IMAGE_PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": {
                    "terminationGracePeriodSeconds": o.graceful_timeout_s + GRACE_MARGIN_S,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID,
                                        "runAsGroup": USER_ID},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory",
                                                             "sizeLimit": "64Mi"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": o.name, "labels": labels},
        "spec": {"selector": labels,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                           {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"}]},
    }
    return [deploy, service]


def write_manifests(directory: str | os.PathLike, o: ManifestOptions) -> list[Path]:
    """``servingruntime.yaml``, ``inferenceservice.yaml``, ``deployment.yaml`` into ``directory``
    (created if missing); each written atomically."""
    import yaml

    from ..atomic import atomic_write

    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise OptionError(f"--kserve {d}: is a file; expected a directory for the manifests")
    if not d.parent.is_dir():
        raise OptionError(f"--kserve {d}: the directory {d.parent} does not exist; create it "
                          "first or choose another path")
    d.mkdir(exist_ok=True)
    header = "# Generated by onnxdeploy containerize; see docs/deploy.md\n"
    docs = {"servingruntime.yaml": [serving_runtime(o)],
            "inferenceservice.yaml": [inference_service(o)],
            "deployment.yaml": deployment(o)}
    written = []
    for name, objs in docs.items():
        text = header + yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False)
        atomic_write(d / name, text)
        written.append(d / name)
    return written
