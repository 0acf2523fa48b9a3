"""Prometheus metrics, correct across server worker processes.

Under granian the runner sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temp dir per server) before
prometheus_client is first imported, so every worker writes its values to files there and
``/metrics`` sums them with ``MultiProcessCollector``. Without that variable (``--dev``, tests
using the Flask test client) each app gets its own registry, so two apps never collide.
"""

from __future__ import annotations

import os
from pathlib import Path

#: seconds; covers sub-millisecond tiny models up to slow large ones
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    """True when prometheus_client should aggregate across processes."""
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The service's metric objects and the rendering of ``/metrics``."""

    def __init__(self, *, batching: bool = False) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = multiprocess_enabled()
        # In multiprocess mode values live in files; objects must not sit in a registry that
        # would also report this process's copy.
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        reg = {"registry": self.registry}
        self.requests = Counter("onnxdeploy_requests_total",
                                "Requests by endpoint, status and protocol (http, grpc); a gRPC "
                                "answer's status is the HTTP status of the same answer.",
                                ["endpoint", "status", "protocol"], **reg)
        self.request_seconds = Histogram(
            "onnxdeploy_request_duration_seconds", "Whole request time in the view.",
            ["endpoint", "protocol"], buckets=LATENCY_BUCKETS, **reg)
        self.worker_requests = Counter(
            "onnxdeploy_worker_requests_total", "Requests answered by each worker process (pid).",
            ["worker", "protocol"], **reg)
        self.compute_seconds = Histogram(
            "onnxdeploy_model_compute_seconds", "Time inside session.run.",
            buckets=LATENCY_BUCKETS, **reg)
        self.queue_seconds = self.batch_size = self.batches = self.batch_protocols = None
        if batching:  # exported only when batching is on, so their absence says it is off
            self.queue_seconds = Histogram(
                "onnxdeploy_batch_queue_seconds", "Time a request waited for its batch to run.",
                buckets=LATENCY_BUCKETS, **reg)
            self.batch_size = Histogram(
                "onnxdeploy_batch_size", "Rows per merged session.run when batching.",
                buckets=BATCH_SIZE_BUCKETS, **reg)
            self.batches = Counter(
                "onnxdeploy_batches_total", "Batches run, by how they were made: alone (the "
                "runner was idle), gathered (what was waiting), held (waited for more).",
                ["how"], **reg)
            self.batch_protocols = Counter(
                "onnxdeploy_batch_protocols_total", "Batches run, by the protocols of their "
                "requests (http, grpc, grpc+http).", ["protocols"], **reg)
        self.nonfinite = Counter(
            "onnxdeploy_nonfinite_outputs_total",
            "Requests refused because a model output was NaN or infinite.", ["output"], **reg)
        self.inflight = Gauge("onnxdeploy_inflight_requests", "Inference requests being handled.",
                              multiprocess_mode="livesum", **reg)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def forget_dead_workers() -> list[int]:
    """Drop the live gauges of every worker that is gone (a new worker calls this at start).

    granian has no hook in the parent for a worker's death, so the replacement cleans up: the
    ``livesum`` in-flight gauge of a killed worker would otherwise stay in the sum for good.
    """
    if not multiprocess_enabled():
        return []
    import re

    gone = []
    for path in Path(os.environ[MULTIPROC_ENV]).glob("gauge_live*_*.db"):
        match = re.search(r"_(\d+)\.db$", path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not process_alive(pid):
            mark_worker_dead(pid)
            gone.append(pid)
    return gone


def process_alive(pid: int) -> bool:
    """True while a process of that id exists (one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
