"""``onnxdeploy serve MODEL.onnx``: run the HTTP service in the foreground (logs on stderr)."""

from __future__ import annotations

import click

from ..errors import require


@click.command("serve")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--name", help="Model name in URLs and answers (default: the file's stem).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; the default answers only this machine.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1),
              help="gunicorn worker processes (default: CPUs / ORT threads).")
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True,
              help="Request threads per worker that handle inference (gthread; 4 measured "
                   "fastest). Health checks and /metrics have 2 threads of their own.")
@click.option("--ort-threads", type=click.IntRange(min=1),
              help="ONNX Runtime intra-op threads per worker (default: CPUs / workers).")
@click.option("--max-batch-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Dynamic batching: merge concurrent requests up to this many rows (0 = off).")
@click.option("--batch-timeout-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Dynamic batching: longest wait for a batch to fill.")
@click.option("--max-inflight", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests accepted at once per worker, running or waiting for a thread or a "
                   "batch; more get 503 + Retry-After at once, without queueing.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=32.0,
              show_default=True, help="Largest request body (413 above it).")
@click.option("--max-batch", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Most rows one request may send.")
@click.option("--api-key-env", metavar="VAR",
              help="Require 'Authorization: Bearer <key>' (key read from this environment "
                   "variable) on every endpoint but liveness.")
@click.option("--dev", is_flag=True, help="Run Flask's development server instead of gunicorn.")
def command(model, name, host, port, workers, threads, ort_threads, max_batch_size,
            batch_timeout_ms, max_inflight, max_body_mb, max_batch, api_key_env, dev):
    """Serve an ONNX model over HTTP: /predict, the Open Inference Protocol, /metrics.

    Runs in the foreground until SIGTERM (drains accepted requests, then exits) or SIGINT.
    """
    for module in ("flask", "orjson", "prometheus_client") + (() if dev else ("gunicorn",)):
        require(module, "serve")
    from ..serve.runner import ServeOptions, run_server

    run_server(ServeOptions(
        model=model, name=name, host=host, port=port, workers=workers, threads=threads,
        ort_threads=ort_threads, max_batch_size=max_batch_size, batch_timeout_ms=batch_timeout_ms,
        max_inflight=max_inflight, max_body_mb=max_body_mb, max_batch=max_batch,
        api_key_env=api_key_env, dev=dev,
    ))
