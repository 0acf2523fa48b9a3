"""The Flask application factory: routes, auth, limits, overload shedding, JSON errors.

Views are short: check, run, answer. Every refusal leaves as an ``ApiError`` (or a werkzeug
HTTPException for routing) and one handler turns it into ``{"error": "..."}`` with its status;
anything unexpected is logged with its traceback and answered with a bare 500 message.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Any

from .. import __version__
from ..errors import DataError
from ..runtime import default_threads
from . import protocols
from .admission import shedding
from .batching import Executor
from .metrics import Metrics
from .model import SessionHolder, read_model_info
from .openapi import openapi_spec
from .validation import ApiError, check_feeds

log = logging.getLogger("onnxdeploy.serve")

DEFAULTS: dict[str, Any] = {
    "MODEL_PATH": None,
    "MODEL_NAME": None,
    "ORT_THREADS": None,
    "MAX_INFLIGHT": 64,
    "MAX_BATCH": 1024,
    "MAX_BODY_BYTES": 32 * 2**20,
    "MAX_BATCH_SIZE": 0,
    "BATCH_TIMEOUT_MS": 2.0,
    "API_KEY": None,
    "LOAD_ON_START": False,
}
#: endpoints that run the model: counted against the in-flight bound
INFERENCE_ENDPOINTS = frozenset({"predict", "v2_infer"})
#: liveness must answer even without credentials, so orchestrators can probe it
PUBLIC_ENDPOINTS = frozenset({"v2_live"})
RETRY_AFTER_S = "1"


def create_app(config: dict | None = None):
    """Build the serving app.

    Config keys (defaults in ``DEFAULTS``): ``MODEL_PATH`` (required, the .onnx file),
    ``MODEL_NAME`` (default: the file's stem), ``ORT_THREADS`` (intra-op threads per process,
    default: the CPUs this process may use), ``MAX_INFLIGHT`` (inference requests handled at
    once per process; more get 503 + Retry-After), ``MAX_BATCH`` (rows per request),
    ``MAX_BODY_BYTES`` (413 above it, from Content-Length before reading), ``MAX_BATCH_SIZE``
    (dynamic batching: rows per merged run, 0 = off), ``BATCH_TIMEOUT_MS`` (longest wait for a
    batch to fill), ``API_KEY`` (require ``Authorization: Bearer <key>`` except on liveness),
    ``LOAD_ON_START`` (create the session now rather than on first use or in gunicorn's
    ``post_worker_init``).
    """
    from flask import Flask, Response, g, request
    from werkzeug.exceptions import HTTPException

    cfg = {**DEFAULTS, **(config or {})}
    if not cfg["MODEL_PATH"]:
        raise ValueError("create_app needs config['MODEL_PATH']")
    info = read_model_info(cfg["MODEL_PATH"], cfg["MODEL_NAME"])
    holder = SessionHolder(info, ort_threads=int(cfg["ORT_THREADS"] or default_threads()))
    metrics = Metrics(batching=int(cfg["MAX_BATCH_SIZE"]) > 1)
    executor = Executor(holder, metrics, max_batch_size=int(cfg["MAX_BATCH_SIZE"]),
                        timeout_ms=float(cfg["BATCH_TIMEOUT_MS"]))
    inflight = threading.BoundedSemaphore(int(cfg["MAX_INFLIGHT"]))
    max_body = int(cfg["MAX_BODY_BYTES"])
    api_key = cfg["API_KEY"].encode() if cfg["API_KEY"] else None

    app = Flask("onnxdeploy.serve")
    app.config.update(cfg)
    # Werkzeug enforces this while reading bodies without a Content-Length (chunked).
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.extensions["onnxdeploy"] = holder
    app.extensions["onnxdeploy.executor"] = executor

    def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
        return Response(protocols.dumps(obj), status=status, headers=headers,
                        mimetype="application/json")

    @app.before_request
    def _start():
        g.t0 = time.perf_counter()
        if api_key is not None and request.endpoint not in PUBLIC_ENDPOINTS:
            given = request.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key):
                raise ApiError(401, "missing or wrong API key; expected 'Authorization: Bearer <key>'",
                               {"WWW-Authenticate": "Bearer"})
        length = request.content_length
        if length is not None and length > max_body:
            raise ApiError(413, f"request body is {length} bytes; expected at most {max_body} bytes")

    @app.after_request
    def _record(response):
        endpoint = request.endpoint or "unmatched"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        t0 = g.get("t0")
        if t0 is not None:
            metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - t0)
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return json_response({"error": exc.message}, exc.status, exc.headers)

    @app.errorhandler(DataError)
    def _data_error(exc: DataError):
        return json_response({"error": str(exc)}, 400)

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
        return json_response({"error": "internal server error (details are in the server log)"}, 500)

    def content_json() -> None:
        mime = request.mimetype
        if mime and mime != "application/json" and not mime.endswith("+json"):
            raise ApiError(415, f"Content-Type {mime!r}; expected application/json")

    def run_model(feeds) -> list:
        rows = check_feeds(info.signature, feeds, max_batch=int(cfg["MAX_BATCH"]))
        return executor.infer(feeds, rows)

    def admitted(view):
        # Shed load at once rather than queueing without bound; health routes are not counted.
        # Under gunicorn the worker bounds requests at dispatch and marks the threads that must
        # refuse (serve.worker); the semaphore bounds them under any other server.
        def wrapper(*args, **kwargs):
            if shedding() or not inflight.acquire(blocking=False):
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

    @app.post("/predict", endpoint="predict")
    @admitted
    def predict():
        content_json()
        feeds = protocols.parse_predict(protocols.loads(request.get_data(cache=False)), info)
        return json_response(protocols.predict_response(info, run_model(feeds)))

    @app.post("/v2/models/<name>/infer", endpoint="v2_infer")
    @app.post("/v2/models/<name>/versions/<version>/infer", endpoint="v2_infer")
    @admitted
    def v2_infer(name: str, version: str | None = None):
        protocols.check_name(name, info)
        protocols.check_version(version)
        header_length = request.headers.get(protocols.BINARY_HEADER)
        if header_length is None:
            content_json()
        payload, binary = protocols.split_binary(request.get_data(cache=False), header_length)
        feeds, options = protocols.parse_v2(payload, binary, info)
        body, headers = protocols.v2_response(info, run_model(feeds), options)
        mimetype = "application/octet-stream" if headers else "application/json"
        return Response(body, headers=headers, mimetype=mimetype)

    @app.get("/v2/health/live", endpoint="v2_live")
    def live():
        return json_response({"live": True})

    @app.get("/v2/health/ready", endpoint="v2_ready")
    def ready():
        if holder.ready:
            return json_response({"ready": True})
        return json_response({"ready": False, "error": "model session not created yet"}, 503,
                             {"Retry-After": RETRY_AFTER_S})

    @app.get("/v2", endpoint="v2_server")
    def server_metadata():
        return json_response({"name": "onnxdeploy", "version": __version__,
                              "extensions": ["binary_tensor_data"]})

    @app.get("/v2/models/<name>", endpoint="v2_model")
    @app.get("/v2/models/<name>/versions/<version>", endpoint="v2_model")
    def model_metadata(name: str, version: str | None = None):
        protocols.check_name(name, info)
        protocols.check_version(version)
        return json_response(protocols.model_metadata(info))

    @app.get("/v2/models/<name>/ready", endpoint="v2_model_ready")
    @app.get("/v2/models/<name>/versions/<version>/ready", endpoint="v2_model_ready")
    def model_ready(name: str, version: str | None = None):
        protocols.check_name(name, info)
        protocols.check_version(version)
        status = 200 if holder.ready else 503
        return json_response({"name": info.name, "ready": holder.ready}, status)

    @app.get("/metrics", endpoint="metrics")
    def metrics_view():
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    @app.get("/openapi.json", endpoint="openapi")
    def openapi():
        return json_response(openapi_spec(info))

    if cfg["LOAD_ON_START"]:
        holder.load()
    return app
