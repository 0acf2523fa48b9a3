"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``, KServe v2 / Triton).

``serve --grpc-port PORT`` runs this service in every worker process beside the HTTP front, on
one port shared with ``SO_REUSEPORT`` (gRPC's default on Linux), so gRPC uses every worker the
HTTP side uses. It is grpcio's asyncio server, in the worker's own event loop (the front's):
its RPCs are coroutines beside the HTTP requests, and no thread pool of its own stands between
grpcio and the request path (grpcio's thread-pool server cost ~28 thread switches a request
here, this ~6: docs/serve.md). A request takes the same path as a REST one
(``serve.service``, ``serve.front``):

- the API key (the ``authorization`` metadata, ``Bearer <key>``) when the RPC starts, before its
  message is read: without it, a handler that never reads the request answers UNAUTHENTICATED;
- **admission** (``Service.admission``, the counter the HTTP front takes: one
  ``--max-inflight`` per worker for both protocols); a full worker answers UNAVAILABLE at once,
  before the message is read;
- **the message, read by the handler** (ModelInfer is registered request-streaming, so gRPC
  does not read it before the handler runs; the client's unary call is the same on the wire):
  gRPC tells no message size before it has read the whole message, so at most
  ``read_slots(...)`` messages are read at once per worker (the worker's body budget over
  gRPC's receive limit, at least one); an RPC that finds them taken waits up to
  ``READ_WAIT_S`` and is then UNAVAILABLE unread. A read message is charged to the worker's
  body budget (``Service.buffer``, shared with the HTTP front) until it is answered: past the
  budget, UNAVAILABLE. A sender too slow to finish is cut by the connection age
  (``DEFAULT_CONNECTION_AGE_S`` plus its grace);
- ``Service.rpc_steps``: the API key again, the in-flight gauge, the error turned into the REST
  status and its one-line message, the request counter and histogram (``protocol="grpc"``,
  the REST endpoint names: ``v2_infer``, ``v2_live``...);
- the request is turned into the REST v2 payload plus binary part (typed ``contents`` are
  packed into bytes as raw ones are) and parsed by ``protocols.parse_v2``, checked by
  ``validation``, and its run (``Views.run_steps``) goes where the front sends every inference
  request (``Front.run_work``: parsed in the loop and merged by the one ``Executor`` with
  batching, so one dynamic batch can hold REST and gRPC requests together; run in the loop for
  a quick model; else the work lane).

Request bytes are parsed in the handler, not by gRPC's deserializer, so bytes that are not a
``ModelInferRequest`` are INVALID_ARGUMENT (gRPC's own failure would be INTERNAL) and a message
over the body cap is RESOURCE_EXHAUSTED with REST's message, counted like any refusal.

Status codes (DESIGN.md, "Contracts settled for this round"), from the REST status of the same
answer: 400 -> INVALID_ARGUMENT, 401 -> UNAUTHENTICATED, 404 -> NOT_FOUND, 413 ->
RESOURCE_EXHAUSTED, 503 -> UNAVAILABLE (shedding, draining, not ready; trailing metadata
``retry-after: 1``), 500 -> INTERNAL (a bug). The message is the one line REST gives.

Outputs come back as ``raw_output_contents`` (what Triton sends and tritonclient reads) unless
the request asks for typed contents: request parameter ``binary_data_output: false``, or an
output's ``binary_data: false``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from ..wire.proto import grpc_service_pb2 as pb
from . import protocols
from .validation import ApiError, cast
from .views import error_parts

log = logging.getLogger("onnxdeploy.serve")

SERVICE_NAME = "inference.GRPCInferenceService"
RETRY_AFTER = (("retry-after", "1"),)
#: gRPC's own cap on a received message, over the body cap: a message between the two reaches
#: the handler and gets REST's 413 message; one past this is refused by gRPC itself (uncounted)
GRPC_LIMIT_FACTOR = 2
GRPC_LIMIT_SLACK = 1 << 20
#: connections are closed (GOAWAY, the client reconnects) after this long, so the kernel's
#: SO_REUSEPORT hash spreads long-lived channels over the workers again and again
DEFAULT_CONNECTION_AGE_S = 10.0
AGE_ENV = "ONNXDEPLOY_GRPC_CONNECTION_AGE_S"
#: how long a ModelInfer waits for a read slot before it is refused unread (UNAVAILABLE)
READ_WAIT_S = 1.0


def grpc_limit(max_body: int) -> int:
    """gRPC's own cap on a received message (``grpc.max_receive_message_length``)."""
    return max_body * GRPC_LIMIT_FACTOR + GRPC_LIMIT_SLACK


def read_slots(budget: int, max_body: int) -> int:
    """How many gRPC messages one worker reads at once: as many messages at gRPC's receive
    limit as its body budget holds, at least one."""
    return max(1, budget // grpc_limit(max_body))

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
         403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
         408: grpc.StatusCode.DEADLINE_EXCEEDED, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
         415: grpc.StatusCode.INVALID_ARGUMENT, 500: grpc.StatusCode.INTERNAL,
         503: grpc.StatusCode.UNAVAILABLE}

#: datatype -> (the typed contents field, the numpy dtype that field holds)
TYPED = {
    "BOOL": ("bool_contents", np.dtype(bool)),
    "INT8": ("int_contents", np.dtype(np.int32)), "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", None),
}
#: numpy dtype -> the typed contents field an output is written to
_OUT_FIELD = {np.dtype(bool): "bool_contents", np.dtype(np.int8): "int_contents",
              np.dtype(np.int16): "int_contents", np.dtype(np.int32): "int_contents",
              np.dtype(np.int64): "int64_contents", np.dtype(np.uint8): "uint_contents",
              np.dtype(np.uint16): "uint_contents", np.dtype(np.uint32): "uint_contents",
              np.dtype(np.uint64): "uint64_contents", np.dtype(np.float32): "fp32_contents",
              np.dtype(np.float64): "fp64_contents"}


def _param(p) -> Any:
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def _params(mapping) -> dict[str, Any]:
    return {k: _param(v) for k, v in mapping.items()}


def _typed_bytes(tensor) -> bytes | None:
    """An input's typed ``contents`` as the bytes the binary extension would carry (None when it
    has none, or its datatype is one ``parse_v2`` refuses anyway)."""
    fields = tensor.contents.ListFields()
    if not fields:
        return None
    entry = TYPED.get(tensor.datatype)
    if entry is None:
        raise ApiError(400, f"input '{tensor.name}': datatype {tensor.datatype!r} has no typed "
                            "contents; expected raw_input_contents")
    field, held = entry
    given = [f.name for f, _ in fields]
    if given != [field]:
        raise ApiError(400, f"input '{tensor.name}': datatype {tensor.datatype} takes {field}; "
                            f"got {', '.join(given)}")
    values = getattr(tensor.contents, field)
    if held is None:  # BYTES: each element a 4-byte little-endian length and its bytes
        return b"".join(len(v).to_bytes(4, "little") + v for v in values)
    want = protocols.V2_TO_NUMPY[tensor.datatype]
    arr = np.array(values, dtype=held)
    if want != held:
        arr = cast(tensor.name, want, arr)  # range-checked: 300 is no INT8
    return arr.astype(want.newbyteorder("<"), copy=False).tobytes()


def request_payload(req) -> tuple[dict, bytes]:
    """A ``ModelInferRequest`` as the REST v2 payload and binary part ``parse_v2`` reads."""
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise ApiError(400, f"raw_input_contents has {len(raw)} entries but there are "
                            f"{len(req.inputs)} inputs; expected one entry per input, in order")
    inputs, chunks = [], []
    for i, tensor in enumerate(req.inputs):
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                "shape": list(tensor.shape)}
        if raw:
            if tensor.HasField("contents"):
                raise ApiError(400, f"input '{tensor.name}': both contents and "
                                    "raw_input_contents; expected one of them for every input")
            chunk = raw[i]
        else:
            chunk = _typed_bytes(tensor)
        if chunk is not None:
            item["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        inputs.append(item)
    params = _params(req.parameters)
    payload: dict[str, Any] = {
        "id": req.id, "inputs": inputs,
        "parameters": {"binary_data_output": params.get("binary_data_output", True) is not False},
    }
    if len(req.outputs):
        payload["outputs"] = [{"name": o.name, "parameters": _params(o.parameters)}
                              for o in req.outputs]
    return payload, b"".join(chunks)


def infer_response(info, outputs: list, options: dict) -> bytes:
    """The ``ModelInferResponse`` of these outputs, raw or typed as ``options`` say."""
    resp = pb.ModelInferResponse(model_name=info.name, model_version=protocols.VERSION,
                                 id=options["id"])
    by_name = dict(zip(info.output_names, outputs))
    raw_all = [binary for _, binary in options["outputs"]]
    raw_mode = all(raw_all)  # raw_output_contents is one entry per output, or none at all
    for name, _ in options["outputs"]:
        out = by_name[name]
        tensor = resp.outputs.add(name=name)
        if protocols._is_sequence(out):  # as REST: each row's JSON, one BYTES element a row
            rows = [protocols.dumps(r) for r in protocols._plain_sequence(out)]
            tensor.datatype = "BYTES"
            tensor.shape.append(len(rows))
            tensor.parameters["content"].string_param = "json"
            if raw_mode:
                resp.raw_output_contents.append(
                    b"".join(len(r).to_bytes(4, "little") + r for r in rows))
            else:
                tensor.contents.bytes_contents.extend(rows)
            continue
        arr = protocols._contiguous(np.asarray(out))
        tensor.datatype = protocols.v2_datatype(arr.dtype)
        tensor.shape.extend(arr.shape)
        if raw_mode:
            resp.raw_output_contents.append(
                arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        else:
            field = _OUT_FIELD.get(arr.dtype)
            if field is None:
                raise ApiError(400, f"output '{name}': {arr.dtype} has no typed contents; "
                                    "expected a request for raw output contents")
            getattr(tensor.contents, field).extend(arr.reshape(-1).tolist())
    return resp.SerializeToString()


class InferenceServicer:
    """The six RPCs of one worker, coroutines in the worker's event loop (the front's)."""

    def __init__(self, front):
        self.front = front
        self.service = service = front.service
        self.info = service.info
        self.views = service.views
        self.admission = service.admission
        self.max_body = service.max_body
        self.buffer = service.buffer
        self.slots = read_slots(self.buffer.limit, self.max_body)
        self.reading = asyncio.Semaphore(self.slots)
        self.draining = False
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def handlers(self) -> grpc.GenericRpcHandler:
        rpcs = {"ServerLive": self.server_live, "ServerReady": self.server_ready,
                "ModelReady": self.model_ready, "ServerMetadata": self.server_metadata,
                "ModelMetadata": self.model_metadata}
        handlers = {f"/{SERVICE_NAME}/{name}": grpc.unary_unary_rpc_method_handler(
            self._tracked(fn)) for name, fn in rpcs.items()}
        # ModelInfer reads its message itself (see the module docstring)
        handlers[f"/{SERVICE_NAME}/ModelInfer"] = grpc.stream_unary_rpc_method_handler(
            self._tracked(self.model_infer))
        endpoints = {f"/{SERVICE_NAME}/{name}": endpoint for name, endpoint in (
            ("ServerReady", "v2_ready"), ("ModelReady", "v2_model_ready"),
            ("ServerMetadata", "v2_server"), ("ModelMetadata", "v2_model"),
            ("ModelInfer", "v2_infer"))}
        servicer = self

        class Handlers(grpc.GenericRpcHandler):
            def service(self, details):
                handler = handlers.get(details.method)
                endpoint = endpoints.get(details.method)
                if handler is None or endpoint is None or servicer.service.api_key is None:
                    return handler
                try:  # the key, from the metadata, before a byte of the message is read
                    servicer.service.check_key(_auth_of(details.invocation_metadata))
                except ApiError as exc:
                    return servicer._refusal(endpoint, exc)
                return handler

        return Handlers()

    def _refusal(self, endpoint: str, exc: ApiError) -> grpc.RpcMethodHandler:
        """A handler that answers ``exc`` without reading the request: a request-streaming
        handler whose messages are never read (gRPC reads a unary request before calling a
        unary handler), counted as the REST refusal is."""
        async def refuse(requests, context):
            self.service.refuse(endpoint, exc, "grpc")
            await _abort(context, error_parts(exc))
        return grpc.stream_unary_rpc_method_handler(refuse)

    # ------------------------------------------------------------------ plumbing

    def _tracked(self, fn):
        async def call(request, context):
            self.inflight += 1
            self._idle.clear()
            try:
                return await fn(request, context)
            finally:
                self.inflight -= 1
                if not self.inflight:
                    self._idle.set()
        return call

    async def wait_idle(self, timeout: float) -> bool:
        """True once no RPC is being answered (False after ``timeout`` seconds)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _answer(self, context, endpoint: str, fn, *, public=False) -> bytes:
        """A call that runs no model, answered in the loop."""
        if self.draining:
            await self._refuse(context, endpoint, _draining())
        value, error = self.service.rpc(endpoint, _auth_of(context.invocation_metadata()), fn,
                                        public=public)
        if error is not None:
            await _abort(context, error)
        return value

    # ------------------------------------------------------------------ the RPCs

    async def server_live(self, raw: bytes, context) -> bytes:
        return await self._answer(context, "v2_live", lambda: pb.ServerLiveResponse(
            live=True).SerializeToString(), public=True)

    async def server_ready(self, raw: bytes, context) -> bytes:
        return await self._answer(context, "v2_ready", lambda: pb.ServerReadyResponse(
            ready=self.service.holder.ready).SerializeToString())

    async def model_ready(self, raw: bytes, context) -> bytes:
        def fn():
            req = _parse(pb.ModelReadyRequest, raw)
            protocols.check_name(req.name, self.info)
            protocols.check_version(req.version or None)
            return pb.ModelReadyResponse(ready=self.service.holder.ready).SerializeToString()
        return await self._answer(context, "v2_model_ready", fn)

    async def server_metadata(self, raw: bytes, context) -> bytes:
        from .. import __version__

        return await self._answer(context, "v2_server", lambda: pb.ServerMetadataResponse(
            name="onnxdeploy", version=__version__,
            extensions=["binary_tensor_data"]).SerializeToString())

    async def model_metadata(self, raw: bytes, context) -> bytes:
        def fn():
            req = _parse(pb.ModelMetadataRequest, raw)
            protocols.check_name(req.name, self.info)
            protocols.check_version(req.version or None)
            meta = protocols.model_metadata(self.info, max_chars=self.views.max_chars)
            resp = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"],
                                            platform=meta["platform"])
            for key in ("inputs", "outputs"):
                for t in meta[key]:
                    getattr(resp, key).add(name=t["name"], datatype=t["datatype"],
                                           shape=t["shape"])
            return resp.SerializeToString()
        return await self._answer(context, "v2_model", fn)

    async def model_infer(self, requests, context) -> bytes:
        """ModelInfer: drain and admission first, then the message, read here, then the same
        request path as REST's (``Front.run_work``: in this loop, inline, or in the work lane,
        as the worker's choice says)."""
        endpoint = "v2_infer"
        if self.draining:
            await self._refuse(context, endpoint, _draining())
        admission = self.admission
        if not admission.enter():
            await self._refuse(context, endpoint, admission.busy())
        try:
            box = [await self._read(context, endpoint)]  # _infer_steps drops it once parsed
            size = len(box[0])
            try:
                steps = self.service.rpc_steps(endpoint, _auth_of(context.invocation_metadata()),
                                               self._infer_steps(box), work=True)
                value, error = await self.front.run_work(steps, size, "grpc")
            finally:
                box.clear()  # the message goes before its bytes leave the budget
                self.buffer.give(size)
        finally:
            admission.leave()
        if error is not None:
            await _abort(context, error)
        return value

    async def _read(self, context, endpoint: str) -> bytes:
        """The request message, read under a read slot and charged to the body budget (the
        caller gives it back); a refusal aborts the RPC."""
        try:
            await asyncio.wait_for(self.reading.acquire(), READ_WAIT_S)
        except asyncio.TimeoutError:
            await self._refuse(context, endpoint, ApiError(
                503, f"server busy: this worker is reading {self.slots} gRPC message(s) at "
                     f"once already (body budget {self.buffer.limit} bytes); retry later",
                {"Retry-After": "1"}))
        front = self.front
        front.reading += 1  # a message on its way: no inline run meanwhile (the front's rule)
        try:
            raw = await context.read()
        finally:
            front.reading -= 1
            self.reading.release()
        if raw is grpc.aio.EOF:
            await self._refuse(context, endpoint, ApiError(
                400, "ModelInfer carried no request message; expected one ModelInferRequest"))
        size = len(raw)
        if size > self.max_body:
            error = ApiError(413, f"request message is {size} bytes; expected at most "
                                  f"{self.max_body} bytes")
        elif size > self.buffer.limit:
            error = self.buffer.too_large(size)
        elif not self.buffer.take(size):
            error = self.buffer.busy()
        else:
            return raw
        del raw  # not kept alive by the abort's traceback while the RPC ends
        await self._refuse(context, endpoint, error)

    async def _refuse(self, context, endpoint: str, error: ApiError):
        """Count ``error`` as a refusal of ``endpoint`` and abort the RPC with it."""
        self.service.refuse(endpoint, error, "grpc")
        await _abort(context, (error.status, error.message, {}))

    def _infer_steps(self, box: list[bytes]):
        """ModelInfer's view, as steps (``views.Run``): parse, check, yield the run, answer."""
        req = _parse(pb.ModelInferRequest, box.pop())  # the bytes go once parsed
        protocols.check_name(req.model_name, self.info)
        protocols.check_version(req.model_version or None)
        payload, binary = request_payload(req)
        del req
        views = self.views
        feeds, options = protocols.parse_v2(payload, binary, self.info,
                                            max_batch=views.max_batch, max_chars=views.max_chars)
        outputs = yield from views.run_steps(feeds)
        return infer_response(self.info, outputs, options)


def _auth_of(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value
    return None


def _draining() -> ApiError:
    return ApiError(503, "server shutting down; retry on another instance or later",
                    {"Retry-After": "1"})


def _parse(message, raw: bytes):
    try:
        return message.FromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ApiError(400, f"malformed gRPC message: not a {message.DESCRIPTOR.name} "
                            f"({str(exc).splitlines()[0] if str(exc) else 'cannot parse'})"
                       ) from None


async def _abort(context, error: tuple[int, str, dict[str, str]]):
    status, message, _ = error
    await context.abort(CODES.get(status, grpc.StatusCode.UNKNOWN), message,
                        RETRY_AFTER if status == 503 else ())


class GrpcServer:
    """One worker's gRPC server (``grpc.aio``), in the worker's event loop beside the HTTP
    front: started with the worker, drained on shutdown."""

    def __init__(self, front, host: str, port: int, *,
                 connection_age_s: float = DEFAULT_CONNECTION_AGE_S):
        self.servicer = InferenceServicer(front)
        limit = grpc_limit(front.service.max_body)
        # no BDP probing: it grows the flow-control windows, and a stream refused unread (no
        # key) then held up to ~0.3 MB of its message in gRPC's buffers (300 x 1.5 MB without
        # the key: +42..88 MiB with it, +5 without); a read message still gets the window it
        # needs (an 8 MiB message on localhost: 9.6-12.3 ms median either way, docs/serve.md)
        options = [("grpc.so_reuseport", 1), ("grpc.http2.bdp_probe", 0),
                   ("grpc.max_receive_message_length", limit),
                   ("grpc.max_send_message_length", -1)]
        if connection_age_s > 0:
            options += [("grpc.max_connection_age_ms", int(connection_age_s * 1000)),
                        ("grpc.max_connection_age_grace_ms", 30_000)]
        self.options = options
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.server = None

    async def start(self) -> None:
        """Listen and serve (in the running loop: the worker's)."""
        self.server = grpc.aio.server(handlers=[self.servicer.handlers()], options=self.options)
        if not self.server.add_insecure_port(self.address):
            raise OSError(f"cannot listen for gRPC on {self.address}")
        await self.server.start()

    async def drain(self, timeout: float) -> None:
        """Refuse new RPCs (UNAVAILABLE + retry-after), let in-flight ones finish (at most
        ``timeout`` seconds), then stop."""
        self.servicer.draining = True
        t0 = time.monotonic()
        if not await self.servicer.wait_idle(timeout):
            log.warning("gRPC: RPCs still running after %.0f s; stopping anyway", timeout)
        await self.server.stop(grace=max(0.1, timeout - (time.monotonic() - t0)))


def start_grpc(front, loop, config: dict[str, Any]) -> GrpcServer:
    """The worker's gRPC server on ``GRPC_HOST:GRPC_PORT``, started in ``loop`` (the front's,
    not running yet)."""
    server = GrpcServer(front, config.get("GRPC_HOST") or "127.0.0.1", int(config["GRPC_PORT"]),
                        connection_age_s=float(config.get("GRPC_CONNECTION_AGE_S") or os.environ.get(
                            AGE_ENV, DEFAULT_CONNECTION_AGE_S)))
    loop.run_until_complete(server.start())
    log.info("gRPC: inference.GRPCInferenceService on %s", server.address)
    return server
