"""``onnxdeploy serve MODEL.onnx``: run the HTTP service in the foreground (logs on stderr).

KServe's runtime contract is spoken too: ``--model_name``, ``--model_dir`` (a directory with one
``.onnx``, or a pipeline output directory whose report.json ships a variant) and ``--http_port``
are aliases of ``--name``, MODEL and ``--port``; ``$PORT`` sets the port when no flag does.
Every option can also come from ``ONNXDEPLOY_<OPTION>`` (``ONNXDEPLOY_MAX_BATCH_SIZE=8``); a flag
wins over its variable. Port: flag > ``ONNXDEPLOY_PORT`` > ``PORT`` > 8000.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..errors import MissingDependencyError, OptionError

DEFAULT_PORT = 8000
ENV_PREFIX = "ONNXDEPLOY_"


def env(option: str) -> str:
    """The environment variable of a serve option: ``max_batch_size`` -> ONNXDEPLOY_MAX_BATCH_SIZE."""
    return ENV_PREFIX + option.upper()


def _from_command_line(ctx: click.Context, param: str) -> bool:
    return ctx.get_parameter_source(param) == click.core.ParameterSource.COMMANDLINE


def one_of(ctx: click.Context, pairs: list[tuple[str, str, object]]):
    """The value the command line gave through any of a flag's spellings (exit 2 if they disagree).

    ``pairs``: (parameter name, flag as the user writes it, value).
    """
    given = [(flag, value) for param, flag, value in pairs
             if value is not None and _from_command_line(ctx, param)]
    if len({str(v) for _, v in given}) > 1:
        (f1, v1), (f2, v2) = given[0], given[1]
        raise OptionError(f"{f1} {v1} and {f2} {v2} disagree: they are one option; give one "
                          "of them, or the same value to both")
    return given[0][1] if given else None


def resolve_port(ctx: click.Context, port, http_port) -> int:
    """Flag (``--port``/``--http_port``) > ONNXDEPLOY_PORT > PORT > 8000."""
    flag = one_of(ctx, [("port", "--port", port), ("http_port", "--http_port", http_port)])
    if flag is not None:
        return int(flag)
    if port is not None:  # from ONNXDEPLOY_PORT (click read and checked it)
        return int(port)
    raw = os.environ.get("PORT", "").strip()
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise OptionError(f"PORT={raw!r}: not a TCP port; expected a number from 1 to 65535 "
                              "(or give --port)")
        return int(raw)
    return DEFAULT_PORT


def require_installed(module: str, extra: str) -> None:
    """MissingDependencyError with the pip hint when ``module`` is not installed. Found, not
    imported: the server's parent never uses flask, orjson or prometheus_client (its workers
    do), and importing them here cost every start ~0.3 s."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'onnxdeploy[{extra}]'")


def resolve_model(model: str | None, model_dir: str | None) -> str:
    """MODEL, or the model in ``--model_dir``: a non-empty directory wins over MODEL (the image
    serves ``/mnt/models`` in preference to the model baked into it)."""
    from ..modelfile import served_model_in, visible_entries

    if model_dir is not None:
        d = Path(model_dir)
        if model is None or (d.is_dir() and visible_entries(d)):
            return str(served_model_in(d))
        if not d.is_dir() and not d.exists():
            click.echo(f"note: --model_dir {d} does not exist; serving {model}", err=True)
        else:
            click.echo(f"note: --model_dir {d} is empty; serving {model}", err=True)
    if model is None:
        raise OptionError("no model given; expected MODEL.onnx, or --model_dir DIR holding one "
                          ".onnx file (or ONNXDEPLOY_MODEL / ONNXDEPLOY_MODEL_DIR)")
    if Path(model).is_dir():
        return str(served_model_in(model, flag="MODEL"))
    return model




@click.command("serve")
@click.argument("model", required=False, envvar=env("model"))
@click.option("--name", envvar=env("name"),
              help="Model name in URLs and answers (default: the file's stem).")
@click.option("--model_name", "model_name", help="KServe's spelling of --name.")
@click.option("--model_dir", "model_dir", envvar=env("model_dir"), metavar="DIR",
              help="A directory holding the model (KServe: /mnt/models): its one .onnx file, or "
                   "the variant a pipeline's report.json ships. Preferred to MODEL when not empty.")
@click.option("--host", default="127.0.0.1", show_default=True, envvar=env("host"),
              help="Interface to bind; the default answers only this machine.")
@click.option("--port", type=click.IntRange(1, 65535), envvar=env("port"),
              help="TCP port to listen on (exit 2 if it is in use) [default: $PORT, else 8000].")
@click.option("--http_port", "http_port", type=click.IntRange(1, 65535),
              help="KServe's spelling of --port.")
@click.option("--workers", envvar=env("workers"), type=click.IntRange(min=1),
              help="Worker processes (default: CPUs / ORT threads).")
@click.option("--http-threads", envvar=env("http_threads"), type=click.IntRange(min=1),
              help="Request threads per worker that run inference views (default: 1, measured "
                   "fastest; with --max-batch-size: one per request a batch may gather, 4-32). "
                   "Health checks, /metrics and the rest have threads of their own.")
@click.option("--threads", "legacy_threads", type=click.IntRange(min=1), hidden=True,
              help="Deprecated: use --http-threads.")
@click.option("--ort-threads", envvar=env("ort_threads"), type=click.IntRange(min=1),
              help="ONNX Runtime intra-op threads per worker (default: CPUs / workers).")
@click.option("--runtime", envvar=env("runtime"), type=click.Choice(["onnxruntime", "openvino"]),
              help="Runtime that runs the model (default: the model's onnxdeploy.runtime "
                   "metadata, else onnxruntime); openvino needs pip install 'onnxdeploy[openvino]'.")
@click.option("--max-batch-size", envvar=env("max_batch_size"), type=click.IntRange(min=0), default=0, show_default=True,
              help="Dynamic batching: merge concurrent requests up to this many rows (0 = off).")
@click.option("--batch-timeout-ms", envvar=env("batch_timeout_ms"), type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Dynamic batching: longest a free runner holds a batch for more requests.")
@click.option("--batch-hold", envvar=env("batch_hold"), type=click.Choice(["adaptive", "always"]),
              default="adaptive", show_default=True,
              help="Dynamic batching: adaptive holds a batch only while other requests are in "
                   "flight and waiting is measured to pay (a lone request runs at once); always "
                   "holds every batch until it is full or the timeout passes.")
@click.option("--max-inflight", envvar=env("max_inflight"), type=click.IntRange(min=1), default=64, show_default=True,
              help="Inference requests accepted at once per worker, running or waiting for a "
                   "thread or a batch; more get 503 + Retry-After at once, without queueing.")
@click.option("--max-body-mb", envvar=env("max_body_mb"), type=click.FloatRange(min=0, min_open=True),
              help="Largest request body (413 above it). Default: what --max-batch rows of the "
                   "model's inputs take as JSON, or 8 MiB when a dim other than the batch is "
                   "dynamic.")
@click.option("--max-buffer-mb", envvar=env("max_buffer_mb"), type=click.FloatRange(min=0, min_open=True),
              help="Bytes of request bodies one worker holds at once, across its requests; a "
                   "body past it gets 503 + Retry-After before it is read. Default: twice "
                   "--max-body-mb, at least 32 MiB.")
@click.option("--max-batch", envvar=env("max_batch"), type=click.IntRange(min=1), default=1024, show_default=True,
              help="Most rows one request may send.")
@click.option("--api-key-env", envvar=env("api_key_env"), metavar="VAR",
              help="Require 'Authorization: Bearer <key>' (key read from this environment "
                   "variable) on every endpoint but liveness and the /docs page.")
@click.option("--graceful-timeout", envvar=env("graceful_timeout"), type=click.FloatRange(min=1), default=30, show_default=True,
              help="On SIGTERM, seconds to finish accepted requests before workers are killed.")
@click.option("--body-timeout", envvar=env("body_timeout"), type=click.FloatRange(min=0.1), default=10, show_default=True,
              help="Seconds a client may take to send a request body (408 after).")
@click.option("--grpc-port", "--grpc_port", "grpc_port", envvar=env("grpc_port"), type=click.IntRange(1, 65535),
              help="Also serve the Open Inference Protocol over gRPC "
                   "(inference.GRPCInferenceService) on this port, in every worker (off by "
                   "default).")
@click.option("--heartbeat-timeout", envvar=env("heartbeat_timeout"), type=click.FloatRange(min=1), default=3,
              show_default=True,
              help="A worker whose event loop has not run for this many seconds (stopped, "
                   "wedged) is killed and replaced.")
@click.option("--dev", envvar=env("dev"), is_flag=True, help="Run Flask's development server instead of granian.")
@click.pass_context
def command(ctx, model, name, model_name, model_dir, host, port, http_port, workers, http_threads, legacy_threads,
            ort_threads, runtime,
            max_batch_size, batch_timeout_ms, batch_hold, max_inflight, max_body_mb, max_buffer_mb, max_batch, api_key_env,
            graceful_timeout, body_timeout, grpc_port, heartbeat_timeout, dev):
    """Serve an ONNX model over HTTP: /predict, the Open Inference Protocol, /metrics, /docs.

    Runs in the foreground and prints one 'ready' line (URL, endpoints, a curl to try) once it
    answers. SIGTERM drains accepted requests, then exits 0; Ctrl-C stops it with exit 130.
    """
    if legacy_threads is not None:
        click.echo("note: --threads is deprecated for serve; use --http-threads (same meaning)",
                   err=True)
        if http_threads is None:
            http_threads = legacy_threads
    name = one_of(ctx, [("name", "--name", name), ("model_name", "--model_name", model_name)]) or name
    port = resolve_port(ctx, port, http_port)
    model = resolve_model(model, model_dir)
    for module in (("flask", "orjson", "prometheus_client") + (() if dev else ("granian",))
                   + (("grpc", "google.protobuf") if grpc_port else ())):
        require_installed(module, "serve")
    from ..serve.runner import Interrupted, ServeOptions, run_server

    try:
        run_server(ServeOptions(
            model=model, name=name, host=host, port=port, workers=workers,
            http_threads=http_threads, ort_threads=ort_threads, runtime=runtime,
            max_batch_size=max_batch_size,
            batch_timeout_ms=batch_timeout_ms, batch_hold=batch_hold, max_inflight=max_inflight, max_body_mb=max_body_mb,
            max_buffer_mb=max_buffer_mb, max_batch=max_batch, api_key_env=api_key_env, dev=dev,
            graceful_timeout=graceful_timeout, body_timeout=body_timeout, grpc_port=grpc_port,
            heartbeat_timeout=heartbeat_timeout,
        ))
    except (Interrupted, KeyboardInterrupt):
        sys.stderr.write("stopped (Ctrl-C)\n")
        sys.stderr.flush()
        sys.exit(130)
