"""``onnxdeploy serve MODEL.onnx``: run the HTTP service in the foreground (logs on stderr)."""

from __future__ import annotations

import sys

import click

from ..errors import require


@click.command("serve")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--name", help="Model name in URLs and answers (default: the file's stem).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; the default answers only this machine.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="TCP port to listen on (exit 2 if it is in use).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes (default: CPUs / ORT threads).")
@click.option("--http-threads", type=click.IntRange(min=1),
              help="Request threads per worker that run inference views (default: 1, measured "
                   "fastest; with --max-batch-size: one per request a batch may gather, 4-32). "
                   "Health checks, /metrics and the rest have threads of their own.")
@click.option("--threads", "legacy_threads", type=click.IntRange(min=1), hidden=True,
              help="Deprecated: use --http-threads.")
@click.option("--ort-threads", type=click.IntRange(min=1),
              help="ONNX Runtime intra-op threads per worker (default: CPUs / workers).")
@click.option("--max-batch-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Dynamic batching: merge concurrent requests up to this many rows (0 = off).")
@click.option("--batch-timeout-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Dynamic batching: longest wait for a batch to fill.")
@click.option("--max-inflight", type=click.IntRange(min=1), default=64, show_default=True,
              help="Inference requests accepted at once per worker, running or waiting for a "
                   "thread or a batch; more get 503 + Retry-After at once, without queueing.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True),
              help="Largest request body (413 above it). Default: what --max-batch rows of the "
                   "model's inputs take as JSON, or 8 MiB when a dim other than the batch is "
                   "dynamic.")
@click.option("--max-buffer-mb", type=click.FloatRange(min=0, min_open=True),
              help="Bytes of request bodies one worker holds at once, across its requests; a "
                   "body past it gets 503 + Retry-After before it is read. Default: twice "
                   "--max-body-mb, at least 32 MiB.")
@click.option("--max-batch", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Most rows one request may send.")
@click.option("--api-key-env", metavar="VAR",
              help="Require 'Authorization: Bearer <key>' (key read from this environment "
                   "variable) on every endpoint but liveness and the /docs page.")
@click.option("--graceful-timeout", type=click.FloatRange(min=1), default=30, show_default=True,
              help="On SIGTERM, seconds to finish accepted requests before workers are killed.")
@click.option("--body-timeout", type=click.FloatRange(min=0.1), default=10, show_default=True,
              help="Seconds a client may take to send a request body (408 after).")
@click.option("--heartbeat-timeout", type=click.FloatRange(min=1), default=3, show_default=True,
              help="A worker whose event loop has not run for this many seconds (stopped, "
                   "wedged) is killed and replaced.")
@click.option("--dev", is_flag=True, help="Run Flask's development server instead of granian.")
def command(model, name, host, port, workers, http_threads, legacy_threads, ort_threads,
            max_batch_size, batch_timeout_ms, max_inflight, max_body_mb, max_buffer_mb, max_batch,
            api_key_env, graceful_timeout, body_timeout, heartbeat_timeout, dev):
    """Serve an ONNX model over HTTP: /predict, the Open Inference Protocol, /metrics, /docs.

    Runs in the foreground and prints one 'ready' line (URL, endpoints, a curl to try) once it
    answers. SIGTERM drains accepted requests, then exits 0; Ctrl-C stops it with exit 130.
    """
    if legacy_threads is not None:
        click.echo("note: --threads is deprecated for serve; use --http-threads (same meaning)",
                   err=True)
        if http_threads is None:
            http_threads = legacy_threads
    for module in ("flask", "orjson", "prometheus_client") + (() if dev else ("granian",)):
        require(module, "serve")
    from ..serve.runner import Interrupted, ServeOptions, run_server

    try:
        run_server(ServeOptions(
            model=model, name=name, host=host, port=port, workers=workers,
            http_threads=http_threads, ort_threads=ort_threads, max_batch_size=max_batch_size,
            batch_timeout_ms=batch_timeout_ms, max_inflight=max_inflight, max_body_mb=max_body_mb,
            max_buffer_mb=max_buffer_mb, max_batch=max_batch, api_key_env=api_key_env, dev=dev,
            graceful_timeout=graceful_timeout, body_timeout=body_timeout,
            heartbeat_timeout=heartbeat_timeout,
        ))
    except (Interrupted, KeyboardInterrupt):
        sys.stderr.write("stopped (Ctrl-C)\n")
        sys.stderr.flush()
        sys.exit(130)
