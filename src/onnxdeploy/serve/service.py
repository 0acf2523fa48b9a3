"""The one request path: every request, through either server, is answered here.

Two servers hand requests in:

- **the granian front** (``serve.front``): it parses HTTP in Rust, buffers the body with a cap
  and a deadline, finds the route (``Router.match``), takes an admission slot for inference
  before queueing the request, and calls ``Service.answer`` in one of its lanes (or inline).
  No Flask request machinery: measured in process on digits-cnn, a request cost ~360 us through
  Flask and ~160 us called directly, the model included (docs/serve.md).
- **Flask** (``serve.app.create_app``: ``--dev``, the test client, any WSGI server): thin
  blueprints registered from the same route table read the body and call ``Service.handle``,
  which takes the admission slot itself.

What happens to a request is written once, here, in this order: the URL path is checked (bytes
that are not UTF-8 are a 400), the API key (unless the route is public), the in-flight gauge
around inference, the view (``serve.views``), the JSON error answer for what it raised (a bug:
the traceback to the log, a bare 500 to the client), then the request counter by endpoint and
status and the latency histogram. Refusals made before a view can run (a body over the cap,
too slow, malformed; a full worker) go through ``refuse`` and are counted the same way.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import DataError
from ..tokenizer import DEFAULT_MAX_CHARS
from .batching import Executor
from .docs import assets_dir
from .metrics import Metrics
from .model import SessionHolder, read_model_info
from .routes import BAD_PATH_CHAR, DOCS_BLUEPRINT, ROUTES, WORK, Match, Request, Router
from .supervise import HEARTBEAT_TIMEOUT_S, RUN_DIR_ENV, live_workers
from .validation import ApiError, body_limit
from .views import RETRY_AFTER_S, Reply, Steps, Views, drive, error_parts, error_reply

log = logging.getLogger("onnxdeploy.serve")

DEFAULTS: dict[str, Any] = {
    "MODEL_PATH": None,
    "MODEL_NAME": None,
    #: ``--runtime``: None runs the file as its metadata says (ONNX Runtime when it says nothing)
    "RUNTIME": None,
    "ORT_THREADS": None,
    "MAX_INFLIGHT": 64,
    "MAX_BATCH": 1024,
    "MAX_BODY_BYTES": None,
    "MAX_BUFFER_BYTES": None,
    "MAX_BATCH_SIZE": 0,
    "BATCH_TIMEOUT_MS": 2.0,
    "BATCH_HOLD": "adaptive",
    "API_KEY": None,
    "LOAD_ON_START": False,
    "MAX_TEXT_CHARS": DEFAULT_MAX_CHARS,
}


#: the smallest body budget of a worker (bytes of bodies held at once, across its requests)
MIN_BUFFER_BYTES = 32 * 2**20


def buffer_budget(max_body: int) -> int:
    """The default body budget: two bodies at the cap, and never under ``MIN_BUFFER_BYTES``."""
    return max(2 * max_body, MIN_BUFFER_BYTES)


class Admission:
    """At most ``limit`` requests in flight (queued or running) per worker; the rest are shed.

    Shedding at once (503 + Retry-After) rather than queueing without bound keeps the latency of
    what is accepted. The front takes a slot in its event loop before a request is queued for a
    thread; ``Service.handle`` takes one around the view under any other server.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    def enter(self) -> bool:
        """Take a slot; False when none is free."""
        with self._lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count -= 1

    def busy(self) -> ApiError:
        """The refusal of a request that found every slot taken."""
        return ApiError(503, f"server busy: {self.limit} requests in flight in this worker; "
                             "retry later", {"Retry-After": RETRY_AFTER_S})


class BodyBudget:
    """The bytes of request bodies a worker holds at once (being read, or waiting for their
    answer), across all its requests; beyond ``limit`` a request is refused without reading.

    A body with a ``Content-Length`` reserves its whole length before a byte is read; a chunked
    body reserves as its chunks arrive; a gRPC message is charged once read (gRPC gives no size
    before that: ``grpc_service`` bounds how many are being read at once instead). The
    reservation lasts until the answer is made (the body is alive until then). Both protocols
    take and give from the worker's event loop only (no lock needed).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` more bytes; False (nothing reserved) when that passes the budget."""
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n

    def busy(self) -> ApiError:
        return ApiError(503, f"server busy: this worker is holding {self.held} bytes of request "
                             f"bodies (budget {self.limit} bytes); retry later",
                        {"Retry-After": RETRY_AFTER_S})

    def too_large(self, n: int) -> ApiError:
        return ApiError(413, f"request body is {n} bytes, over this worker's body budget; "
                             f"expected at most {self.limit} bytes")


class Service:
    """A served model's request path: routes, checks, views, errors and metrics."""

    def __init__(self, config: dict[str, Any]):
        """``config`` keys (defaults in ``DEFAULTS``): ``MODEL_PATH`` (required, the .onnx
        file), ``MODEL_NAME`` (default: the file's stem), ``ORT_THREADS`` (intra-op threads per
        process, default: the CPUs this process may use), ``MAX_INFLIGHT`` (inference requests
        handled at once per process; more get 503 + Retry-After), ``MAX_BATCH`` (rows per
        request), ``MAX_BODY_BYTES`` (413 above it; default: derived from the signature and
        ``MAX_BATCH``, see ``validation.body_limit``), ``MAX_BUFFER_BYTES`` (bytes of bodies
        one worker holds at once, see ``BodyBudget``; default ``buffer_budget``),
        ``MAX_BATCH_SIZE`` (dynamic batching:
        rows per merged run, 0 = off), ``BATCH_TIMEOUT_MS`` (longest hold of a batch for more),
        ``BATCH_HOLD`` (``adaptive`` or ``always``, see ``serve.batching``),
        ``API_KEY`` (require ``Authorization: Bearer <key>`` except on public routes: liveness
        and the docs page), ``MAX_TEXT_CHARS`` (a text model: longer texts get 413).
        ``LOAD_ON_START`` is the app factory's (the front loads the session in each worker).
        """
        from ..runtimes import default_threads

        cfg = {**DEFAULTS, **config}
        if not cfg["MODEL_PATH"]:
            raise ValueError("the server needs config['MODEL_PATH']")
        self.info = info = read_model_info(cfg["MODEL_PATH"], cfg["MODEL_NAME"], runtime=cfg.get("RUNTIME"))
        max_batch, max_chars = int(cfg["MAX_BATCH"]), int(cfg["MAX_TEXT_CHARS"])
        self.max_body = int(cfg["MAX_BODY_BYTES"] or body_limit(info.signature, max_batch))
        cfg["MAX_BODY_BYTES"] = self.max_body
        self.config = cfg
        self.holder = SessionHolder(info, ort_threads=int(cfg["ORT_THREADS"] or default_threads()),
                                    max_chars=max_chars)
        self.metrics = Metrics(batching=int(cfg["MAX_BATCH_SIZE"]) > 1)
        self.executor = Executor(self.holder, self.metrics,
                                 max_batch_size=int(cfg["MAX_BATCH_SIZE"]),
                                 timeout_ms=float(cfg["BATCH_TIMEOUT_MS"]),
                                 hold=str(cfg["BATCH_HOLD"]))
        self.admission = Admission(int(cfg["MAX_INFLIGHT"]))
        self.buffer = BodyBudget(int(cfg["MAX_BUFFER_BYTES"] or buffer_budget(self.max_body)))
        cfg["MAX_BUFFER_BYTES"] = self.buffer.limit
        self.api_key = cfg["API_KEY"].encode() if cfg["API_KEY"] else None
        docs = assets_dir()
        if docs is None:
            log.warning("swagger-ui-py is not installed: /docs is off (install onnxdeploy[serve])")
        self.routes = tuple(r for r in ROUTES if docs is not None or r.blueprint != DOCS_BLUEPRINT)
        self.router = Router(self.routes)
        self.views = Views(info, self.holder, self.executor, self.metrics, max_batch=max_batch,
                           max_chars=max_chars, docs_root=docs, capacity=self.capacity)
        self._counters: dict[tuple, Any] = {}  # labelled children, made once
        self._timers: dict[tuple[str, str], Any] = {}
        self._workers: dict[tuple[int, str], Any] = {}

    # ------------------------------------------------------------------ the path

    def handle(self, match: Match, request: Request) -> Reply:
        """Answer a request, taking an admission slot for inference (any server but the front,
        which takes its slot before queueing and calls ``answer``)."""
        if match.route.lane != WORK:
            return self.answer(match, request)
        if not self.admission.enter():
            return self.refuse(match.route.endpoint, self.admission.busy())
        try:
            return self.answer(match, request)
        finally:
            self.admission.leave()

    def answer(self, match: Match, request: Request) -> Reply:
        """Check, run the view, turn what it raised into JSON, count and time the request; all
        in this thread (``answer_steps`` driven to its end)."""
        return drive(self.answer_steps(match, request), self.executor)

    def answer_steps(self, match: Match, request: Request) -> Steps:
        """``answer`` as steps (see ``views.Run``): an inference request yields the run it needs,
        carrying its ``Executor.expect`` ticket, and is sent the outputs; the caller decides
        which thread waits for the run (the front's event loop hands it to the executor's
        runner). Returns the ``Reply``; never raises for what a view raised."""
        t0 = time.perf_counter()
        route = match.route
        try:
            self.check_request(match, request.path, request.header)
            view: Callable[..., Any] = getattr(self.views, route.view)
            if route.lane == WORK:
                gauge = self.metrics.inflight
                gauge.inc()
                try:
                    with self.executor.expect() as ticket:  # the batcher knows it is on its way
                        steps = view(request, **match.args)
                        reply = yield from (steps if ticket is None else _ticketed(steps, ticket))
                finally:
                    gauge.dec()
            else:
                reply = view(request, **match.args)
        except (ApiError, DataError) as exc:
            reply = error_reply(exc)
        except Exception as exc:  # a bug: the traceback to the log, a bare 500 to the client
            log.exception("unhandled error in %s %s", request.method, request.path)
            reply = error_reply(exc)
        if request.method == "HEAD":
            reply = reply._replace(body=b"")
        self._count(route.endpoint, reply.status, t0)
        return reply

    def capacity(self) -> tuple[int, int] | None:
        """(live workers, workers) of a granian server (fresh heartbeats, ``serve.supervise``);
        None under any other server."""
        run_dir, expected = os.environ.get(RUN_DIR_ENV), self.config.get("WORKERS")
        if not run_dir or not expected:
            return None
        timeout = float(self.config.get("HEARTBEAT_TIMEOUT_S") or HEARTBEAT_TIMEOUT_S)
        return live_workers(run_dir, timeout), int(expected)

    def check_request(self, match: Match, path: str, header: Callable[[str], str | None]
                      ) -> None:
        """What is checked from the request line and headers alone, before any body is read:
        the URL path, then the API key (unless the route is public). Raises ``ApiError``."""
        if BAD_PATH_CHAR in path:
            raise ApiError(400, "the URL path is not valid UTF-8 once percent-decoded; "
                                "expected UTF-8 (percent-encoded) names")
        if not match.route.public:
            self.check_key(header("authorization"))

    def check_first(self, match: Match, method: str, path: str,
                    header: Callable[[str], str | None]) -> Reply | None:
        """``check_request`` before any body is read: None when the request may go on, else
        the refusal, answered, counted and timed as ``answer`` would have."""
        t0 = time.perf_counter()
        try:
            self.check_request(match, path, header)
        except ApiError as exc:
            reply = error_reply(exc)
            if method == "HEAD":
                reply = reply._replace(body=b"")
            self._count(match.route.endpoint, reply.status, t0)
            return reply
        return None

    def refuse(self, endpoint: str, exc: Exception, protocol: str = "http") -> Reply:
        """A refusal made before any view could run, answered and counted like the rest."""
        reply = error_reply(exc)
        self._count(endpoint, reply.status, None, protocol)
        return reply

    def rpc(self, endpoint: str, authorization: str | None, fn: Callable[[], Any], *,
            public: bool = False, protocol: str = "grpc"
            ) -> tuple[Any, tuple[int, str, dict[str, str]] | None]:
        """``rpc_steps`` for a call that runs no model (readiness, metadata): ``fn`` answers it
        in this thread."""
        return drive(self.rpc_steps(endpoint, authorization, _steps_of(fn), public=public,
                                    protocol=protocol), self.executor)

    def rpc_steps(self, endpoint: str, authorization: str | None, steps: Steps, *,
                  public: bool = False, work: bool = False, protocol: str = "grpc"):
        """The request path for a protocol whose requests are not HTTP requests (gRPC), as
        steps (see ``views.Run``; the caller decides which thread waits for each run, as the
        front does for REST): the API key unless ``public``, the in-flight gauge and the
        executor's ticket when ``work``, the view's ``steps`` (which parse, check, yield their
        runs and return the answer), the error turned into (status, message, headers) exactly
        as REST gives it, then the same counter and histogram under ``protocol``. Returns
        ``(value, None)`` or ``(None, error)``; admission is the caller's, as it is the
        front's."""
        t0 = time.perf_counter()
        value, error = None, None
        try:
            if not public:
                self.check_key(authorization)
            if work:
                gauge = self.metrics.inflight
                gauge.inc()
                try:
                    with self.executor.expect() as ticket:  # the batcher knows it is on its way
                        value = yield from (steps if ticket is None else _ticketed(steps, ticket))
                finally:
                    gauge.dec()
            else:
                value = yield from steps
        except (ApiError, DataError) as exc:
            error = error_parts(exc)
        except Exception as exc:  # a bug: the traceback to the log, a bare INTERNAL to the client
            log.exception("unhandled error in %s over %s", endpoint, protocol)
            error = error_parts(exc)
        self._count(endpoint, 200 if error is None else error[0], t0, protocol)
        return value, error

    def check_key(self, authorization: str | None) -> None:
        """401 unless ``Authorization: Bearer <key>`` carries the key (when one is set)."""
        if self.api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self.api_key):
            raise ApiError(401, "missing or wrong API key; expected 'Authorization: Bearer <key>'",
                           {"WWW-Authenticate": "Bearer"})

    def _count(self, endpoint: str, status: int, t0: float | None,
               protocol: str = "http") -> None:
        try:
            key = (endpoint, status, protocol)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self.metrics.requests.labels(
                    endpoint, str(status), protocol)
            counter.inc()
            wkey = (os.getpid(), protocol)  # a pid: the worker this process is (forks included)
            worker = self._workers.get(wkey)
            if worker is None:
                worker = self._workers[wkey] = self.metrics.worker_requests.labels(
                    str(wkey[0]), protocol)
            worker.inc()
            if t0 is not None:
                tkey = (endpoint, protocol)
                timer = self._timers.get(tkey)
                if timer is None:
                    timer = self._timers[tkey] = self.metrics.request_seconds.labels(*tkey)
                timer.observe(time.perf_counter() - t0)
        except Exception:  # pragma: no cover - metrics must never break an answer
            log.exception("could not count a request")


def _steps_of(fn: Callable[[], Any]) -> Steps:
    """``fn``'s answer as the steps of a view that runs nothing."""
    return fn()
    yield  # (never reached) makes this function a generator


def _ticketed(steps: Steps, ticket) -> Steps:
    """A view's steps with each ``Run`` carrying the request's ticket."""
    try:
        need = next(steps)
        while True:
            try:
                outputs = yield need._replace(ticket=ticket)
            except Exception as exc:  # the run's error, raised where the view waits
                need = steps.throw(exc)
            else:
                need = steps.send(outputs)
    except StopIteration as stop:
        return stop.value
