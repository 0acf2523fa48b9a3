"""Run the app under granian (default) or Flask's own server (``--dev``).

Choices (measured on 2 shared cores, digits-cnn, one sample a request; docs/serve.md has
the runs and the alternatives tried):
- granian's RSGI interface with ``serve.front.Front`` as the application: HTTP is parsed in Rust
  (headers with a deadline), bodies are buffered in the worker's event loop with a cap and a
  deadline, and only then does a request take an inference slot; the one request path
  (``serve.service``) answers it in bounded thread pools, without Flask. Admission
  (``--max-inflight``) is a counter (``service.Admission``): no server internals. ``--dev``
  runs the Flask app (``serve.app.create_app``), whose blueprints call the same path.
- one worker per core and one ORT intra-op thread per worker by default: small models are
  dominated by HTTP and JSON work, which only more processes parallelize; the budget keeps
  workers x ORT threads <= the CPUs this process may use.
- workers are spawned (fresh interpreters, not forks of the multi-threaded parent); the session
  is created in each worker (``Front.__rsgi_init__``) before it serves, never in the parent,
  which never imports onnxruntime (see ``default_threads``).
- a worker that dies is replaced (granian's ``respawn_failed_workers``); one that stops answering
  (no heartbeat for ``--heartbeat-timeout``) is killed and replaced; the server stops only on a
  real crash loop (5 respawns of one worker within 60 s); workers whose main process is gone
  exit and remove the run's temp dir (``serve.supervise``).
- SIGTERM: workers stop accepting, finish what they have, and are killed after
  ``--graceful-timeout`` whatever is still connected; exit 0. SIGINT (Ctrl-C): the same, exit 130.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionError, ServerError
from .metrics import MULTIPROC_ENV
from .supervise import HEARTBEAT_TIMEOUT_S, RUN_DIR_ENV, CrashBudget, Monitor

log = logging.getLogger("onnxdeploy.serve")

DEFAULT_HTTP_THREADS = 1
DEFAULT_MAX_INFLIGHT = 64
DEFAULT_MAX_BATCH = 1024
DEFAULT_BATCH_TIMEOUT_MS = 2.0
GRACEFUL_TIMEOUT_S = 30
HEADER_TIMEOUT_S = 10
READY_POLL_S = 0.05


class Interrupted(Exception):
    """The server stopped on SIGINT (Ctrl-C): the CLI exits 130."""


def default_threads() -> int:
    """CPUs this process may use (``runtime.default_threads`` without importing onnxruntime).

    The server's parent must never import onnxruntime: a worker forked after the import aborts
    at exit while ORT's static state tears down threads that exist only in the parent.
    """
    from ..environment import usable_cores

    return usable_cores()


@dataclass
class ServeOptions:
    """Everything ``onnxdeploy serve`` takes; None means "pick from the CPU budget" or derive."""

    model: str
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = None
    http_threads: int | None = None
    ort_threads: int | None = None
    #: ``onnxruntime`` or ``openvino``; None: the model's ``onnxdeploy.runtime``, else ONNX Runtime
    runtime: str | None = None
    max_batch_size: int = 0
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS
    batch_hold: str = "adaptive"  # serve.batching: "adaptive" or "always"
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_body_mb: float | None = None
    max_buffer_mb: float | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    api_key_env: str | None = None
    dev: bool = False
    graceful_timeout: float = GRACEFUL_TIMEOUT_S
    body_timeout: float | None = None
    grpc_port: int | None = None  # inference.GRPCInferenceService in every worker (off: None)
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT_S


def thread_budget(workers: int | None, ort_threads: int | None, cpus: int | None = None) -> tuple[int, int]:
    """(workers, runtime threads per worker) with workers x threads <= CPUs unless both are given;
    by default one single-threaded worker per CPU, on either runtime (OpenVINO too, since its
    sessions no longer pin their threads: docs/runtimes.md, "Served")."""
    cpus = cpus or default_threads()
    if workers is None and ort_threads is None:
        return cpus, 1
    if workers is None:
        return max(1, cpus // ort_threads), ort_threads
    if ort_threads is None:
        return workers, max(1, cpus // workers)
    return workers, ort_threads


def http_threads_for(options: ServeOptions) -> int:
    """Request threads per worker: 1 measured fastest. With batching the front parses in its
    event loop and needs no thread per request; the threads parse only while parsing is slow
    (``front.PARSE_ABOVE_S``), and then one per waiting request lets their runs merge."""
    if options.http_threads is not None:
        return options.http_threads
    if options.max_batch_size > 1:
        return max(4, min(options.max_batch_size, options.max_inflight, 32))
    return DEFAULT_HTTP_THREADS


def app_config(options: ServeOptions, ort_threads: int) -> dict:
    """The ``create_app`` config for these options (reads the API key from its env variable)."""
    api_key = None
    if options.api_key_env:
        api_key = os.environ.get(options.api_key_env, "")
        if not api_key:
            raise OptionError(f"--api-key-env {options.api_key_env}: the variable is unset or empty; "
                              "expected it to hold the API key")
    config = {
        "MODEL_PATH": str(Path(options.model)),
        "MODEL_NAME": options.name or Path(options.model).stem,
        "ORT_THREADS": ort_threads,
        "RUNTIME": options.runtime,
        "MAX_INFLIGHT": options.max_inflight,
        "MAX_BATCH": options.max_batch,
        "MAX_BODY_BYTES": (None if options.max_body_mb is None
                           else int(options.max_body_mb * 2**20)),
        "MAX_BUFFER_BYTES": (None if options.max_buffer_mb is None
                             else int(options.max_buffer_mb * 2**20)),
        "MAX_BATCH_SIZE": options.max_batch_size,
        "BATCH_TIMEOUT_MS": options.batch_timeout_ms,
        "BATCH_HOLD": options.batch_hold,
        "API_KEY": api_key,
        "HTTP_THREADS": http_threads_for(options),
    }
    config["HEARTBEAT_TIMEOUT_S"] = options.heartbeat_timeout
    if options.body_timeout is not None:
        config["BODY_TIMEOUT_S"] = options.body_timeout
    if options.grpc_port:
        config.update(GRPC_PORT=options.grpc_port, GRPC_HOST=options.host,
                      GRACEFUL_TIMEOUT_S=options.graceful_timeout)
    return config


def check_bind(host: str, port: int, option: str = "--port") -> None:
    """OptionError (exit 2, one line) when ``host:port`` cannot be listened on right now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise OptionError(f"--host {host}: not an address of this machine ({exc}); expected an "
                          "IP address or a resolvable name, e.g. 127.0.0.1 or 0.0.0.0") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OptionError(f"{option} {port}: address {host}:{port} is already in use; stop "
                                  "what listens there or pick another port") from None
            if exc.errno == errno.EACCES:
                raise OptionError(f"{option} {port}: permission denied on {host} (ports below 1024 "
                                  "need privileges); pick a port from 1024 up") from None
            raise OptionError(f"--host {host}: cannot listen there ({exc.strerror}); expected an "
                              "address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None


def _require_openvino() -> None:
    """MissingDependencyError with the pip hint, found without importing openvino here."""
    import importlib.util

    from ..errors import MissingDependencyError

    if importlib.util.find_spec("openvino") is None:
        raise MissingDependencyError("openvino is not installed; install it with: "
                                     "pip install 'onnxdeploy[openvino]'")


def claim_port(host: str, port: int, option: str = "--port") -> int:
    """An exclusive lock naming ``port`` (in this network namespace), held by this process until
    it exits; OptionError (exit 2, one line) when another ``onnxdeploy serve`` holds it.

    granian gives each worker its own SO_REUSEPORT listener, and the kernel lets any process of
    the same user join such a port: two servers started a moment apart both bound it and split
    the traffic. A port probe cannot close that race (the probe and granian's bind are separate
    steps, and granian has no public way to hand workers a socket bound once, exclusively), so
    servers take a ``flock`` first: the kernel grants it to one process at a time and drops it
    when that process dies, however it dies. Anything else listening on the port is still found
    by ``check_bind``. The holder removes the lock file as it exits; a process that locked a
    file just removed sees the path no longer names it and tries again. A holder that is killed
    leaves an empty file, which the next server on the port reuses.
    """
    import fcntl

    if port == 0:  # the kernel picks a free port: nothing to share
        return -1
    path = port_lock_path(port)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:  # another user's lock file we cannot read: rely on check_bind
            log.warning("cannot open the port lock %s (%s); a second server started at the "
                        "same moment may share the port", path, exc.strerror)
            return -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OptionError(f"{option} {port}: address {host}:{port} is already in use (another "
                              "onnxdeploy serve holds it); stop it or pick another port") from None
        try:  # the holder removes the file as it exits: a lock on a removed file is no lock
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    return -1


def port_lock_path(port: int) -> Path:
    """The lock file of a port in this network namespace (ports are per namespace)."""
    try:
        netns = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        netns = 0
    return Path(tempfile.gettempdir()) / f"onnxdeploy-serve-{netns}-{port}.lock"


def release_port(fd: int, port: int) -> None:
    """Remove the lock file, then release the lock (``claim_port`` re-checks the file)."""
    if fd < 0:
        return
    try:
        path = port_lock_path(port)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass
    os.close(fd)


def run_server(options: ServeOptions) -> None:
    """Serve in the foreground until SIGTERM (returns) or SIGINT (raises Interrupted)."""
    from .model import read_model_info

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    info = read_model_info(options.model, options.name, runtime=options.runtime)  # fails before any fork
    if info.runtime == "openvino":
        _require_openvino()
    lock = claim_port(options.host, options.port)  # first: no second server past this line
    grpc_lock = -1
    try:
        check_bind(options.host, options.port)
        if options.grpc_port:
            if options.grpc_port == options.port:
                raise OptionError(f"--grpc-port {options.grpc_port}: the same port as --port; "
                                  "expected another port for gRPC")
            from .grpc_service import grpc  # noqa: F401 - a missing grpcio fails here, not in a worker

            # the workers' gRPC listeners share the port (SO_REUSEPORT) as granian's do: the
            # same lock keeps a second server off it whatever the timing
            grpc_lock = claim_port(options.host, options.grpc_port, "--grpc-port")
            check_bind(options.host, options.grpc_port, "--grpc-port")
        _run_locked(options, info)
    finally:
        if options.grpc_port:
            release_port(grpc_lock, options.grpc_port)
        release_port(lock, options.port)


def _run_locked(options: ServeOptions, info) -> None:
    workers, ort_threads = thread_budget(options.workers, options.ort_threads)
    if workers * ort_threads > default_threads():
        log.warning("%d workers x %d ORT threads exceeds the %d CPUs available; expect contention",
                    workers, ort_threads, default_threads())
    log.info("%s: %d workers x %d ORT threads (%d usable CPUs)", info.path.name, workers,
             ort_threads, default_threads())
    warn_measured_cpu(info.path)
    config = app_config(options, ort_threads)
    announcer = _Announcer(options, info, config.get("API_KEY"))
    if options.dev:
        _run_dev(options, config, announcer)
        return
    _run_granian(options, config, workers, announcer)


def measured_cpu_warning(path: str | os.PathLike, flags: dict[str, bool] | None = None) -> str | None:
    """The warning for a model measured on a CPU with flags this one lacks (None when it has them).

    The measurement is recorded beside the model (``<file>.measured_cpu.json``, written by
    ``containerize``) or in its metadata (``onnxdeploy.measured_cpu``).
    """
    from .. import modelfile
    from ..environment import FLAG_NAMES, cpu_flags

    try:
        model = modelfile.load_model(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - read_model_info already accepted it; be quiet here
        return None
    measured = modelfile.measured_cpu(path, model)
    if measured is None:
        return None
    here = flags if flags is not None else cpu_flags()
    missing = [f for f in FLAG_NAMES if measured["flags"].get(f) and not here.get(f)]
    if not missing:
        return None
    meta = modelfile.metadata(model)
    precision = meta.get("onnxdeploy.precision") or (
        "int8" if modelfile.quantized_ops(model) else "fp32")
    runtime = meta.get("onnxdeploy.runtime") or "onnxruntime"
    had = ", ".join(f for f in FLAG_NAMES if measured["flags"].get(f)) or "none"
    return (f"{Path(path).name} was measured on {measured.get('cpu') or 'another CPU'} ({had}); "
            f"this CPU lacks {', '.join(missing)}: serving {precision} on {runtime} here, expect "
            "other speed" + (" and int8 numerics (u8 x s8 products may saturate without VNNI)"
                             if precision == "int8" and "vnni" in missing else "")
            + " than measured")


def warn_measured_cpu(path: str | os.PathLike) -> None:
    text = measured_cpu_warning(path)
    if text:
        log.warning("%s", text)


def _run_dev(options: ServeOptions, config: dict, announcer: _Announcer) -> None:
    from .app import create_app

    app = create_app({**config, "LOAD_ON_START": True})
    log.info("development server (Flask); run without --dev in production")
    rpc = None
    if config.get("GRPC_PORT"):
        from .grpc_service import start_grpc

        rpc = start_grpc(app.extensions["onnxdeploy"], config)
    announcer.start()
    caught: list[int] = []

    def interrupt(signum, frame):
        caught.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        app.run(host=options.host, port=options.port, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        signal.signal(signal.SIGINT, previous)
        announcer.stop()
        if rpc is not None:
            rpc.drain(options.graceful_timeout)
    if caught:  # Werkzeug may swallow the interrupt and return
        raise Interrupted()


def _run_granian(options: ServeOptions, config: dict, workers: int, announcer: _Announcer) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    from .front import BOOT_FAILED_ENV, CONFIG_ENV

    # one directory per run: metrics files, heartbeats, the boot marker; removed at exit, and by
    # the workers themselves when the main process is killed (supervise.Beat)
    run_dir = tempfile.mkdtemp(prefix="onnxdeploy-serve-")
    prom_dir = os.path.join(run_dir, "prom")
    os.mkdir(prom_dir)
    boot_failed = Path(run_dir) / "boot-failed"
    os.environ[RUN_DIR_ENV] = run_dir
    os.environ[MULTIPROC_ENV] = prom_dir
    config = {**config, "WORKERS": workers}  # readiness counts live workers against this
    os.environ[CONFIG_ENV] = json.dumps(config)
    os.environ[BOOT_FAILED_ENV] = str(boot_failed)
    _reset_prometheus_value_class()
    caught: list[int] = []

    server = Granian(
        "onnxdeploy.serve.front:load_front",
        factory=True,
        address=options.host,
        port=options.port,
        interface=Interfaces.RSGI,
        workers=workers,
        runtime_threads=1,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_TIMEOUT_S * 1000),
        websockets=False,
        respawn_failed_workers=True,
        workers_kill_timeout=max(1, round(options.graceful_timeout)),
        log_access=False,
        log_dictconfig=_granian_logging(),
    )
    # granian's crash-loop guard stopped the whole server when one worker died twice within
    # 5.5 s, the others healthy: it now stops only on a real loop (supervise.CrashBudget)
    server.respawned_wrks = CrashBudget()
    monitor = Monitor(run_dir, float(config.get("HEARTBEAT_TIMEOUT_S") or HEARTBEAT_TIMEOUT_S))

    def record_signals() -> None:
        # Runs after granian installed its handlers: note which signal stopped us, then let
        # granian's own (public) interrupt handler do the stopping.
        for sig in (signal.SIGINT, signal.SIGTERM):
            def handler(signum, frame, _sig=sig):
                caught.append(_sig)
                server.signal_handler_interrupt()
            signal.signal(sig, handler)
        announcer.start()
        monitor.start()

    server.on_startup(record_signals)
    # Workers start as fresh interpreters: a fork of this multi-threaded parent (granian's
    # watcher threads, its Rust state) could inherit a lock held mid-fork, and a replacement
    # worker forked at such a moment hung before serving (seen once in the full suite).
    multiprocessing.set_start_method("spawn", force=True)
    failure = None
    try:
        server.serve()
    except SystemExit as exc:
        if exc.code not in (0, None) and not caught:
            failure = (f"the server stopped with status {exc.code} (a worker failed to start or "
                       "kept dying: see the log above)")
    finally:
        announcer.stop()
        monitor.stop()
        if boot_failed.exists():
            failure = (f"a worker could not load {Path(options.model).name} into ONNX Runtime: "
                       f"{boot_failed.read_text().splitlines()[0] if boot_failed.read_text() else '?'}")
        shutil.rmtree(run_dir, ignore_errors=True)
        for key in (MULTIPROC_ENV, CONFIG_ENV, BOOT_FAILED_ENV, RUN_DIR_ENV):
            os.environ.pop(key, None)
    if failure is not None:
        raise ServerError(failure)
    if caught and caught[0] == signal.SIGINT:
        raise Interrupted()


def _granian_logging() -> dict:
    fmt = {"()": "logging.Formatter",
           "fmt": "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"}
    handler = {"formatter": "generic", "class": "logging.StreamHandler",
               "stream": "ext://sys.stderr"}
    return {
        "formatters": {"generic": fmt, "access": fmt},
        "handlers": {"console": handler, "access": {**handler, "formatter": "access"}},
        "loggers": {"_granian": {"handlers": ["console"], "level": "INFO", "propagate": False},
                    "granian.access": {"handlers": ["access"], "level": "INFO",
                                       "propagate": False}},
    }


class _Announcer:
    """Prints one line on stdout once the server answers ready: URL, model, endpoints, a curl."""

    def __init__(self, options: ServeOptions, info, api_key: str | None):
        host = options.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        self.url = f"http://{shown}:{options.port}"
        self.model_name = info.name
        self.api_key = api_key
        self.options = options
        self.info = info
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self) -> str:
        auth = " -H 'Authorization: Bearer $KEY'" if self.api_key else ""
        example = _example_body(self.info)
        return (f"ready: {self.url} serving '{self.model_name}' | endpoints: POST /predict, "
                f"POST /v2/models/{self.model_name}/infer, GET /v2/health/live, "
                f"GET /v2/health/ready, GET /metrics, GET /docs{_text_note(self.info, self.options)}"
                f"{self._grpc_note()} | try: curl -s "
                f"{self.url}/predict -H 'Content-Type: application/json'{auth} -d '{example}'")

    def _grpc_note(self) -> str:
        port = self.options.grpc_port
        if not port:
            return ""
        return f" | gRPC: {self.url.rsplit(':', 1)[0].split('//')[1]}:{port} (inference.GRPCInferenceService)"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._wait, name="serve-announce", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _wait(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        request = urllib.request.Request(f"{self.url}/v2/health/ready", headers=headers)
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(request, timeout=1) as r:
                    if r.status == 200:
                        print(self.line(), flush=True)
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(READY_POLL_S)


def _example_body(info) -> str:
    """A ``/predict`` body: two texts for a text model, else zeros with the model's shape."""
    from .openapi import EXAMPLE_TEXTS, example_inputs

    inputs = EXAMPLE_TEXTS if info.text is not None else example_inputs(info.signature)
    text = json.dumps({"inputs": inputs}, separators=(",", ":"))
    return text if len(text) <= 2000 else '{"inputs": ...}'


def _text_note(info, options: ServeOptions) -> str:
    """`` | text: ...`` for the ready line of a model that carries a tokenizer, else empty."""
    from ..tokenizer import DEFAULT_MAX_CHARS
    from .openapi import text_limits

    if info.text is None:
        return ""
    return f" | text: {text_limits(info, max_batch=options.max_batch, max_chars=DEFAULT_MAX_CHARS)}"


def _reset_prometheus_value_class() -> None:
    # prometheus_client picks file-backed values at import; if it was imported before the
    # variable was set (an embedding process), pick again so workers write to the shared dir.
    if "prometheus_client" in sys.modules:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()
