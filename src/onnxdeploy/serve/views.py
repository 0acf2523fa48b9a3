"""The views: plain functions of a ``Request`` that return a ``Reply`` (status, headers, bytes).

Each answers one route of ``serve.routes.ROUTES`` (``Route.view`` names the method) and knows
nothing about the server that parsed the request: the API key, admission, the error answer and
the metrics are ``serve.service``'s, around every view alike. A view refuses by raising an
``ApiError`` (or a ``DataError`` about the input); ``error_reply`` turns either into the JSON
answer.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError, TextTooLongError
from . import protocols, text
from .batching import Executor
from .docs import PAGE
from .model import ModelInfo, SessionHolder
from .openapi import openapi_spec
from .routes import Request
from .text import Texts
from .validation import ApiError, check_feeds

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
RETRY_AFTER_S = "1"
_BINARY_HEADER = protocols.BINARY_HEADER.lower()


class Run(NamedTuple):
    """What an inference view needs run: it ``yield``s one and is sent the outputs (or has the
    run's error thrown in). The thread that parsed need not be the one that waits for the run:
    ``drive`` runs it in the calling thread, the front's event loop hands it to the executor's
    runner and goes on reading and parsing other requests meanwhile."""

    feeds: dict
    rows: int
    padded: bool = False  # a text request's tokens (see ``Executor.infer``)
    ticket: Any = None  # the request's ``Executor.expect`` ticket (set by the request path)


#: an inference view: yields ``Run``s, is sent their outputs, returns its ``Reply``
Steps = Generator[Run, Any, Any]


def drive(steps: Steps, executor: Executor, spent: Callable[[float], None] | None = None):
    """Run a view's steps to the end in this thread: each ``Run`` through ``executor.infer``
    (an error of the run is raised where the view waits for it). Returns what it returned.
    ``spent``, if given, is called at the end with this thread's CPU time outside the runs."""
    cpu = time.thread_time if spent is not None else _no_clock
    t0, outside = cpu(), 0.0
    try:
        need = next(steps)
        while True:
            outside += cpu() - t0
            try:
                outputs = executor.infer(need.feeds, need.rows, padded=need.padded,
                                         ticket=need.ticket)
            except Exception as exc:  # raised at the view's yield, as a direct call would
                t0 = cpu()
                need = steps.throw(exc)
            else:
                t0 = cpu()
                need = steps.send(outputs)
    except StopIteration as stop:
        if spent is not None:
            spent(outside + cpu() - t0)
        return stop.value


def _no_clock() -> float:
    return 0.0


class Reply(NamedTuple):
    """An answer: status, headers (Content-Type first), body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def json_reply(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    """``obj`` as JSON with its status and extra headers."""
    out = [("Content-Type", JSON_TYPE)]
    if headers:
        out.extend(headers.items())
    return Reply(status, out, protocols.dumps(obj))


def error_parts(exc: Exception) -> tuple[int, str, dict[str, str]]:
    """Status, one-line message and headers of what a view raised (``ApiError``, ``DataError``,
    anything else: 500); every protocol answers with these."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.headers
    if isinstance(exc, DataError):
        return 413 if isinstance(exc, TextTooLongError) else 400, str(exc), {}
    return 500, "internal server error (details are in the server log)", {}


def error_reply(exc: Exception) -> Reply:
    """The JSON answer to what a view raised (``ApiError``, ``DataError``, anything else: 500)."""
    status, message, headers = error_parts(exc)
    return json_reply({"error": message}, status, headers)


def mimetype(content_type: str | None) -> str:
    """``application/json`` of ``Application/JSON; charset=utf-8`` (as werkzeug reads it)."""
    return (content_type or "").partition(";")[0].strip().lower()


def check_json(content_type: str | None) -> None:
    """A 415 unless the body is declared JSON (or not declared at all)."""
    mime = mimetype(content_type)
    if mime and mime != JSON_TYPE and not mime.endswith("+json"):
        raise ApiError(415, f"Content-Type {mime!r}; expected application/json")


def not_found_error(request: Request) -> ApiError:
    return ApiError(404, f"no such endpoint {request.method} {request.path}; "
                         "see GET /openapi.json")


class Views:
    """The views of one served model."""

    def __init__(self, info: ModelInfo, holder: SessionHolder, executor: Executor, metrics, *,
                 max_batch: int, max_chars: int, docs_root: Path | None = None,
                 capacity: Callable[[], tuple[int, int] | None] | None = None):
        self.info, self.holder, self.executor, self.metrics = info, holder, executor, metrics
        self.max_batch, self.max_chars = max_batch, max_chars
        self.docs_root = docs_root.resolve() if docs_root is not None else None
        self.json_values = protocols.json_budget(info, max_batch)
        self.json_numbers = protocols.json_number_dtype(info)  # large bodies: numbers to numpy
        self.capacity = capacity or (lambda: None)
        self._openapi: bytes | None = None

    # ------------------------------------------------------------------ inference

    def predict(self, request: Request) -> Steps:
        """``POST /predict`` (an inference view: a generator, see ``Run``)."""
        check_json(request.header("content-type"))
        payload = protocols.loads(request.body, self.json_values, self.json_numbers)
        feeds = protocols.parse_predict(payload, self.info, max_batch=self.max_batch,
                                        max_chars=self.max_chars)
        del payload  # the nested lists can be several times the body: free them before running
        outputs = yield from self.run_steps(feeds)
        return json_reply(protocols.predict_response(self.info, outputs))

    def v2_infer(self, request: Request, name: str, version: str | None = None) -> Steps:
        """``POST /v2/models/{name}[/versions/{version}]/infer``, JSON or binary extension (an
        inference view: a generator, see ``Run``)."""
        protocols.check_name(name, self.info)
        protocols.check_version(version)
        binary_length = request.header(_BINARY_HEADER)
        if binary_length is None:
            check_json(request.header("content-type"))
        payload, binary = protocols.split_binary(request.body, binary_length, self.json_values,
                                                 self.json_numbers)
        feeds, options = protocols.parse_v2(payload, binary, self.info, max_batch=self.max_batch,
                                            max_chars=self.max_chars)
        del payload
        outputs = yield from self.run_steps(feeds)
        out, headers = protocols.v2_response(self.info, outputs, options)
        kind = BINARY_TYPE if headers else JSON_TYPE
        return Reply(200, [("Content-Type", kind), *headers.items()], out)

    def run_steps(self, feeds) -> Steps:
        """Checked feeds as the ``Run`` to make, then the checked outputs it gave."""
        if isinstance(feeds, Texts):  # tokenized here, in the thread that parses
            tokens = text.encode(self.holder.encoder(), feeds)
            outputs = yield Run(tokens, len(feeds.items), True)
        else:
            rows = check_feeds(self.info.signature, feeds, max_batch=self.max_batch)
            outputs = yield Run(feeds, rows, False)
        return self.check_outputs(outputs)

    def run(self, feeds) -> list:
        """The checked outputs of these feeds, run in this thread (through the executor)."""
        return drive(self.run_steps(feeds), self.executor)

    def check_outputs(self, outputs: list) -> list:
        """The outputs, unless one is not finite: NaN or infinity never becomes an answer.

        A finite input can still overflow inside the model (3e38 through a float32 layer): the
        logits come back NaN/inf, which JSON would carry as ``null`` and ``argmax`` would turn
        into "prediction 0". That is a 500 naming the output (the model could not compute an
        answer; the input was valid), counted under its status and in
        ``onnxdeploy_nonfinite_outputs_total{output}``.
        """
        for name, out in zip(self.info.output_names, outputs):
            if isinstance(out, np.ndarray) and out.dtype.kind in "fc" and out.size \
                    and not np.isfinite(out).all():
                self.metrics.nonfinite.labels(name).inc()
                raise ApiError(500, f"the model's output '{name}' is not finite (NaN or "
                                    "infinity) for this input, so no answer was made; expected "
                                    "inputs within the range the model was trained on")
        return outputs

    # ------------------------------------------------------------------ Open Inference Protocol

    def live(self, request: Request) -> Reply:
        return json_reply({"live": True})

    def ready(self, request: Request) -> Reply:
        """200 while this worker's session is ready; under granian, with the workers whose
        heartbeat is fresh (``Onnxdeploy-Workers: live/expected``), 503 when none is."""
        if not self.holder.ready:
            return json_reply({"ready": False, "error": "model session not created yet"}, 503,
                              {"Retry-After": RETRY_AFTER_S})
        capacity = self.capacity()
        if capacity is None:
            return json_reply({"ready": True})
        live, expected = capacity
        body = {"ready": live > 0, "workers": {"live": live, "expected": expected}}
        headers = {"Onnxdeploy-Workers": f"{live}/{expected}"}
        if live == 0:
            return json_reply({**body, "error": "no worker answers its heartbeat"}, 503,
                              {**headers, "Retry-After": RETRY_AFTER_S})
        return json_reply(body, 200, headers)

    def server_metadata(self, request: Request) -> Reply:
        from .. import __version__

        return json_reply({"name": "onnxdeploy", "version": __version__,
                           "extensions": ["binary_tensor_data"]})

    def model_metadata(self, request: Request, name: str, version: str | None = None) -> Reply:
        protocols.check_name(name, self.info)
        protocols.check_version(version)
        return json_reply(protocols.model_metadata(self.info, max_chars=self.max_chars))

    def model_ready(self, request: Request, name: str, version: str | None = None) -> Reply:
        protocols.check_name(name, self.info)
        protocols.check_version(version)
        return json_reply({"name": self.info.name, "ready": self.holder.ready},
                          200 if self.holder.ready else 503)

    # ------------------------------------------------------------------ operations

    def metrics_text(self, request: Request) -> Reply:
        body, content_type = self.metrics.render()
        capacity = self.capacity()
        if capacity is not None:
            body += ("# HELP onnxdeploy_workers_live Worker processes whose heartbeat is fresh.\n"
                     "# TYPE onnxdeploy_workers_live gauge\n"
                     f"onnxdeploy_workers_live {capacity[0]}\n"
                     "# HELP onnxdeploy_workers_expected Worker processes the server runs.\n"
                     "# TYPE onnxdeploy_workers_expected gauge\n"
                     f"onnxdeploy_workers_expected {capacity[1]}\n").encode()
        return Reply(200, [("Content-Type", content_type)], body)

    def openapi(self, request: Request) -> Reply:
        if self._openapi is None:  # the model does not change while it is served
            self._openapi = protocols.dumps(openapi_spec(self.info, max_batch=self.max_batch,
                                                         max_chars=self.max_chars))
        return Reply(200, [("Content-Type", JSON_TYPE)], self._openapi)

    def docs_page(self, request: Request) -> Reply:
        return Reply(200, [("Content-Type", "text/html; charset=utf-8")], PAGE.encode())

    def docs_static(self, request: Request, filename: str) -> Reply:
        """A Swagger UI asset from the installed package (never a file outside it)."""
        root = self.docs_root
        parts = filename.split("/")
        if root is None or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
            raise not_found_error(request)
        path = root.joinpath(*parts).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise not_found_error(request)
        stat = path.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        kind = mimetypes.guess_type(path.name)[0] or BINARY_TYPE
        if kind.startswith("text/"):
            kind += "; charset=utf-8"
        headers = [("Content-Type", kind), ("Cache-Control", "no-cache"), ("ETag", etag)]
        if request.header("if-none-match") == etag:
            return Reply(304, headers[1:], b"")
        return Reply(200, headers, path.read_bytes())

    # ------------------------------------------------------------------ the router's own answers

    def not_found(self, request: Request) -> Reply:
        raise not_found_error(request)

    def not_allowed(self, request: Request, allowed: tuple[str, ...]) -> Reply:
        expected = ", ".join(m for m in allowed if m not in ("HEAD", "OPTIONS"))
        raise ApiError(405, f"method {request.method} not allowed on {request.path}; expected "
                            f"{expected}", {"Allow": ", ".join(allowed)})

    def options(self, request: Request, allowed: tuple[str, ...]) -> Reply:
        return Reply(200, [("Content-Type", "text/plain; charset=utf-8"),
                           ("Allow", ", ".join(allowed))], b"")
