"""The Flask application factory: blueprints for /predict, the Open Inference Protocol, probes
and docs; auth, limits, overload bound, JSON errors.

Views are short: check, run, answer. Every refusal leaves as an ``ApiError`` (or a werkzeug
HTTPException for routing) and one handler turns it into ``{"error": "..."}`` with its status;
anything unexpected is logged with its traceback and answered with a bare 500 message.

The app is the same under every front: granian through ``serve.front`` (which buffers bodies and
bounds requests before they reach a view), Flask's own server (``--dev``) and the test client.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .. import __version__
from ..errors import DataError
from ..runtimes import default_threads
from ..tokenizer import DEFAULT_MAX_CHARS
from . import protocols
from .batching import Executor
from .docs import docs_blueprint
from .metrics import Metrics
from .model import SessionHolder, read_model_info
from .openapi import openapi_spec
from .validation import ApiError, body_limit
from .views import Inference, Reply, error_reply, json_reply

log = logging.getLogger("onnxdeploy.serve")

DEFAULTS: dict[str, Any] = {
    "MODEL_PATH": None,
    "MODEL_NAME": None,
    "ORT_THREADS": None,
    "MAX_INFLIGHT": 64,
    "MAX_BATCH": 1024,
    "MAX_BODY_BYTES": None,
    "MAX_BATCH_SIZE": 0,
    "BATCH_TIMEOUT_MS": 2.0,
    "API_KEY": None,
    "LOAD_ON_START": False,
    "MAX_TEXT_CHARS": DEFAULT_MAX_CHARS,
}
#: liveness must answer even without credentials, so orchestrators can probe it; the docs page
#: and its assets are static (the spec they load still needs the key)
PUBLIC_ENDPOINTS = frozenset({"v2.v2_live", "docs.page", "docs.static"})
RETRY_AFTER_S = "1"
#: WSGI environ key under which a front that buffered the body passes it as bytes
BODY_KEY = "onnxdeploy.body"


def create_app(config: dict | None = None):
    """Build the serving app.

    Config keys (defaults in ``DEFAULTS``): ``MODEL_PATH`` (required, the .onnx file),
    ``MODEL_NAME`` (default: the file's stem), ``ORT_THREADS`` (intra-op threads per process,
    default: the CPUs this process may use), ``MAX_INFLIGHT`` (inference requests handled at
    once per process; more get 503 + Retry-After), ``MAX_BATCH`` (rows per request),
    ``MAX_BODY_BYTES`` (413 above it; default: derived from the signature and ``MAX_BATCH``,
    see ``validation.body_limit``), ``MAX_BATCH_SIZE`` (dynamic batching: rows per merged run,
    0 = off), ``BATCH_TIMEOUT_MS`` (longest wait for a batch to fill), ``API_KEY`` (require
    ``Authorization: Bearer <key>`` except on liveness and the docs page), ``LOAD_ON_START``
    (create the session now rather than on first use; the granian front loads it in each
    worker before serving), ``MAX_TEXT_CHARS`` (a text model: longer texts get 413).
    """
    from flask import Blueprint, Flask, Response, g, request
    from werkzeug.exceptions import HTTPException

    cfg = {**DEFAULTS, **(config or {})}
    if not cfg["MODEL_PATH"]:
        raise ValueError("create_app needs config['MODEL_PATH']")
    info = read_model_info(cfg["MODEL_PATH"], cfg["MODEL_NAME"], runtime=cfg.get("RUNTIME"))
    max_chars = int(cfg["MAX_TEXT_CHARS"])
    max_batch = int(cfg["MAX_BATCH"])
    holder = SessionHolder(info, ort_threads=int(cfg["ORT_THREADS"] or default_threads()),
                           max_chars=max_chars)
    metrics = Metrics(batching=int(cfg["MAX_BATCH_SIZE"]) > 1)
    executor = Executor(holder, metrics, max_batch_size=int(cfg["MAX_BATCH_SIZE"]),
                        timeout_ms=float(cfg["BATCH_TIMEOUT_MS"]))
    inflight = threading.BoundedSemaphore(int(cfg["MAX_INFLIGHT"]))
    max_body = int(cfg["MAX_BODY_BYTES"] or body_limit(info.signature, int(cfg["MAX_BATCH"])))
    cfg["MAX_BODY_BYTES"] = max_body

    app = Flask("onnxdeploy.serve")
    app.config.update(cfg)
    # Werkzeug enforces this while reading bodies without a Content-Length (chunked) under
    # --dev; the granian front has buffered (and capped) every body before a view runs.
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.extensions["onnxdeploy"] = holder
    app.extensions["onnxdeploy.executor"] = executor
    app.extensions["onnxdeploy.metrics"] = metrics
    app.extensions["onnxdeploy.info"] = info
    views = Inference(info, holder, executor, metrics, max_batch=max_batch, max_chars=max_chars,
                      api_key=cfg["API_KEY"])
    app.extensions["onnxdeploy.views"] = views

    def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
        return reply_response(json_reply(obj, status, headers))

    def reply_response(reply: Reply) -> Response:
        return Response(reply.body, status=reply.status, headers=reply.headers)

    # ------------------------------------------------------------------ cross-cutting

    @app.before_request
    def _start():
        g.t0 = time.perf_counter()
        if request.endpoint not in PUBLIC_ENDPOINTS:
            views.check_key(request.headers.get("Authorization"))
        length = request.content_length
        if length is not None and length > max_body:
            raise ApiError(413, f"request body is {length} bytes; expected at most {max_body} bytes")

    counters: dict[tuple[str | None, int], Any] = {}  # labelled children, made once
    timers: dict[str | None, Any] = {}

    @app.after_request
    def _record(response):
        key = (request.endpoint, response.status_code)
        counter = counters.get(key)
        if counter is None:
            # metrics name endpoints without their blueprint: "predict", "v2_infer", "v2_live"
            endpoint = (request.endpoint or "unmatched").rpartition(".")[2]
            counter = counters[key] = metrics.requests.labels(endpoint, str(key[1]))
            timers.setdefault(request.endpoint, metrics.request_seconds.labels(endpoint))
        counter.inc()
        t0 = g.get("t0")
        if t0 is not None:
            timers[request.endpoint].observe(time.perf_counter() - t0)
        return response

    @app.errorhandler(ApiError)
    @app.errorhandler(DataError)
    def _refused(exc: Exception):
        return reply_response(error_reply(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 404:
            message = f"no such endpoint {request.method} {request.path}; see GET /openapi.json"
        elif exc.code == 405:
            allowed = ", ".join(m for m in (exc.valid_methods or []) if m not in ("HEAD", "OPTIONS"))
            message = f"method {request.method} not allowed on {request.path}; expected {allowed}"
        elif exc.code == 413:
            message = f"request body too large; expected at most {max_body} bytes"
        else:
            message = exc.description or exc.name
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return json_response({"error": message}, exc.code or 500, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error in %s %s", request.method, request.path)
        return reply_response(error_reply(exc))

    def body() -> bytes:
        # the granian front hands over the body it buffered: no second pass through a stream
        data = request.environ.get(BODY_KEY)
        if data is not None:
            return data
        data = request.get_data(cache=False)
        if len(data) > max_body:  # a chunked body Werkzeug stopped reading at the cap (--dev)
            raise ApiError(413, f"request body is over {max_body} bytes; expected at most "
                                f"{max_body} bytes")
        return data

    def admitted(view):
        # Shed load at once rather than queueing without bound; health routes are not counted.
        # The granian front bounds requests before they get here; this bounds them under any
        # other server (--dev, the test client).
        def wrapper(*args, **kwargs):
            if not inflight.acquire(blocking=False):
                raise ApiError(503, f"server busy: {cfg['MAX_INFLIGHT']} requests in flight in this "
                                    "worker; retry later", {"Retry-After": RETRY_AFTER_S})
            metrics.inflight.inc()
            try:
                return view(*args, **kwargs)
            finally:
                metrics.inflight.dec()
                inflight.release()

        wrapper.__name__ = view.__name__
        return wrapper

    # ------------------------------------------------------------------ inference (JSON)

    simple = Blueprint("simple", __name__)

    @simple.post("/predict", endpoint="predict")
    @admitted
    def predict():
        return reply_response(views.predict(request.headers.get("Content-Type"), body()))

    # ------------------------------------------------------------------ Open Inference Protocol

    v2 = Blueprint("v2", __name__, url_prefix="/v2")

    @v2.post("/models/<name>/infer", endpoint="v2_infer")
    @v2.post("/models/<name>/versions/<version>/infer", endpoint="v2_infer")
    @admitted
    def v2_infer(name: str, version: str | None = None):
        return reply_response(views.v2_infer(name, version, request.headers.get("Content-Type"),
                                             request.headers.get(protocols.BINARY_HEADER),
                                             body()))

    @v2.get("/health/live", endpoint="v2_live")
    def live():
        return json_response({"live": True})

    @v2.get("/health/ready", endpoint="v2_ready")
    def ready():
        if holder.ready:
            return json_response({"ready": True})
        return json_response({"ready": False, "error": "model session not created yet"}, 503,
                             {"Retry-After": RETRY_AFTER_S})

    @v2.get("", endpoint="v2_server")
    def server_metadata():
        return json_response({"name": "onnxdeploy", "version": __version__,
                              "extensions": ["binary_tensor_data"]})

    @v2.get("/models/<name>", endpoint="v2_model")
    @v2.get("/models/<name>/versions/<version>", endpoint="v2_model")
    def model_metadata(name: str, version: str | None = None):
        protocols.check_name(name, info)
        protocols.check_version(version)
        return json_response(protocols.model_metadata(info, max_chars=max_chars))

    @v2.get("/models/<name>/ready", endpoint="v2_model_ready")
    @v2.get("/models/<name>/versions/<version>/ready", endpoint="v2_model_ready")
    def model_ready(name: str, version: str | None = None):
        protocols.check_name(name, info)
        protocols.check_version(version)
        status = 200 if holder.ready else 503
        return json_response({"name": info.name, "ready": holder.ready}, status)

    # ------------------------------------------------------------------ operations

    ops = Blueprint("ops", __name__)

    @ops.get("/metrics", endpoint="metrics")
    def metrics_view():
        text, content_type = metrics.render()
        return Response(text, content_type=content_type)

    @ops.get("/openapi.json", endpoint="openapi")
    def openapi():
        return json_response(openapi_spec(info, max_batch=max_batch, max_chars=max_chars))

    for blueprint in (simple, v2, ops):
        app.register_blueprint(blueprint)
    docs = docs_blueprint()
    if docs is not None:
        app.register_blueprint(docs)

    if cfg["LOAD_ON_START"]:
        holder.load()
    return app
