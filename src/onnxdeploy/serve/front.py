"""The HTTP front: granian parses HTTP in Rust, this RSGI app buffers bodies and admits requests.

granian (its RSGI interface) reads request lines and headers in Rust with a deadline, so slow
headers never reach Python. This module is the RSGI application of each worker process:

- **bodies first**: the body is read here, in the worker's event loop, with a size cap
  (``413`` from ``Content-Length`` before reading, or as soon as a chunked body passes the cap)
  and a deadline (``408``). A slow body holds a coroutine, never a request thread.
- **admission**: only then does an inference request take a slot. At most ``MAX_INFLIGHT``
  inference requests per worker are queued or running in the work lane; more are answered
  ``503`` + ``Retry-After`` at once from the event loop (before their body is read when the
  worker is already full). Nothing here depends on a server's internals: the bound is a counter
  in this module.
- **lanes**: the Flask app (``create_app``) runs unchanged in bounded thread pools: the work lane
  (``--http-threads``) for inference, a probe lane for liveness, readiness and ``/metrics`` (so
  they answer during any burst) and a lane for the rest (metadata, ``/openapi.json``, ``/docs``).

Each request becomes a WSGI environ with the buffered body, so the views, error handlers and
metrics are the app's own. Refusals made here (413, 408, 400 for a broken body, 503) are JSON
and counted in the app's metrics under the endpoint they were meant for.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

try:  # the exceptions granian raises when a client is gone (public, in granian.rsgi)
    from granian.rsgi import ProtocolClosed, ProtocolError
except ImportError:  # pragma: no cover - the front only runs under granian
    class ProtocolClosed(Exception):  # noqa: N818
        pass

    class ProtocolError(Exception):  # noqa: N818
        pass

log = logging.getLogger("onnxdeploy.serve")
BODY_KEY = "onnxdeploy.body"  # as serve.app reads it (not imported: the app imports Flask)
#: the request headers the inference views read (lower-case, as granian names them); as
#: serve.views.HEADERS, which imports numpy and ORT's helpers (checked by a test)
HEADERS = ("authorization", "content-type", "inference-header-content-length")

CONFIG_ENV = "ONNXDEPLOY_SERVE_CONFIG"
#: where a worker that cannot create its session writes why (the parent then exits 1)
BOOT_FAILED_ENV = "ONNXDEPLOY_SERVE_BOOT_FAILED"
PROBE_THREADS = 2
MISC_THREADS = 2
#: the longest a client may take to send its whole body once its headers arrived
BODY_TIMEOUT_S = 10.0
#: body cap for endpoints that take no body (metadata, health, docs)
SMALL_BODY_BYTES = 64 * 1024
RETRY_AFTER_S = "1"
#: an inference request whose view takes less than this on average (EWMA) runs in the event
#: loop's own thread when it is the only one in flight; above INLINE_ABOVE_S it goes back to
#: the work lane, so a slow model never holds the loop that answers probes and 503s
INLINE_BELOW_S = 0.001
INLINE_ABOVE_S = 0.003
PROBE_PATHS = ("/v2/health/live", "/v2/health/ready", "/metrics")
_JSON = [("Content-Type", "application/json")]
_SKIP_HEADERS = frozenset({"content-length", "content-type", "transfer-encoding"})
_STATUS_CACHE: dict[str, int] = {}


def inference_endpoint(method: str, path: str) -> str | None:
    """The endpoint name of an inference request (``predict``, ``v2_infer``), else None."""
    if method != "POST":
        return None
    if path == "/predict":
        return "predict"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2_infer"
    return None


class Lane:
    """A fixed set of threads running ``fn(arg)`` for the event loop, in arrival order.

    Lighter than ``run_in_executor`` (one C queue, one ``call_soon_threadsafe`` back, no
    concurrent.futures bookkeeping): at a few hundred microseconds a request, that is measurable.
    """

    def __init__(self, loop, fn, threads: int, name: str):
        self.loop, self.fn = loop, fn
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def submit(self, arg) -> asyncio.Future:
        future = self.loop.create_future()
        self.queue.put((future, arg))
        return future

    def shutdown(self) -> None:
        """Finish what is queued, then stop the threads."""
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()

    def _serve(self) -> None:
        get, fn, post = self.queue.get, self.fn, self.loop.call_soon_threadsafe
        while True:
            item = get()
            if item is None:
                return
            future, arg = item
            try:
                try:
                    result = fn(arg)
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                    post(_fail, future, exc)
                else:
                    post(_resolve, future, result)
            except RuntimeError:  # the loop is closed: the worker is stopping, nobody waits
                pass


def _resolve(future: asyncio.Future, result) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class _BodyError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Front:
    """The RSGI application of one worker: ``__rsgi_init__`` builds the app and its lanes."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.app = None
        self.loop = None
        self.inflight = 0

    # ------------------------------------------------------------------ lifecycle (per worker)

    def __rsgi_init__(self, loop) -> None:
        from .app import create_app
        from .metrics import forget_dead_workers

        self.loop = loop
        forget_dead_workers()  # a replaced worker's gauges must not linger in the sums
        self.app = create_app(self.config)
        self.holder = self.app.extensions["onnxdeploy"]
        self.metrics = self.app.extensions["onnxdeploy.metrics"]
        self.views = self.app.extensions["onnxdeploy.views"]
        self.max_inflight = int(self.app.config["MAX_INFLIGHT"])
        self.max_body = int(self.app.config["MAX_BODY_BYTES"])
        self.body_timeout = float(self.config.get("BODY_TIMEOUT_S") or BODY_TIMEOUT_S)
        threads = int(self.config.get("HTTP_THREADS") or 1)
        self.work = Lane(loop, self._timed_call, threads, "serve-work")
        # Inline: a quick model runs in the loop thread itself while nothing else is in flight
        # (one thread hop less a request); see INLINE_BELOW_S. Never with batching: a request
        # waiting for its batch must not hold the loop.
        self.inline_allowed = (bool(self.config.get("INLINE", True))
                               and int(self.app.config["MAX_BATCH_SIZE"]) <= 1)
        self.inline = False
        self.service_s = None
        self.probe = Lane(loop, self._call, PROBE_THREADS, "serve-probe")
        self.misc = Lane(loop, self._call, MISC_THREADS, "serve-misc")
        self.misc_inflight = 0
        try:
            self.holder.load()  # this worker's own session, created here, before serving
        except Exception as exc:
            # A model ONNX Runtime cannot load fails every worker alike: stop the server now
            # rather than let it respawn workers until its crash-loop guard gives up.
            log.error("worker %d: cannot create the session for %s: %s", os.getpid(),
                      self.holder.info.path, str(exc).strip())
            marker = os.environ.get(BOOT_FAILED_ENV)
            if marker:
                with open(marker, "w") as f:
                    f.write(str(exc).strip()[:2000])
            os.kill(os.getppid(), signal.SIGTERM)
            raise
        # Everything allocated so far (Flask, numpy, onnxruntime, the app) lives as long as the
        # worker: move it out of the collector's reach, so a full collection during serving
        # walks only what requests allocate (a full pass over ~10^5 long-lived objects is a
        # tail-latency spike of milliseconds).
        gc.collect()
        gc.freeze()

    def __rsgi_del__(self, loop) -> None:
        for lane in (self.work, self.probe, self.misc):
            lane.shutdown()

    # ------------------------------------------------------------------ requests

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":  # websockets are not served
            return
        try:
            await self._handle(scope, proto)
        except (ProtocolClosed, ProtocolError):  # the client left before its answer
            pass
        except Exception:  # a bug here must still answer JSON, and say where in the log
            log.exception("unhandled error in the front for %s %s", scope.method, scope.path)
            try:
                proto.response_bytes(500, list(_JSON), b'{"error": "internal server error '
                                     b'(details are in the server log)"}')
            except Exception:  # noqa: BLE001 - already answered, or the client is gone
                pass

    async def _handle(self, scope, proto) -> None:
        method, path = scope.method, scope.path
        endpoint = inference_endpoint(method, path)
        headers = scope.headers
        if endpoint is not None:
            if self.inflight >= self.max_inflight:  # full already: refuse before reading the body
                return self._refuse(proto, endpoint, 503, self._busy())
            cap = self.max_body
        else:
            cap = SMALL_BODY_BYTES
        try:
            body = await self._read_body(proto, headers, cap)
        except _BodyError as exc:
            return self._refuse(proto, endpoint or "unmatched", exc.status, exc.message)
        if endpoint is not None:
            if self.inflight >= self.max_inflight:
                return self._refuse(proto, endpoint, 503, self._busy())
            self.inflight += 1
            try:
                args = self.views.route(endpoint, path)
                if args is None:  # not a route the views answer directly: Flask's own 404
                    request = partial(self._call, self._environ(scope, headers, body))
                else:  # the headers the views read, taken here: granian's objects stay here
                    request = partial(self.views.direct, endpoint, args, path,
                                      {name: headers.get(name) for name in HEADERS}.get, body)
                if self.inline and self.inflight == 1:
                    status, out_headers, out = self._timed_call(request)
                else:
                    status, out_headers, out = await self.work.submit(request)
            finally:
                self.inflight -= 1
        elif method in ("GET", "HEAD") and path in PROBE_PATHS:
            status, out_headers, out = await self.probe.submit(
                self._environ(scope, headers, body))
        else:
            if self.misc_inflight >= self.max_inflight:
                return self._refuse(proto, "unmatched", 503, "server busy; retry later")
            self.misc_inflight += 1
            try:
                status, out_headers, out = await self.misc.submit(
                    self._environ(scope, headers, body))
            finally:
                self.misc_inflight -= 1
        proto.response_bytes(status, out_headers, out)

    def _busy(self) -> str:
        return (f"server busy: {self.max_inflight} requests in flight in this worker; "
                "retry later")

    async def _read_body(self, proto, headers, cap: int) -> bytes:
        length = headers.get("content-length")
        chunked = "chunked" in (headers.get("transfer-encoding") or "").lower()
        if length is None and not chunked:
            return b""
        if length is not None:
            if not length.isdigit():
                raise _BodyError(400, f"Content-Length {length!r} is not a number of bytes")
            if int(length) > cap:
                raise _BodyError(413, f"request body is {int(length)} bytes; expected at most "
                                      f"{cap} bytes")
            if length == "0":
                return b""
        task = asyncio.current_task()
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            task.cancel()

        timer = self.loop.call_later(self.body_timeout, expire) if task else None
        try:
            if length is not None:
                return await proto()
            parts, size = [], 0
            async for chunk in proto:
                size += len(chunk)
                if size > cap:
                    raise _BodyError(413, f"request body (chunked) is over the limit; expected at "
                                          f"most {cap} bytes")
                parts.append(chunk)
            if not size:  # granian ends a body whose chunking it cannot parse without an error
                raise _BodyError(400, "empty or malformed chunked body; expected chunks of "
                                      "'<hex size> CRLF <bytes> CRLF' ending with a zero-size chunk")
            return b"".join(parts)
        except asyncio.CancelledError:
            if expired:
                raise _BodyError(408, f"request body not received within {self.body_timeout:g} s"
                                 ) from None
            raise
        except _BodyError:
            raise
        except Exception as exc:  # broken chunking, a client that went away mid-body
            log.info("request body unreadable: %s: %s", type(exc).__name__, exc)
            raise _BodyError(400, "malformed request body (bad chunked encoding, or the body "
                                  "ended early); expected a complete body") from None
        finally:
            if timer is not None:
                timer.cancel()

    def _refuse(self, proto, endpoint: str, status: int, message: str) -> None:
        headers = list(_JSON)
        if status == 503:
            headers.append(("Retry-After", RETRY_AFTER_S))
        if status in (400, 408, 413):
            headers.append(("Connection", "close"))  # the rest of the body is not read
        try:
            self.metrics.requests.labels(endpoint, str(status)).inc()
        except Exception:  # pragma: no cover - metrics must never break a refusal
            log.exception("could not count a refusal")
        proto.response_bytes(status, headers, json.dumps({"error": message}).encode())

    def _environ(self, scope, headers, body: bytes) -> dict[str, Any]:
        host, _, port = scope.server.rpartition(":")
        environ = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": scope.path,
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": host,
            "SERVER_PORT": port,
            "SERVER_PROTOCOL": "HTTP/" + scope.http_version,
            "REMOTE_ADDR": scope.client.rpartition(":")[0],
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body),
            BODY_KEY: body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        content_type = headers.get("content-type")
        if content_type is not None:
            environ["CONTENT_TYPE"] = content_type
        for key, value in headers.items():
            if key in _SKIP_HEADERS:
                continue
            name = "HTTP_" + key.upper().replace("-", "_")
            environ[name] = environ[name] + "," + value if name in environ else value
        return environ

    def _timed_call(self, request: Callable[[], tuple]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer an admitted inference request (the views directly, or Flask for a path they
        do not route), timed for the inline decision."""
        t0 = time.perf_counter()
        try:
            return request()
        finally:
            took = time.perf_counter() - t0
            ewma = self.service_s
            self.service_s = took if ewma is None else ewma + (took - ewma) * 0.05
            if self.inline_allowed:  # hysteresis: a model near the bound does not flip-flop
                if self.inline and self.service_s > INLINE_ABOVE_S:
                    self.inline = False
                elif not self.inline and self.service_s < INLINE_BELOW_S:
                    self.inline = True

    def _call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        started: list[Any] = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]
            return _no_write

        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status_line, headers = started
        status = _STATUS_CACHE.get(status_line)
        if status is None:
            status = _STATUS_CACHE.setdefault(status_line, int(status_line[:3]))
        return status, [(k, v) for k, v in headers if k.lower() != "content-length"], body


def _no_write(data: bytes) -> None:  # pragma: no cover - Flask never calls write()
    raise RuntimeError("write() is not supported; return the body")


def load_front(config: dict[str, Any] | None = None) -> Front:
    """The RSGI target granian loads in each worker (config from ``ONNXDEPLOY_SERVE_CONFIG``)."""
    if config is None:
        config = json.loads(os.environ[CONFIG_ENV])
    if not logging.getLogger().handlers:  # a spawned worker: log as the parent does
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    return Front(config)
