"""Run the app under gunicorn (default) or Flask's own server (``--dev``).

Choices, measured on 2 shared cores with digits-cnn, one sample a request (benchmarks/serve.py):
- worker class ``gthread`` with 4 threads: ``InferenceSession.run`` releases the GIL and JSON
  parsing is short, so a few threads per process keep a core busy while another thread is in the
  kernel or in ORT (wrk, c=8, one run each: 2 threads ~2,100 req/s, 4 ~3,550, 8 ~2,650, 16
  ~2,150; more threads only add GIL contention). The ``sync`` worker closes every connection,
  so each request pays a new TCP handshake; gevent/eventlet would monkey-patch under ORT.
- overload: with 4 threads, a bound checked inside the views never triggers (at most 4 requests
  are ever in a view) and the rest queue in gthread's pool behind which health probes wait. So
  the worker is ``serve.worker.OverloadWorker``, a gthread that bounds requests at dispatch
  (``--max-inflight`` running or queued per worker, 503 + Retry-After beyond it) and gives
  health and metrics probes threads of their own; see that module for the design and numbers.
- keep-alive connections are spread over workers (``serve.worker.ConnectionBoard``, made here
  before the fork): otherwise a client opening a few connections at once often got one worker
  for all of them and half the throughput.
- one worker per core and one ORT intra-op thread per worker by default: small models are
  dominated by HTTP and JSON work, which only more processes parallelize; the budget keeps
  workers x ORT threads <= the CPUs this process may use.
- the session is created in ``post_worker_init`` (after fork, before the worker accepts), so a
  worker is warm before it takes a connection; a model ORT cannot load fails the boot, and
  gunicorn then stops instead of respawning workers forever.
- the parent never imports onnxruntime (see ``default_threads``).
- SIGTERM is gunicorn's graceful stop: workers stop accepting, finish the requests they have
  (up to ``GRACEFUL_TIMEOUT_S``), then exit. SIGINT is gunicorn's quick stop.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionError, ServerError
from .metrics import MULTIPROC_ENV

log = logging.getLogger("onnxdeploy.serve")

DEFAULT_THREADS = 4
DEFAULT_MAX_INFLIGHT = 64
DEFAULT_MAX_BODY_MB = 32
DEFAULT_MAX_BATCH = 1024
DEFAULT_BATCH_TIMEOUT_MS = 2.0
GRACEFUL_TIMEOUT_S = 30
WORKER_TIMEOUT_S = 60
KEEPALIVE_S = 5


def default_threads() -> int:
    """CPUs this process may use (``runtime.default_threads`` without importing onnxruntime).

    The gunicorn parent must never import onnxruntime: a child forked after the import aborts
    at exit ("terminate called after throwing ... std::system_error") while ORT's static state
    tears down threads that exist only in the parent, so every graceful stop ends in SIGABRT.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ServeOptions:
    """Everything ``onnxdeploy serve`` takes; None means "pick from the CPU budget"."""

    model: str
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = None
    threads: int = DEFAULT_THREADS
    ort_threads: int | None = None
    max_batch_size: int = 0
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_body_mb: float = DEFAULT_MAX_BODY_MB
    max_batch: int = DEFAULT_MAX_BATCH
    api_key_env: str | None = None
    dev: bool = False


def thread_budget(workers: int | None, ort_threads: int | None, cpus: int | None = None) -> tuple[int, int]:
    """(workers, ORT threads per worker) with workers x threads <= CPUs unless both are given."""
    cpus = cpus or default_threads()
    if workers is None and ort_threads is None:
        return cpus, 1
    if workers is None:
        return max(1, cpus // ort_threads), ort_threads
    if ort_threads is None:
        return workers, max(1, cpus // workers)
    return workers, ort_threads


def app_config(options: ServeOptions, ort_threads: int) -> dict:
    """The ``create_app`` config for these options (reads the API key from its env variable)."""
    api_key = None
    if options.api_key_env:
        api_key = os.environ.get(options.api_key_env, "")
        if not api_key:
            raise OptionError(f"--api-key-env {options.api_key_env}: the variable is unset or empty; "
                              "expected it to hold the API key")
    return {
        "MODEL_PATH": str(Path(options.model)),
        "MODEL_NAME": options.name or Path(options.model).stem,
        "ORT_THREADS": ort_threads,
        "MAX_INFLIGHT": options.max_inflight,
        "MAX_BATCH": options.max_batch,
        "MAX_BODY_BYTES": int(options.max_body_mb * 2**20),
        "MAX_BATCH_SIZE": options.max_batch_size,
        "BATCH_TIMEOUT_MS": options.batch_timeout_ms,
        "API_KEY": api_key,
    }


def run_server(options: ServeOptions) -> None:
    """Serve in the foreground until SIGTERM/SIGINT; raises ServerError if it cannot run."""
    from .model import read_model_info

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    read_model_info(options.model, options.name)  # a bad file fails here, before any fork
    workers, ort_threads = thread_budget(options.workers, options.ort_threads)
    if workers * ort_threads > default_threads():
        log.warning("%d workers x %d ORT threads exceeds the %d CPUs available; expect contention",
                    workers, ort_threads, default_threads())
    config = app_config(options, ort_threads)
    if options.dev:
        _run_dev(options, config)
        return
    _run_gunicorn(options, config, workers)


def _run_dev(options: ServeOptions, config: dict) -> None:
    from .app import create_app

    app = create_app({**config, "LOAD_ON_START": True})
    log.info("development server (Flask) on http://%s:%d; use gunicorn (no --dev) in production",
             options.host, options.port)
    app.run(host=options.host, port=options.port, threaded=True, use_reloader=False)


def _run_gunicorn(options: ServeOptions, config: dict, workers: int) -> None:
    from gunicorn.app.base import BaseApplication

    from .worker import SPARE_SLOTS, ConnectionBoard

    # Made before the fork so every worker shares it; one worker has no one to balance with.
    board = ConnectionBoard(workers + SPARE_SLOTS) if workers > 1 else None

    def child_exit(server, worker) -> None:
        if board is not None:
            board.detach(worker)
        _child_exit(server, worker)

    prom_dir = tempfile.mkdtemp(prefix="onnxdeploy-prom-")
    os.environ[MULTIPROC_ENV] = prom_dir
    _reset_prometheus_value_class()

    class _Server(BaseApplication):
        def load_config(self):
            settings = {
                "bind": f"{options.host}:{options.port}",
                "workers": workers,
                "worker_class": "onnxdeploy.serve.worker.OverloadWorker",
                "threads": options.threads,
                "graceful_timeout": GRACEFUL_TIMEOUT_S,
                "timeout": WORKER_TIMEOUT_S,
                "keepalive": KEEPALIVE_S,
                "preload_app": False,
                "accesslog": None,
                "errorlog": "-",
                "loglevel": "info",
                "proc_name": f"onnxdeploy-serve:{config['MODEL_NAME']}",
                "post_worker_init": _post_worker_init,
                "child_exit": child_exit,
                # One fixed control-socket path per user would collide between concurrent servers.
                "control_socket_disable": True,
            }
            if board is not None:
                settings["pre_fork"] = board.attach
            if os.path.isdir("/dev/shm"):
                settings["worker_tmp_dir"] = "/dev/shm"  # heartbeat files off slow disks
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            from .app import create_app

            return create_app(config)

    try:
        _Server().run()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise ServerError(f"gunicorn exited with status {exc.code} (a worker failed to boot: "
                              "see the log above)") from exc
    finally:
        shutil.rmtree(prom_dir, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)


def _post_worker_init(worker) -> None:
    # Create and warm this worker's own session before it accepts a connection.
    worker.wsgi.extensions["onnxdeploy"].load()


def _child_exit(server, worker) -> None:
    from .metrics import mark_worker_dead

    mark_worker_dead(worker.pid)


def _reset_prometheus_value_class() -> None:
    # prometheus_client picks file-backed values at import; if it was imported before the
    # variable was set (an embedding process), pick again so workers write to the shared dir.
    if "prometheus_client" in sys.modules:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()
