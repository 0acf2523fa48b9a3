"""Lifecycle of ``onnxdeploy serve`` child processes: free ports, start, wait for ready, stop.

Each server runs in its own session (process group), so stopping it reaches its gunicorn workers
and a Ctrl-C in the terminal reaches only us; ``ServerPool`` stops every server it started on any
exit, and ``signals_as_interrupt`` turns SIGTERM into KeyboardInterrupt so that exit runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OptionError, ServerError
from .httpclient import is_up

READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
DEFAULT_READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 20


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on ``host:port`` (or it cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as a server binds: a port whose last server closed its connections (TIME_WAIT on the
        # server side, as granian leaves after closing idle keep-alives) is free to listen on
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def serve_command() -> list[str]:
    """How to run ``onnxdeploy`` from this interpreter."""
    return [sys.executable, "-m", "onnxdeploy.cli", "serve"]


@dataclass
class ServerSpec:
    """One model to serve and how."""

    model: str
    name: str
    port: int
    host: str = "127.0.0.1"
    workers: int | None = None
    threads: int | None = None
    ort_threads: int | None = None
    cpus: Sequence[int] | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        argv = [*serve_command(), str(self.model), "--host", self.host, "--port", str(self.port),
                "--name", self.name]
        for flag, value in (("--workers", self.workers), ("--threads", self.threads),
                            ("--ort-threads", self.ort_threads)):
            if value is not None:
                argv += [flag, str(value)]
        return argv + list(self.extra_args)


class Server:
    """A running ``onnxdeploy serve`` child with its log file."""

    def __init__(self, spec: ServerSpec, log_dir: Path):
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.{spec.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.spec.url

    def start(self) -> None:
        """Spawn the server in its own process group, logging to a file."""
        cpus = self.spec.cpus
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.spec.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines the server wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        all_lines = text.strip().splitlines()
        tail = all_lines[-lines:]
        # a server that crash-loops buries its first error under restarts: show that line too
        first = next((ln for ln in all_lines if "Error" in ln or "error:" in ln), None)
        if first is not None and first not in tail:
            tail = [f"(first error) {first}", "...", *tail]
        return "\n".join(tail) or "(empty log)"

    def wait_ready(self, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Poll the readiness endpoint; ServerError with the log tail if it dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(
                    f"server '{self.spec.name}' ({self.spec.model}) exited with code "
                    f"{self.proc.returncode} before it was ready; last lines of its log:\n{self.log_tail()}"
                )
            if is_up(self.url, READY_PATH, timeout=1.0):
                return
            time.sleep(0.1)
        raise ServerError(
            f"server '{self.spec.name}' ({self.spec.model}) not ready at {self.url}{READY_PATH} "
            f"after {timeout_s:g}s; last lines of its log:\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        """True while the server's main process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after a grace period."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        # workers may outlive a master that was killed; the group id still reaches them
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_GRACE_S)


class ServerPool:
    """Starts servers and guarantees they are stopped: use it as a context manager."""

    def __init__(self, *, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S):
        self.ready_timeout_s = ready_timeout_s
        self.servers: list[Server] = []
        self._logdir = tempfile.TemporaryDirectory(prefix="onnxdeploy-bench-")

    def start_all(self, specs: Sequence[ServerSpec]) -> list[Server]:
        """Check ports, start every server, then wait for each to be ready."""
        ports = [s.port for s in specs]
        if len(set(ports)) != len(ports):
            raise OptionError(f"--ports: each server needs its own port, got {ports}")
        for spec in specs:
            if port_in_use(spec.port, spec.host):
                raise OptionError(f"port {spec.port} on {spec.host} is in use; pick another with --ports or omit it")
        for spec in specs:
            server = Server(spec, Path(self._logdir.name))
            self.servers.append(server)
            server.start()
        for server in self.servers:
            server.wait_ready(self.ready_timeout_s)
        return self.servers

    def stop_all(self) -> None:
        """Stop every started server (idempotent)."""
        for server in self.servers:
            server.stop()

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop_all()
        finally:
            self._logdir.cleanup()


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (as SIGINT does) so cleanup runs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
