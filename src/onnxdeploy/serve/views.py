"""The inference views, as plain functions of a request's headers and body.

``/predict`` and the v2 ``infer`` route are written once, here, and reached two ways:

- **through Flask**: the app's routes (``serve.app``) call ``Inference.predict`` and
  ``Inference.v2_infer``; Flask's hooks check the API key and count the request, and its error
  handlers answer what they raise. This is the path under ``--dev`` and the test client.
- **directly from the granian front** (``Inference.direct``): the front has already parsed the
  request, capped and buffered the body and admitted it, so what Flask would add per request
  (a request context, URL matching, hooks, a ``Response`` object) is pure cost. Measured in
  process on digits-cnn: ~360 us a request through Flask, ~160 us here, the model included
  (docs/serve.md). ``direct`` does what the Flask path does around the view, in the same order:
  API key, admission gauge, the view, the error answer, the request counter and timer.

Everything a view raises is an ``ApiError`` or a ``DataError``; ``error_reply`` turns either into
the JSON answer both paths give.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import DataError, TextTooLongError
from . import protocols, text
from .batching import Executor
from .model import ModelInfo, SessionHolder
from .text import Texts
from .validation import ApiError, check_feeds

log = logging.getLogger("onnxdeploy.serve")

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
#: the request headers ``direct`` reads, lower-case
HEADERS = ("authorization", "content-type", protocols.BINARY_HEADER.lower())
#: the two v2 infer routes as Flask declares them (``<name>`` matches one path segment)
_V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class Reply(NamedTuple):
    """An answer: status, headers (Content-Type first), body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def json_reply(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    out = [("Content-Type", JSON_TYPE)]
    if headers:
        out.extend(headers.items())
    return Reply(status, out, protocols.dumps(obj))


def error_reply(exc: Exception) -> Reply:
    """The JSON answer to what a view raised (``ApiError``, ``DataError``, anything else: 500)."""
    if isinstance(exc, ApiError):
        return json_reply({"error": exc.message}, exc.status, exc.headers)
    if isinstance(exc, DataError):
        return json_reply({"error": str(exc)}, 413 if isinstance(exc, TextTooLongError) else 400)
    return json_reply({"error": "internal server error (details are in the server log)"}, 500)


def mimetype(content_type: str | None) -> str:
    """``application/json`` of ``Application/JSON; charset=utf-8`` (as werkzeug reads it)."""
    return (content_type or "").partition(";")[0].strip().lower()


def check_json(content_type: str | None) -> None:
    mime = mimetype(content_type)
    if mime and mime != JSON_TYPE and not mime.endswith("+json"):
        raise ApiError(415, f"Content-Type {mime!r}; expected application/json")


class Inference:
    """The inference views of one served model, and the API key check they share."""

    def __init__(self, info: ModelInfo, holder: SessionHolder, executor: Executor, metrics, *,
                 max_batch: int, max_chars: int, api_key: str | None):
        self.info, self.holder, self.executor, self.metrics = info, holder, executor, metrics
        self.max_batch, self.max_chars = max_batch, max_chars
        self.api_key = api_key.encode() if api_key else None
        self._counters: dict[tuple[str, int], Any] = {}  # labelled children, made once
        self._timers = {name: metrics.request_seconds.labels(name)
                        for name in ("predict", "v2_infer")}

    # ------------------------------------------------------------------ checks

    def check_key(self, authorization: str | None) -> None:
        """401 unless ``Authorization: Bearer <key>`` carries the key (when one is set)."""
        if self.api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self.api_key):
            raise ApiError(401, "missing or wrong API key; expected 'Authorization: Bearer <key>'",
                           {"WWW-Authenticate": "Bearer"})

    # ------------------------------------------------------------------ the views

    def predict(self, content_type: str | None, body: bytes) -> Reply:
        """``POST /predict``."""
        check_json(content_type)
        payload = protocols.loads(body)
        feeds = protocols.parse_predict(payload, self.info, max_batch=self.max_batch,
                                        max_chars=self.max_chars)
        del payload  # the nested lists can be several times the body: free them before running
        return json_reply(protocols.predict_response(self.info, self.run(feeds)))

    def v2_infer(self, name: str, version: str | None, content_type: str | None,
                 binary_length: str | None, body: bytes) -> Reply:
        """``POST /v2/models/{name}[/versions/{version}]/infer``, JSON or binary extension."""
        protocols.check_name(name, self.info)
        protocols.check_version(version)
        if binary_length is None:
            check_json(content_type)
        payload, binary = protocols.split_binary(body, binary_length)
        feeds, options = protocols.parse_v2(payload, binary, self.info, max_batch=self.max_batch,
                                            max_chars=self.max_chars)
        del payload
        out, headers = protocols.v2_response(self.info, self.run(feeds), options)
        kind = BINARY_TYPE if headers else JSON_TYPE
        return Reply(200, [("Content-Type", kind), *headers.items()], out)

    def run(self, feeds) -> list:
        if isinstance(feeds, Texts):  # tokenized here, in the request's thread
            tokens = text.encode(self.holder.encoder(), feeds)
            return self.executor.infer(tokens, len(feeds.items), padded=True)
        rows = check_feeds(self.info.signature, feeds, max_batch=self.max_batch)
        return self.executor.infer(feeds, rows)

    # ------------------------------------------------------------------ the front's path

    def route(self, endpoint: str, path: str) -> tuple[str | None, ...] | None:
        """The view arguments of an inference path: ``()`` for ``/predict``, ``(name, version)``
        for a v2 infer route; None for a path only Flask can answer (its 404)."""
        if endpoint == "predict":
            return ()
        match = _V2_INFER.fullmatch(path)
        return None if match is None else match.groups()

    def direct(self, endpoint: str, args: tuple[str | None, ...], path: str,
               header: Callable[[str], str | None], body: bytes) -> Reply:
        """Answer an admitted inference request without Flask.

        ``args`` from ``route``; ``header(name)`` reads a request header by its lower-case name
        (one of ``HEADERS``).
        """
        t0 = time.perf_counter()
        gauge = self.metrics.inflight
        gauge.inc()
        try:
            self.check_key(header("authorization"))
            if not args:
                reply = self.predict(header("content-type"), body)
            else:
                reply = self.v2_infer(args[0], args[1], header("content-type"), header(HEADERS[2]),
                                      body)
        except (ApiError, DataError) as exc:
            reply = error_reply(exc)
        except Exception as exc:  # a bug: the traceback to the log, a bare 500 to the client
            log.exception("unhandled error in POST %s", path)
            reply = error_reply(exc)
        finally:
            gauge.dec()
        key = (endpoint, reply.status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(endpoint,
                                                                         str(reply.status))
        counter.inc()
        self._timers[endpoint].observe(time.perf_counter() - t0)
        return reply
