"""Our load engine: asyncio protocols (uvloop when importable) over keep-alive HTTP/1.1.

Every connection is a small state machine driven from ``data_received``: when a response is
complete its latency is recorded (``perf_counter_ns``, kept in microseconds) and the next
pre-encoded request is written from the same callback, so a request costs one write, one read and
a header scan, with no coroutine switch. That is what lets one Python process get close to wrk.

Closed loop (``concurrency`` connections, each sends again when answered) measures throughput;
open loop (``rate``) sends on a schedule (Poisson arrivals by default, as MLPerf LoadGen's Server
scenario does, or evenly spaced) and counts latency from the *scheduled* send time, opening more
connections when all are busy, so a server stall shows up in the tail instead of silently slowing
the generator down (coordinated omission).

A ``StopRule`` ends a run early once its verdict cannot change: more requests already over a
latency bound (answered late, or still waiting past it, counted from when the generator reached
each request so that its own lateness never stops a run) than the percentile allows for the
whole run, or more errors than the run may have.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...errors import OptionError

DEFAULT_TIMEOUT_S = 30.0
#: open loop never holds more connections than this (a server that stalls longer is overloaded)
MAX_OPEN_CONNECTIONS = 512
_MONITOR_S = 0.05
#: a send more than this late against its schedule counts as late (the generator fell behind)
LATE_US = 1000
ARRIVALS = ("poisson", "uniform")
#: the first error's answer is kept up to this many bytes
ERROR_TEXT_BYTES = 300


@dataclass(frozen=True)
class StopRule:
    """End a run early when it is already clearly failing.

    ``bounds`` are ``(bound_us, allowed)`` pairs: the run fails once more than ``allowed``
    requests took (or are still taking) longer than ``bound_us``; ``max_errors`` likewise.
    """

    bounds: tuple[tuple[int, int], ...] = ()
    max_errors: int | None = None


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
    arrivals: str = "poisson"
    seed: int = 0
    stop: StopRule | None = None
    #: called about every ``tick_s`` with the run's progress so far (dict)
    on_tick: Callable[[dict], None] | None = None
    tick_s: float = 1.0

    def __post_init__(self):
        if not self.requests:
            raise OptionError("no requests to send")
        if (self.total is None) == (self.duration_s is None):
            raise OptionError("give exactly one of a request count or a duration")
        if self.concurrency < 1:
            raise OptionError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and self.rate <= 0:
            raise OptionError(f"--rate must be > 0 requests/s, got {self.rate}")
        if self.arrivals not in ARRIVALS:
            raise OptionError(f"--arrivals {self.arrivals}: expected one of {', '.join(ARRIVALS)}")


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
    first_error: str | None = None
    early_stop: str | None = None
    arrivals: str | None = None
    #: latency from the actual send instead of the scheduled one (µs), answer by answer
    service_us: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def ok(self) -> int:
        return int(self.latencies_us.size)

    @property
    def slip_s(self) -> float:
        """Open loop: how far behind its schedule the last send left (the generator falling behind)."""
        return float(self.lateness_us[-1]) / 1e6 if self.lateness_us.size else 0.0

    @property
    def late(self) -> int:
        """Open loop: sends that left more than ``LATE_US`` after their scheduled time."""
        return int(np.count_nonzero(self.lateness_us > LATE_US))


class _Conn(asyncio.Protocol):
    __slots__ = ("load", "transport", "buf", "start_ns", "sent_ns", "busy", "dead")

    def __init__(self, load: _Load):
        self.load = load
        self.transport = None
        self.buf = bytearray()
        self.start_ns = 0
        self.sent_ns = 0
        self.busy = False
        self.dead = False

    def connection_made(self, transport):
        self.transport = transport

    def send(self, data: bytes, start_ns: int, ready_ns: int | None = None) -> None:
        """Send ``data``; latency counts from ``start_ns`` (the schedule), the server's part from
        ``ready_ns`` (when the generator got to the request), by default now."""
        self.busy = True
        self.start_ns = start_ns
        self.sent_ns = ready_ns if ready_ns is not None else time.perf_counter_ns()
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
            elif b"transfer-encoding: chunked" in head:
                total = _chunked_end(buf, end + 4)
                if total < 0:
                    return
            else:  # no length: the body runs to the end of the connection
                return
            if status >= 400 and self.load.first_error is None:
                body = bytes(buf[end + 4:total][:ERROR_TEXT_BYTES]).decode(errors="replace")
                self.load.first_error = f"HTTP {status}: {body.strip()}"
            del buf[:total]
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
        # open loop: (scheduled, reached) times of requests waiting for a free connection; the wait
        # after ``reached`` is the server's doing (it holds every connection), not the generator's
        self.backlog: deque[tuple[int, int]] = deque()
        self.deadline_ns = None
        self.stopping = False
        self.last_ns = 0
        self.done = loop.create_future()
        self.connecting = 0
        self.t0 = 0
        self.scheduled = 0
        self.lateness: list[int] = []
        self.first_error: str | None = None
        #: per answered request: time from the actual send (the server's part, without our lateness)
        self.service: list[int] = []
        self.early: str | None = None
        self.over = [0] * (len(spec.stop.bounds) if spec.stop else 0)
        self.over_service = list(self.over)
        self.sent = 0
        self.closing = False

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
            due, reached = self.backlog.popleft()
            conn.send(self.reqs[self.issued % self.nreq], due, reached)
            return
        conn.busy = False
        self.idle.append(conn)
        self.maybe_done()

    def on_response(self, conn: _Conn, status: int, close: bool) -> None:
        now = time.perf_counter_ns()
        conn.busy = False
        self.last_ns = now
        if status < 400:
            lat_us = (now - conn.start_ns) // 1000
            self.lat.append(lat_us)
            service_us = (now - conn.sent_ns) // 1000
            self.service.append(service_us)
            if self.over:
                for i, (bound_us, _) in enumerate(self.spec.stop.bounds):
                    if lat_us > bound_us:
                        self.over[i] += 1
                    if service_us > bound_us:
                        self.over_service[i] += 1
        else:
            self.error(f"http_{status}")
        if close:
            conn.dead = True
            conn.transport.close()
            return
        self.ready(conn)

    def on_lost(self, conn: _Conn) -> None:
        if conn.busy and not self.closing:  # our own close after an early stop is no server error
            conn.busy = False
            self.error("disconnect")
        if conn in self.idle:
            self.idle.remove(conn)
        self.replace(conn)

    def check_stop(self, now: int) -> str | None:
        """Why the run is already failing whatever comes next, or None.

        Counted from when the generator reached each request (answered, in flight, or waiting
        for a connection the server holds), so a generator that falls behind its schedule never
        stops a run early: only the server's part can, and the verdict of a run that went to the
        end tells the two apart.
        """
        rule = self.spec.stop
        if rule is None:
            return None
        if rule.max_errors is not None and sum(self.errors.values()) > rule.max_errors:
            return f"more than {rule.max_errors} errors"
        waiting = [c.sent_ns for c in self.conns if c.busy and not c.dead] + [r for _, r in self.backlog]
        for i, (bound_us, allowed) in enumerate(rule.bounds):
            limit = now - bound_us * 1000
            stale = sum(1 for start in waiting if start < limit)
            if self.over_service[i] + stale > allowed:
                return f"more than {allowed} requests over {bound_us / 1000:g} ms"
        return None

    def progress(self, now: int) -> dict:
        """What the run did so far: sent, answered, errors, current rate and p99 (ms)."""
        elapsed = max(1e-9, (now - self.t0) / 1e9) if self.t0 else 0.0
        p99 = float(np.percentile(self.lat, 99, method="inverted_cdf")) / 1000.0 if self.lat else None
        planned = self.scheduled or self.spec.total
        return {"elapsed_s": elapsed, "sent": self.sent or self.issued, "ok": len(self.lat),
                "errors": sum(self.errors.values()), "rps": len(self.lat) / elapsed if elapsed else 0.0,
                "p99_ms": p99, "planned": planned, "duration_s": self.spec.duration_s}

    async def monitor(self) -> None:
        """Time out stuck requests, apply the stop rule, report progress."""
        limit = int(self.spec.timeout_s * 1e9)
        next_tick = time.perf_counter_ns() + int(self.spec.tick_s * 1e9)
        while not self.done.done():
            await asyncio.sleep(_MONITOR_S)
            now = time.perf_counter_ns()
            for conn in list(self.conns):
                if conn.busy and not conn.dead and now - conn.start_ns > limit:
                    conn.busy = False
                    self.error("timeout")
                    conn.transport.abort()
            if self.t0 and self.early is None:
                self.early = self.check_stop(now)
                if self.early is not None:
                    self.stopping = True
                    self.backlog.clear()
                    if not self.done.done():
                        self.done.set_result(None)
                    return
            if self.spec.on_tick is not None and now >= next_tick and self.t0:
                next_tick = now + int(self.spec.tick_s * 1e9)
                self.spec.on_tick(self.progress(now))

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
        total = spec.total if spec.total is not None else max(1, int(spec.rate * spec.duration_s))
        self.scheduled = total
        offsets = schedule(spec.rate, total, spec.arrivals, spec.seed)
        t0 = self.t0 = time.perf_counter_ns()
        for i in range(total):
            if self.early is not None:
                break
            due = t0 + int(offsets[i])
            now = time.perf_counter_ns()
            while due > now:  # the loop's timers may wake a little early: never send ahead
                await asyncio.sleep((due - now) / 1e9)
                now = time.perf_counter_ns()
            self.lateness.append((now - due) // 1000)
            self.issued += 1
            self.sent += 1
            if self.idle:
                self.idle.popleft().send(self.reqs[i % self.nreq], due)
                continue
            self.backlog.append((due, now))
            if len(self.conns) + self.connecting < MAX_OPEN_CONNECTIONS:
                self.loop.create_task(self._reconnect())
        self.stopping = True
        self.maybe_done()
        await self.done


def schedule(rate: float, total: int, arrivals: str, seed: int = 0) -> np.ndarray:
    """Send times in ns from the start: Poisson (exponential gaps, seeded) or evenly spaced."""
    if arrivals == "uniform":
        return np.arange(total, dtype=np.float64) * (1e9 / rate)
    gaps = np.random.default_rng(seed).exponential(1e9 / rate, size=total)
    return np.concatenate(([0.0], np.cumsum(gaps[:-1])))


def _stop_on_signals(loop, load: _Load, interrupted: list[int]) -> Callable[[], None]:
    """SIGINT/SIGTERM end the run through the loop (a Python-level handler raising inside uvloop's
    loop is not seen until the run ends); returns how to put the previous handlers back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum: int) -> None:
        interrupted.append(signum)
        load.early = "interrupted"
        load.stopping = True
        load.backlog.clear()
        if not load.done.done():
            load.done.set_result(None)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        loop.add_signal_handler(sig, stop, sig)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one load against ``spec.host:spec.port`` in a fresh event loop and return what happened."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is in the bench extra
        loop = asyncio.new_event_loop()
    load = _Load(spec, loop)
    cpu0 = time.process_time()
    interrupted: list[int] = []
    restore = _stop_on_signals(loop, load, interrupted)
    try:
        monitor = loop.create_task(load.monitor())
        loop.run_until_complete(load.open() if spec.rate is not None else load.closed())
        monitor.cancel()
        load.closing = True
        for conn in load.conns:
            if conn.transport is not None:
                conn.transport.close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        restore()
    if interrupted:
        raise KeyboardInterrupt(f"signal {interrupted[0]}")
    cpu = time.process_time() - cpu0
    end = load.last_ns or time.perf_counter_ns()
    return LoadResult(
        latencies_us=np.asarray(load.lat, dtype=np.int64),
        errors=dict(load.errors),
        elapsed_s=max(1e-9, (end - load.t0) / 1e9),
        cpu_s=cpu,
        connections=len(load.conns) if spec.rate is None else max(len(load.conns), spec.concurrency),
        mode="open" if spec.rate is not None else "closed",
        scheduled=load.scheduled if load.early is None else load.sent,
        lateness_us=np.asarray(load.lateness, dtype=np.int64),
        first_error=load.first_error,
        service_us=np.asarray(load.service, dtype=np.int64),
        early_stop=load.early,
        arrivals=spec.arrivals if spec.rate is not None else None,
    )
