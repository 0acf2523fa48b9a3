"""The HTTP front: granian parses HTTP in Rust, this RSGI app buffers bodies and admits requests.

granian (its RSGI interface) reads request lines and headers in Rust with a deadline, so slow
headers never reach Python. This module is the RSGI application of each worker process:

- **headers first**: the URL path and the API key are checked from the headers alone
  (``Service.check_first``), and a transfer coding other than ``chunked`` is a ``501``, before
  a byte of the body is read.
- **bodies next**: the body is read here, in the worker's event loop, with a size cap
  (``413`` from ``Content-Length`` before reading, or as soon as a chunked body passes the cap),
  a deadline (``408``) and the worker's body budget (``Service.buffer``: the bytes of bodies
  held at once across requests; past it ``503`` + ``Retry-After`` before reading). A body that
  ends early or whose chunking is broken is a ``400``. A slow body holds a coroutine, never a
  request thread.
- **admission**: only then does an inference request take a slot (``service.Admission``, a
  counter: nothing here depends on a server's internals). At most ``MAX_INFLIGHT`` inference
  requests per worker are queued or running in the work lane; more are answered ``503`` +
  ``Retry-After`` at once from the event loop (before their body is read when the worker is
  already full).
- **lanes**: requests are answered by the one request path (``service.Service.answer``, the
  same code Flask's blueprints call) in bounded thread pools: the work lane (``--http-threads``)
  for inference, a probe lane for liveness, readiness and ``/metrics`` (so they answer during any
  burst) and a lane for the rest (metadata, ``/openapi.json``, ``/docs``). A quick model runs
  inline in the loop instead (below). Flask's request machinery is never involved here.
- **batching** (``--max-batch-size``, a model with a batch axis): inference requests are parsed
  and answered in the loop itself (``Service.answer_steps``), and only their session run goes
  to the executor's runner thread (``Executor.infer_async``), which merges what waits; the loop
  reads and parses the next requests meanwhile. While parsing is slow (large bodies, see
  PARSE_ABOVE_S) the work lane's threads parse instead, and their runs join the same batches.

Refusals made here (401, 413, 408, 400 for a broken body, 501, 503) are JSON and counted in the
metrics under the endpoint they were meant for, through ``Service.refuse``/``check_first``; a
refusal that leaves a body unread closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
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

from .routes import HEADERS, PROBE, WORK, Request, Router
from .supervise import RUN_DIR_ENV, Beat

log = logging.getLogger("onnxdeploy.serve")

CONFIG_ENV = "ONNXDEPLOY_SERVE_CONFIG"
#: where a worker that cannot create its session writes why (the parent then exits 1)
BOOT_FAILED_ENV = "ONNXDEPLOY_SERVE_BOOT_FAILED"
PROBE_THREADS = 2
MISC_THREADS = 2
#: the longest a client may take to send its whole body once its headers arrived
BODY_TIMEOUT_S = 10.0
#: body cap for endpoints that take no body (metadata, health, docs)
SMALL_BODY_BYTES = 64 * 1024
#: an inference request whose view takes less than this on average (EWMA) runs in the event
#: loop's own thread when it is the only one in flight; above INLINE_ABOVE_S it goes back to
#: the work lane, so a slow model never holds the loop that answers probes and 503s
INLINE_BELOW_S = 0.001
INLINE_ABOVE_S = 0.003
#: with batching, an inference request is parsed and answered in the event loop while that part
#: of its work (everything but the session run) takes less than this on average (EWMA); above
#: it, requests go to the work lane's threads (which join the same batches) until it is back
#: under PARSE_BELOW_S: a large body never holds the loop for long
PARSE_ABOVE_S = 0.003
PARSE_BELOW_S = 0.0015
#: and a body over this many bytes is parsed in a work-lane thread whatever the average (its
#: parse would hold the loop before any average could say so); its run joins the same batches
LOOP_MAX_BODY_BYTES = 64 * 1024
_JSON = [("Content-Type", "application/json")]


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
            result = None
            try:
                try:
                    result = fn(arg)
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                    post(_fail, future, exc)
                else:
                    post(_resolve, future, result)
            except RuntimeError:  # the loop is closed: the worker is stopping, nobody waits
                pass
            del item, future, arg, result  # a request's body must not outlive its answer here


def _resolve(future: asyncio.Future, result) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class _BodyError(Exception):
    """A body the front refuses before any view runs."""

    def __init__(self, status: int, message: str, retry: bool = False):
        super().__init__(message)
        self.error = _api_error(status, message, {"Retry-After": "1"} if retry else None)
        self.error.close = True  # the rest of the body is not read


class _Held:
    """The bytes of body budget one request holds."""

    __slots__ = ("bytes",)

    def __init__(self):
        self.bytes = 0


def _api_error(status: int, message: str, headers: dict[str, str] | None = None):
    from .validation import ApiError  # imported by then: the worker built its service

    return ApiError(status, message, headers)


class Front:
    """The RSGI application of one worker: ``__rsgi_init__`` builds the service and its lanes."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.service = None
        self.loop = None
        self.router = Router()
        self.grpc = None

    # ------------------------------------------------------------------ lifecycle (per worker)

    def __rsgi_init__(self, loop) -> None:
        from .batching import protocol
        from .metrics import forget_dead_workers
        from .service import Admission, Service
        from .views import drive

        self.drive = drive  # imported with the service (the front's module stays light)
        self.protocol = protocol
        self.loop = loop
        forget_dead_workers()  # a replaced worker's gauges must not linger in the sums
        self.service = service = Service(self.config)
        self.router = service.router
        self.holder = service.holder
        self.admission = service.admission
        self.max_body = service.max_body
        self.buffer = service.buffer
        self.body_timeout = float(self.config.get("BODY_TIMEOUT_S") or BODY_TIMEOUT_S)
        threads = int(self.config.get("HTTP_THREADS") or 1)
        self.work = Lane(loop, self._timed_call, threads, "serve-work")
        # Inline: a quick model runs in the loop thread itself while nothing else is in flight
        # (one thread hop less a request); see INLINE_BELOW_S. With batching only under the
        # adaptive hold and only while the executor is idle (a lone request runs at once and
        # alone there, so it never waits for a batch in the loop's thread) and no other
        # inference request is being read (under load the loop must go on reading them, so
        # that they join one batch instead of running one by one inline); never with
        # ``--batch-hold always``, where a lone request waits for the timeout.
        batching = int(service.config["MAX_BATCH_SIZE"]) > 1
        self.executor = service.executor if batching else None
        self.reading = 0  # inference requests whose body is being read (the loop's own count)
        self.inline_allowed = (bool(self.config.get("INLINE", True))
                               and (not batching or service.config["BATCH_HOLD"] == "adaptive"))
        self.inline = False
        self.service_s = None
        # With batching (a model with a batch axis), a request is parsed and answered in this
        # loop and only its session run goes to the executor's runner thread: one hand-off
        # there and one back, however many requests are in flight, and the loop reads and
        # parses the next requests while a batch runs (they join the next batch). The work
        # lane's threads take over while parsing is slow (PARSE_ABOVE_S).
        self.in_loop_allowed = (batching and service.executor.batchable
                                and bool(self.config.get("IN_LOOP", True)))
        self.in_loop = self.in_loop_allowed
        # EWMA of a request's work outside its session run (CPU time of the thread doing it: a
        # request preempted on busy cores is not slow to parse); from 0, so that one slow first
        # request (imports, first allocations) does not send the next ones to the threads
        self.parse_s = 0.0
        if self.in_loop_allowed:
            service.executor.start()
        self.probe = Lane(loop, _call, PROBE_THREADS, "serve-probe")
        self.misc = Lane(loop, _call, MISC_THREADS, "serve-misc")
        self.misc_admission = Admission(self.admission.limit)
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
        run_dir = os.environ.get(RUN_DIR_ENV)
        self.beat = Beat(loop, run_dir) if run_dir else None
        if self.beat is not None:  # serving from now on: the parent's monitor watches this
            self.beat.start()
        # Everything allocated so far (numpy, onnxruntime, the service) lives as long as the
        # worker: move it out of the collector's reach, so a full collection during serving
        # walks only what requests allocate (a full pass over ~10^5 long-lived objects is a
        # tail-latency spike of milliseconds).
        if self.config.get("GRPC_PORT"):  # the same service, over gRPC (serve.grpc_service)
            from .grpc_service import start_grpc

            self.grpc = start_grpc(self, loop, self.config)
        gc.collect()
        gc.freeze()

    def __rsgi_del__(self, loop) -> None:
        if getattr(self, "beat", None) is not None:
            self.beat.stop()
        if self.grpc is not None:  # in-flight RPCs finish (the lanes still run); new ones: 503
            timeout = float(self.config.get("GRACEFUL_TIMEOUT_S") or 30)
            loop.run_until_complete(self.grpc.drain(timeout))
        for lane in (self.work, self.probe, self.misc):
            lane.shutdown()
        if self.service is not None:  # what was handed to the runner thread is answered
            self.service.executor.close()

    # ------------------------------------------------------------------ requests

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":  # websockets are not served
            return
        try:
            await self._handle(scope, proto)
        except (ProtocolClosed, ProtocolError):  # the client left before its answer
            pass
        except Exception as exc:  # a bug here must still answer JSON, counted, and logged
            log.exception("unhandled error in the front for %s %s", scope.method, scope.path)
            try:
                endpoint = self.router.match(scope.method, scope.path).route.endpoint
                status, headers, body = self.service.refuse(endpoint, exc)
            except Exception:  # noqa: BLE001 - the service itself is broken: answer all the same
                status, headers, body = 500, list(_JSON), (b'{"error": "internal server error '
                                                           b'(details are in the server log)"}')
            try:
                proto.response_bytes(status, headers, body)
            except Exception:  # noqa: BLE001 - already answered, or the client is gone
                pass

    async def _handle(self, scope, proto) -> None:
        method, path, headers = scope.method, scope.path, scope.headers
        match = self.router.match(method, path)
        route = match.route
        # the path and the API key are checked from the headers, before a byte of body is read
        refused = self.service.check_first(match, method, path, headers.get)
        if refused is not None:  # a body is not read: the connection closes after this
            close = [("Connection", "close")] if _has_body(headers) else []
            return proto.response_bytes(refused.status, [*refused.headers, *close], refused.body)
        if route.lane == WORK:
            if self.admission.full:  # full already: refuse before reading the body
                return self._refuse(proto, route.endpoint, self.admission.busy(), unread=True,
                                    headers_in=headers)
            cap = self.max_body
        else:
            cap = SMALL_BODY_BYTES
        held = _Held()
        reading = route.lane == WORK
        if reading:
            self.reading += 1  # batching: others on their way mean no inline run (below)
        try:
            try:
                body = await self._read_body(proto, headers, cap, held)
            except _BodyError as exc:
                return self._refuse(proto, route.endpoint, exc.error)
            finally:
                if reading:
                    self.reading -= 1
            # the headers the views read, taken here: granian's objects stay in the loop's thread
            request = Request(method, path, {name: headers.get(name) for name in HEADERS}.get,
                              body)
            del body
            if route.lane == WORK:
                admission = self.admission
                if not admission.enter():
                    return self._refuse(proto, route.endpoint, admission.busy())
                try:
                    reply = await self.run_work(self.service.answer_steps(match, request),
                                                len(request.body))
                finally:
                    admission.leave()
            elif route.lane == PROBE:
                reply = await self.probe.submit(partial(self.service.answer, match, request))
            else:
                if not self.misc_admission.enter():
                    return self._refuse(proto, route.endpoint, self.misc_admission.busy())
                try:
                    reply = await self.misc.submit(partial(self.service.answer, match, request))
                finally:
                    self.misc_admission.leave()
            del request  # the body goes before its bytes leave the budget
        finally:
            self.buffer.give(held.bytes)
        proto.response_bytes(reply.status, reply.headers, reply.body)

    async def _read_body(self, proto, headers, cap: int, held: _Held) -> bytes:
        """The whole body, within ``cap`` and the worker's body budget (bytes reserved in
        ``held``, given back by the caller once the answer is made)."""
        length = headers.get("content-length")
        chunked = False
        if headers.get("transfer-encoding") is not None:  # every such field, in order
            codings = [c.strip().lower() for name, value in headers.items()
                       if name.lower() == "transfer-encoding" for c in value.split(",")]
            if codings != ["chunked"]:  # granian decodes chunked only: gzip, deflate... not
                raise _BodyError(501, f"Transfer-Encoding {', '.join(codings)!r} is not "
                                      "implemented; expected 'chunked' or a Content-Length")
            chunked = True
        if length is None and not chunked:
            return b""
        if length is not None and not chunked:
            if not length.isdigit():
                raise _BodyError(400, f"Content-Length {length!r} is not a number of bytes")
            size = int(length)
            if size > cap:
                raise _BodyError(413, f"request body is {size} bytes; expected at most "
                                      f"{cap} bytes")
            if size == 0:
                return b""
            if size > self.buffer.limit:
                raise _BodyError(413, self.buffer.too_large(size).message)
            if not self.buffer.take(size):  # the worker holds too many bytes of bodies
                raise _BodyError(503, self.buffer.busy().message, retry=True)
            held.bytes = size
        task = asyncio.current_task()
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            task.cancel()

        timer = self.loop.call_later(self.body_timeout, expire) if task else None
        try:
            if not chunked:
                # streamed into one buffer of the declared size: ``await proto()`` would hold
                # the body twice (granian's growing buffer, then the bytes object)
                body, got = bytearray(size), 0
                async for chunk in proto:
                    if not chunk:
                        continue
                    end = got + len(chunk)
                    if end > size:
                        raise _BodyError(400, f"request body is longer than its Content-Length "
                                              f"{size}; expected exactly {size} bytes")
                    body[got:end] = chunk
                    got = end
                if got != size:  # the client closed its end before the whole body
                    raise _BodyError(400, f"request body ended after {got} of {size} "
                                          "bytes (Content-Length); expected the whole body")
                return body
            # one growing buffer, not a list of chunks joined at the end (that held the body
            # twice for a moment); a bytearray grows in place, over-allocating ~1/8
            body, size, ended = bytearray(), 0, False
            # a client that sends trailer fields declares them (``Trailer:``); see below
            trailers = headers.get("trailer") is not None
            async for chunk in proto:
                # granian (2.8) ends a well-formed body with one empty chunk; where its chunked
                # parser fails (a bad size line, a body cut short by a half-close) it yields an
                # empty chunk and then one more, without raising: data or a second empty chunk
                # after an empty one is that failure (tests/test_serve_hostile.py pins it).
                # Trailer fields also come as a second empty chunk: taken only when declared.
                if ended and not (trailers and not chunk):
                    raise _BodyError(400, "malformed or truncated chunked body (or undeclared "
                                          "trailer fields); expected chunks of '<hex size> CRLF "
                                          "<bytes> CRLF' ending with a zero-size chunk")
                if not chunk:
                    ended = True
                    continue
                size += len(chunk)
                if size > cap:
                    raise _BodyError(413, f"request body (chunked) is over the limit; expected at "
                                          f"most {cap} bytes")
                if not self.buffer.take(len(chunk)):
                    raise _BodyError(503, self.buffer.busy().message, retry=True)
                held.bytes += len(chunk)
                body += chunk
                del chunk
            if not size:  # granian ends a body whose chunking it cannot parse without an error
                raise _BodyError(400, "empty or malformed chunked body; expected chunks of "
                                      "'<hex size> CRLF <bytes> CRLF' ending with a zero-size chunk")
            return body
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

    def _refuse(self, proto, endpoint: str, error, unread: bool = False,
                headers_in=None) -> None:
        """Answer a refusal made before any view ran; ``unread``: the body (if any) was not
        read, so the connection is closed after the answer."""
        status, headers, body = self.service.refuse(endpoint, error)
        if ((unread and _has_body(headers_in)) or status in (400, 408, 413, 501)
                or getattr(error, "close", False)):
            headers = [*headers, ("Connection", "close")]  # the rest of the body is not read
        proto.response_bytes(status, headers, body)

    def _timed_call(self, call: Callable[[], Any]):
        """Answer an admitted inference request, timed for the inline decision."""
        t0 = time.perf_counter()
        try:
            return call()
        finally:
            self._served(time.perf_counter() - t0)

    def _served(self, took: float) -> None:
        """One more inference request's service time, for the inline decision."""
        ewma = self.service_s
        self.service_s = took if ewma is None else ewma + (took - ewma) * 0.05
        if self.inline_allowed:  # hysteresis: a model near the bound does not flip-flop
            if self.inline and self.service_s > INLINE_ABOVE_S:
                self.inline = False
            elif not self.inline and self.service_s < INLINE_BELOW_S:
                self.inline = True

    def _parsed(self, took: float) -> None:
        """One more request's work outside its run (parse, answer), for the in-loop decision."""
        self.parse_s += (took - self.parse_s) * 0.05
        if self.in_loop and self.parse_s > PARSE_ABOVE_S:
            self.in_loop = False
        elif not self.in_loop and self.parse_s < PARSE_BELOW_S:
            self.in_loop = True

    async def run_work(self, steps, size: int, protocol: str = "http"):
        """An admitted inference request's steps (``Service.answer_steps`` for REST,
        ``Service.rpc_steps`` for gRPC), driven where this worker's choice says; returns what
        they return. ``size``: the request's body or message bytes.

        The choices, in order: with batching, parsed in this loop and run by the executor
        (``_in_loop``) or, while parsing is slow, in the work lane; a quick model (``inline``)
        run here when the request is alone, and, without batching, every gRPC request of a
        quick model run here whatever is in flight (grpcio hands each RPC's events to this loop
        already, and a hop to the work lane and back cost it 10 more thread switches a request:
        16 against 6, docs/serve.md); the rest in the work lane."""
        if self.in_loop and size <= LOOP_MAX_BODY_BYTES:
            return await self._in_loop(steps, protocol)
        if self.in_loop_allowed:  # parsing is slow: threads parse, batches merge
            return await self.work.submit(partial(self._drive_timed, steps, protocol,
                                                  not self.in_loop))
        if self.inline and self._here(protocol):
            return self._timed_call(partial(self._drive, steps, protocol))
        return await self.work.submit(partial(self._drive, steps, protocol))

    def _here(self, protocol: str) -> bool:
        """Whether a quick model's request runs in this loop now (``run_work``)."""
        executor = self.executor
        if executor is None:  # batching off: gRPC always, REST when alone
            return protocol != "http" or self.admission.count == 1
        return self.admission.count == 1 and self.reading == 0 and executor.idle()

    def _mix(self, protocol: str):
        """The context its runs are counted in, in the batches' protocol mix."""
        return _HTTP if protocol == "http" else self.protocol(protocol)

    def _drive(self, steps, protocol: str, spent=None):
        """A request's steps to their end in this thread."""
        with self._mix(protocol):
            return self.drive(steps, self.service.executor, spent)

    async def _in_loop(self, steps, protocol: str):
        """Batching: parse and answer in this loop, the session run by the executor's runner
        thread with whatever else is waiting (``Executor.infer_async``). A request that is the
        only one in flight, with the executor idle and nothing being read, runs inline here
        instead (when the model is quick, see INLINE_BELOW_S): nothing could join its batch."""
        executor, cpu = self.executor, time.thread_time
        alone = self.inline and self.admission.count == 1 and self.reading == 0
        if alone and executor.quiet():
            return await self._answer_lone(steps, protocol)
        t0 = cpu()
        spent = ran = 0.0
        try:
            need = next(steps)  # parsed and checked here
            while True:
                spent += cpu() - t0
                try:
                    t1 = time.perf_counter()
                    with self._mix(protocol):
                        outputs = (executor.run_lone(need.feeds, need.rows, padded=need.padded,
                                                     ticket=need.ticket) if alone else None)
                        if outputs is None:
                            future = executor.infer_async(need.feeds, need.rows, self.loop,
                                                          padded=need.padded, ticket=need.ticket)
                    if outputs is not None:
                        ran = time.perf_counter() - t1
                    else:
                        outputs = await future
                        # what its run would take alone (the inline path's figure): a
                        # batch's run under load says nothing of a lone request's
                        ran = (executor.lone_s if executor.lone_s is not None
                               else executor.run_s) or 0.0
                except Exception as exc:  # the run's error, raised where the view waits
                    t0 = cpu()
                    need = steps.throw(exc)
                else:
                    t0 = cpu()
                    need = steps.send(outputs)
        except StopIteration as stop:
            spent += cpu() - t0
            self._parsed(spent)
            if self.inline_allowed:
                self._served(spent + ran)
            return stop.value
        finally:
            steps.close()  # cancelled while waiting: the request leaves the executor's count

    async def _answer_lone(self, steps, protocol: str):
        """``_in_loop`` for a request alone in this worker: the whole request in this
        thread, as without batching (``Executor.run_lone``), timed by the wall clock as the
        inline path is without batching. Its parsing is not timed for the in-loop decision:
        the inline path's requests take under INLINE_ABOVE_S in all, and that figure is for
        requests that share the loop with others."""
        executor, t0 = self.executor, time.perf_counter()
        try:
            need = next(steps)
            while True:
                try:
                    with self._mix(protocol):
                        outputs = executor.run_lone(need.feeds, need.rows, padded=need.padded,
                                                    ticket=need.ticket)
                        if outputs is None:  # a thread's request took the runner meanwhile
                            future = executor.infer_async(need.feeds, need.rows, self.loop,
                                                          padded=need.padded, ticket=need.ticket)
                    if outputs is None:
                        outputs = await future
                except Exception as exc:
                    need = steps.throw(exc)
                else:
                    need = steps.send(outputs)
        except StopIteration as stop:
            self._served(time.perf_counter() - t0)
            return stop.value
        finally:
            steps.close()

    def _drive_timed(self, steps, protocol: str, measure: bool = True):
        """Batching, in a work-lane thread while parsing is slow (or for a large body): the
        request answered here, its work outside the run timed for the in-loop decision
        (``measure``: not for a large body sent here while the loop parses the others)."""
        report = (lambda spent: self.loop.call_soon_threadsafe(self._parsed, spent)) if measure else None
        return self._drive(steps, protocol, report)


#: the protocol a request counts under in the batches' mix when nothing else is said
_HTTP = contextlib.nullcontext()


def _has_body(headers) -> bool:
    """Whether a request declares a body (which a refusal made from its headers leaves unread)."""
    if headers is None:
        return False
    length = headers.get("content-length")
    return bool(headers.get("transfer-encoding")) or (length is not None and length != "0")


def _call(call: Callable[[], Any]):
    return call()


def load_front(config: dict[str, Any] | None = None) -> Front:
    """The RSGI target granian loads in each worker (config from ``ONNXDEPLOY_SERVE_CONFIG``)."""
    if config is None:
        config = json.loads(os.environ[CONFIG_ENV])
    if not logging.getLogger().handlers:  # a spawned worker: log as the parent does
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    return Front(config)
