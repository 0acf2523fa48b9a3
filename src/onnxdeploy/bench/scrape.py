"""Server-side split of latency from ``/metrics``: scrape before and after a run, diff the sums.

Only the histogram ``_sum`` and ``_count`` series are needed: their deltas over a run give the
mean time per request inside the view, inside ``session.run`` and (when batching) in the queue.
"""

from __future__ import annotations

import re

from .httpclient import request

METRICS_PATH = "/metrics"
REQUEST_HIST = "onnxdeploy_request_duration_seconds"
COMPUTE_HIST = "onnxdeploy_model_compute_seconds"
QUEUE_HIST = "onnxdeploy_batch_queue_seconds"
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, dict[str, float]]:
    """``{metric name: {label text: value}}`` for every sample line of Prometheus text."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        out.setdefault(match.group(1), {})[match.group(2) or ""] = value
    return out


def scrape(url: str) -> dict[str, dict[str, float]] | None:
    """The server's metrics, or None when it has no ``/metrics`` (e.g. a foreign server)."""
    if url.startswith("grpc://"):  # a gRPC-only target: no HTTP to read them from
        return None
    try:
        status, body = request(url, "GET", METRICS_PATH, timeout=10)
    except OSError:
        return None
    if status != 200:
        return None
    return parse_prometheus(body.decode(errors="replace"))


def _total(snap: dict, name: str, label_filter: str | None = None) -> float:
    series = snap.get(name, {})
    return sum(v for labels, v in series.items() if label_filter is None or label_filter in labels)


def _mean_ms(before: dict, after: dict, hist: str, label_filter: str | None) -> tuple[float | None, float]:
    dsum = _total(after, f"{hist}_sum", label_filter) - _total(before, f"{hist}_sum", label_filter)
    dcount = _total(after, f"{hist}_count", label_filter) - _total(before, f"{hist}_count", label_filter)
    return (1000.0 * dsum / dcount if dcount > 0 else None), dcount


def server_split(before: dict | None, after: dict | None, client_mean_ms: float | None) -> dict[str, float | None]:
    """Mean ms per request in the server view, in model compute, in the batch queue, and the rest.

    ``compute_share`` is model compute as a fraction of a request's time in the app (its view),
    else of the latency the client saw: at a saturating concurrency most of that latency is
    waiting behind other requests, which says nothing about how much of the server's work per
    request is the model. ``other_ms`` is everything else the client waited for (HTTP, JSON,
    queueing, the network stack).
    """
    if before is None or after is None:
        return {}
    server_ms, served = _mean_ms(before, after, REQUEST_HIST, "predict")
    compute_ms, computed = _mean_ms(before, after, COMPUTE_HIST, None)
    queue_ms, _ = _mean_ms(before, after, QUEUE_HIST, None)
    # with batching one session.run serves several requests: spread its time over them
    if compute_ms is not None and served > 0 and computed != served:
        compute_ms = compute_ms * computed / served
    out: dict[str, float | None] = {
        "server_ms": server_ms, "compute_ms": compute_ms, "queue_ms": queue_ms,
        "client_ms": client_mean_ms,
    }
    if compute_ms is not None and client_mean_ms:
        out["compute_share"] = min(1.0, compute_ms / (server_ms or client_mean_ms))
        out["other_ms"] = max(0.0, client_mean_ms - compute_ms)
    return out
