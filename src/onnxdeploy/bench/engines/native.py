"""Our load engine: asyncio protocols (uvloop when importable) over keep-alive HTTP/1.1.

Every connection is a small state machine driven from ``data_received``: when a response is
complete its latency is recorded (``perf_counter_ns``, kept in microseconds) and the next
pre-encoded request is written from the same callback, so a request costs one write, one read and
a header scan, with no coroutine switch. That is what lets one Python process get close to wrk.

Closed loop (``concurrency`` connections, each sends again when answered) measures throughput;
open loop (``rate``) sends on a fixed schedule and counts latency from the *scheduled* send time,
opening more connections when all are busy, so a server stall shows up in the tail instead of
silently slowing the generator down (coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ...errors import OptionError

DEFAULT_TIMEOUT_S = 30.0
#: open loop never holds more connections than this (a server that stalls longer is overloaded)
MAX_OPEN_CONNECTIONS = 512
_WATCHDOG_S = 0.25


@dataclass
class LoadSpec:
    """What to send and for how long: ``requests`` or ``duration_s``; ``rate`` makes it open-loop."""

    host: str
    port: int
    requests: list[bytes]
    concurrency: int = 1
    total: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self):
        if not self.requests:
            raise OptionError("no requests to send")
        if (self.total is None) == (self.duration_s is None):
            raise OptionError("give exactly one of a request count or a duration")
        if self.concurrency < 1:
            raise OptionError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and self.rate <= 0:
            raise OptionError(f"--rate must be > 0 requests/s, got {self.rate}")


@dataclass
class LoadResult:
    """Raw outcome of one load run."""

    latencies_us: np.ndarray
    errors: dict[str, int]
    elapsed_s: float
    cpu_s: float
    connections: int
    mode: str
    scheduled: int = 0
    lateness_us: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def ok(self) -> int:
        return int(self.latencies_us.size)


class _Conn(asyncio.Protocol):
    __slots__ = ("load", "transport", "buf", "start_ns", "busy", "dead")

    def __init__(self, load: _Load):
        self.load = load
        self.transport = None
        self.buf = bytearray()
        self.start_ns = 0
        self.busy = False
        self.dead = False

    def connection_made(self, transport):
        self.transport = transport

    def send(self, data: bytes, start_ns: int) -> None:
        self.busy = True
        self.start_ns = start_ns
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            status = int(head[9:12])
            pos = head.find(b"\r\ncontent-length:")
            if pos >= 0:
                stop = head.find(b"\r\n", pos + 17)
                length = int(head[pos + 17: stop if stop >= 0 else None])
                total = end + 4 + length
                if len(buf) < total:
                    return
                del buf[:total]
            elif b"transfer-encoding: chunked" in head:
                total = _chunked_end(buf, end + 4)
                if total < 0:
                    return
                del buf[:total]
            else:  # no length: the body runs to the end of the connection
                return
            close = b"connection: close" in head
            self.load.on_response(self, status, close)

    def connection_lost(self, exc) -> None:
        self.dead = True
        self.load.on_lost(self)


def _chunked_end(buf: bytearray, pos: int) -> int:
    """Index just past a complete chunked body starting at ``pos``, or -1 if incomplete."""
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2 + size + 2
        if len(buf) < pos:
            return -1
        if size == 0:
            return pos


class _Load:
    """State of one run shared by its connections."""

    def __init__(self, spec: LoadSpec, loop: asyncio.AbstractEventLoop):
        self.spec = spec
        self.loop = loop
        self.reqs = spec.requests
        self.nreq = len(spec.requests)
        self.issued = 0
        self.lat: list[int] = []
        self.errors: dict[str, int] = {}
        self.conns: list[_Conn] = []
        self.idle: deque[_Conn] = deque()
        self.backlog: deque[int] = deque()  # open loop: scheduled times waiting for a connection
        self.deadline_ns = None
        self.stopping = False
        self.last_ns = 0
        self.done = loop.create_future()
        self.connecting = 0
        self.t0 = 0
        self.scheduled = 0
        self.lateness: list[int] = []

    # ------------------------------------------------------------------ bookkeeping
    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def budget_left(self) -> bool:
        if self.spec.total is not None:
            return self.issued < self.spec.total
        return time.perf_counter_ns() < self.deadline_ns

    def in_flight(self) -> int:
        return sum(1 for c in self.conns if c.busy and not c.dead)

    def maybe_done(self) -> None:
        if self.stopping and not self.done.done() and self.in_flight() == 0 and not self.backlog:
            self.done.set_result(None)

    # ------------------------------------------------------------------ connections
    async def connect(self) -> _Conn | None:
        self.connecting += 1
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Conn(self), self.spec.host, self.spec.port
            )
        except OSError:
            self.error("connect")
            return None
        finally:
            self.connecting -= 1
        self.conns.append(conn)
        return conn

    def replace(self, conn: _Conn) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
        if not self.stopping or self.backlog:
            self.loop.create_task(self._reconnect())
        self.maybe_done()

    async def _reconnect(self) -> None:
        while True:
            conn = await self.connect()
            if conn is not None:
                self.ready(conn)
                return
            # a refused connection uses up a request, so a dead target still ends the run
            if self.spec.rate is None:
                if self.budget_left():
                    self.issued += 1
                else:
                    self.stopping = True
            elif self.backlog:
                self.backlog.popleft()
            if self.stopping and not self.backlog:
                self.maybe_done()
                return
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ events
    def ready(self, conn: _Conn) -> None:
        """A connection is free: closed loop sends again, open loop serves the backlog."""
        if self.spec.rate is None:
            if not self.stopping and self.budget_left():
                self.issued += 1
                conn.send(self.reqs[self.issued % self.nreq], time.perf_counter_ns())
                return
            self.stopping = True
            conn.busy = False
            self.maybe_done()
            return
        if self.backlog:
            conn.send(self.reqs[self.issued % self.nreq], self.backlog.popleft())
            return
        conn.busy = False
        self.idle.append(conn)
        self.maybe_done()

    def on_response(self, conn: _Conn, status: int, close: bool) -> None:
        now = time.perf_counter_ns()
        conn.busy = False
        self.last_ns = now
        if status < 400:
            self.lat.append((now - conn.start_ns) // 1000)
        else:
            self.error(f"http_{status}")
        if close:
            conn.dead = True
            conn.transport.close()
            return
        self.ready(conn)

    def on_lost(self, conn: _Conn) -> None:
        if conn.busy:
            conn.busy = False
            self.error("disconnect")
        if conn in self.idle:
            self.idle.remove(conn)
        self.replace(conn)

    async def watchdog(self) -> None:
        limit = int(self.spec.timeout_s * 1e9)
        while not self.done.done():
            await asyncio.sleep(_WATCHDOG_S)
            now = time.perf_counter_ns()
            for conn in list(self.conns):
                if conn.busy and not conn.dead and now - conn.start_ns > limit:
                    conn.busy = False
                    self.error("timeout")
                    conn.transport.abort()

    # ------------------------------------------------------------------ runs
    async def closed(self) -> None:
        conns = await asyncio.gather(*(self.connect() for _ in range(self.spec.concurrency)))
        t0 = time.perf_counter_ns()
        if self.spec.duration_s is not None:
            self.deadline_ns = t0 + int(self.spec.duration_s * 1e9)
        live = [c for c in conns if c is not None]
        for _ in range(len(conns) - len(live)):
            self.loop.create_task(self._reconnect())
        for conn in live:
            self.ready(conn)
        self.t0 = t0
        await self.done

    async def open(self) -> None:
        spec = self.spec
        conns = await asyncio.gather(*(self.connect() for _ in range(spec.concurrency)))
        self.idle.extend(c for c in conns if c is not None)
        interval = 1e9 / spec.rate
        total = spec.total if spec.total is not None else max(1, int(spec.rate * spec.duration_s))
        self.scheduled = total
        t0 = self.t0 = time.perf_counter_ns()
        for i in range(total):
            due = t0 + int(i * interval)
            now = time.perf_counter_ns()
            while due > now:  # the loop's timers may wake a little early: never send ahead
                await asyncio.sleep((due - now) / 1e9)
                now = time.perf_counter_ns()
            self.lateness.append((now - due) // 1000)
            self.issued += 1
            if self.idle:
                self.idle.popleft().send(self.reqs[i % self.nreq], due)
                continue
            self.backlog.append(due)
            if len(self.conns) + self.connecting < MAX_OPEN_CONNECTIONS:
                self.loop.create_task(self._reconnect())
        self.stopping = True
        self.maybe_done()
        await self.done


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one load against ``spec.host:spec.port`` in a fresh event loop and return what happened."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is in the bench extra
        loop = asyncio.new_event_loop()
    load = _Load(spec, loop)
    cpu0 = time.process_time()
    try:
        watchdog = loop.create_task(load.watchdog())
        loop.run_until_complete(load.open() if spec.rate is not None else load.closed())
        watchdog.cancel()
        for conn in load.conns:
            if conn.transport is not None:
                conn.transport.close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    cpu = time.process_time() - cpu0
    end = load.last_ns or time.perf_counter_ns()
    return LoadResult(
        latencies_us=np.asarray(load.lat, dtype=np.int64),
        errors=dict(load.errors),
        elapsed_s=max(1e-9, (end - load.t0) / 1e9),
        cpu_s=cpu,
        connections=len(load.conns) if spec.rate is None else max(len(load.conns), spec.concurrency),
        mode="open" if spec.rate is not None else "closed",
        scheduled=load.scheduled,
        lateness_us=np.asarray(load.lateness, dtype=np.int64),
    )
