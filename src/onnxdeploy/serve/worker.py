"""gunicorn's ``gthread`` worker with overload control where requests are dispatched.

Plain gthread hands every readable connection to one FIFO thread pool. With a few threads (the
count that measures fastest), requests beyond them wait in that pool's queue, bounded only by
``worker_connections`` (1000), and a health probe waits behind all of them. Bounding requests
inside the Flask views cannot fix that: a view is only reached once a thread is free.

So this worker swaps the pool (gunicorn's ``get_thread_pool`` hook) for three lanes, chosen in
the worker's main thread by peeking at the request line already on the socket (``MSG_PEEK``,
nothing consumed, no blocking):

- probe lane (``PROBE_THREADS``): ``GET``/``HEAD`` of ``/v2/health/*`` and ``/metrics``, and
  connections the peer closed. Never queued behind inference, so probes answer during any burst.
- work lane (``--threads``): everything else while fewer than ``--max-inflight`` requests are
  queued or running there; queue time counts, so in flight means accepted and not yet answered.
- shed lane (``SHED_THREADS``): requests arriving while the work lane is full. Its threads are
  marked (``admission.mark_shedding``) so inference views answer 503 + ``Retry-After`` at once,
  before reading the body; other endpoints answer normally.

The work lane keeps the measured-best thread count, so throughput below the bound is plain
gthread's. A new connection whose request has not arrived yet waits in the poller until it can
be classified; a TLS connection cannot be peeked and goes to the work lane as gthread would.

Connections are also spread over workers. Every worker polls the one listening socket and
gthread accepts one connection per wake-up, so a client opening 8 keep-alive connections at once
got most or all of them on whichever worker polled first (often the one not still closing the
previous run's), and kept them there: ``onnxdeploy bench`` A/A at c=8 ran at ~1,300 or ~3,000
req/s, alternating run by run. Now each worker publishes its open connections (gthread's
``nr_conns``, less those whose client already left) on a ``ConnectionBoard`` the arbiter makes
before forking. A worker holding more than its least loaded peer takes its listener out of the
poller and leaves the connection to that peer, looking again every ``RECHECK_S`` and resuming
as soon as it is the lighter one; after ``DEFER_S`` (5 ms) it accepts anyway, as the peer may be
stuck. Measured against the old worker, alternated (A/A c=8, 36 runs each): runs under 2,000
req/s 10 -> 0, min 896 -> 2,001, median 2,754 -> 2,983; c=32 min 1,248 -> 2,780; c=1, wrk
keep-alive and one-request connections within ~5% (noise). With ``--workers 1`` there is no
board and accepting is gthread's own.

Measured on 2 shared cores, digits-cnn, wrk (benchmarks/serve.py; medians, alternated with the
plain gthread server): c=8 and c=32 within 0-5% of plain gthread; one worker under 128
connections sheds ~40% as 503s and health probes take ~15 ms (p50) instead of ~70 ms. Tried
first: many threads with a semaphore gating the CPU work inside the views (bound + spare
threads): 5-13% fewer req/s at c=8/32, and probes still waited ~100 ms in the pool's queue.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from gunicorn.workers.gthread import ThreadWorker

from .admission import mark_shedding

PROBE_THREADS = 2
SHED_THREADS = 2
PEEK_BYTES = 64
PROBE_PATHS = (b"/v2/health/", b"/metrics")
PROBE_METHODS = (b"GET", b"HEAD")
#: longest a busier worker leaves a new connection to a less loaded peer before taking it itself
DEFER_S = 0.005
#: how often a deferring worker looks at the board again (it may no longer be the busier one)
RECHECK_S = 0.001
#: board slots beyond --workers, for replacements started before a dead worker is reaped
SPARE_SLOTS = 2
_OFF = -1  # a slot whose worker is not accepting (booting, stopping, gone, or unused)


def peek(conn) -> bytes | None:
    """The first bytes waiting on the connection's socket (b"" at EOF); None if none can be seen."""
    sock = getattr(conn, "sock", None)
    if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
        return None
    try:
        return sock.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing there yet, or the peer is gone: the work lane finds out
        return None


def is_quick(conn) -> bool:
    """True for a health or metrics GET, or a connection its peer closed (only to be closed).

    A closed keep-alive connection (every probe client's, after its answer) must not take an
    in-flight slot and wait behind inference just to be closed.
    """
    head = peek(conn)
    if head is None:
        return False
    method, _, rest = head.partition(b" ")
    return head == b"" or (method in PROBE_METHODS and rest.startswith(PROBE_PATHS))


class LanePool:
    """Stands in for gthread's ThreadPoolExecutor: ``submit(handle, conn)`` picks the lane."""

    def __init__(self, threads: int, max_inflight: int | None = None):
        self.work = ThreadPoolExecutor(threads, thread_name_prefix="serve-work")
        self.probe = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="serve-probe")
        self.shed = ThreadPoolExecutor(SHED_THREADS, thread_name_prefix="serve-shed",
                                       initializer=mark_shedding)
        self.max_inflight = max_inflight
        self.inflight = 0
        self._lock = threading.Lock()

    def submit(self, fn, conn, *args) -> Future:
        """Run ``fn(conn, *args)`` in the probe, work or shed lane."""
        if is_quick(conn):
            return self.probe.submit(fn, conn, *args)
        with self._lock:
            full = self.max_inflight is not None and self.inflight >= self.max_inflight
            if not full:
                self.inflight += 1
        if full:
            return self.shed.submit(fn, conn, *args)
        future = self.work.submit(fn, conn, *args)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Future) -> None:
        with self._lock:
            self.inflight -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut every lane down."""
        for pool in (self.work, self.probe, self.shed):
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class ConnectionBoard:
    """Open connections of each gunicorn worker, in shared memory made before gunicorn forks.

    The arbiter hands out slots (``attach`` as the ``pre_fork`` hook, ``detach`` from
    ``child_exit``), so a slot is never claimed by two workers and a dead worker's is freed when
    it is reaped. Each worker writes only its own slot (one aligned word) and reads the others.
    """

    def __init__(self, slots: int):
        self._counts = multiprocessing.RawArray(ctypes.c_long, [_OFF] * slots)

    def attach(self, server, worker) -> None:
        """Give ``worker`` a free slot (arbiter, before the fork); none left: it runs unbalanced."""
        taken = {getattr(w, "board_slot", None) for w in server.WORKERS.values()}
        free = [i for i in range(len(self._counts)) if i not in taken]
        if not free:
            server.log.warning("no connection-board slot left: worker %s accepts unbalanced",
                               worker.age)
            return
        worker.board, worker.board_slot = self, free[0]
        self._counts[free[0]] = _OFF

    def detach(self, worker) -> None:
        """Free a gone worker's slot (arbiter, ``child_exit``)."""
        if getattr(worker, "board", None) is self:
            self._counts[worker.board_slot] = _OFF

    def publish(self, slot: int, count: int) -> None:
        """Record a worker's open connections (``_OFF``: not accepting)."""
        self._counts[slot] = count

    def least_peer(self, slot: int) -> int | None:
        """The fewest open connections among the other accepting workers; None if there is none."""
        counts = [c for i, c in enumerate(self._counts) if i != slot and c != _OFF]
        return min(counts) if counts else None


class OverloadWorker(ThreadWorker):
    """gthread with a bounded number of requests in flight and a lane of its own for probes.

    With a ``ConnectionBoard`` (several workers) it also evens out connections across workers:
    one that holds more than its least loaded peer leaves a new connection to that peer for up
    to ``DEFER_S``, then takes it anyway (the peer may be stuck). Without one (``--workers 1``)
    it accepts exactly as gthread does.
    """

    board: ConnectionBoard | None = None
    board_slot = -1
    _conns = 0
    _closing: frozenset | set = frozenset()  # dispatched only to be closed: the client left
    _listed = False  # our count is on the board: peers may leave connections to us
    _pause_until = 0.0  # deferring to a peer: the listener stays out of the poller until then
    _resumed = False  # this poll is the first since a pause: take what is still waiting

    @property
    def nr_conns(self) -> int:
        """gthread's count of open connections, mirrored on the board."""
        return self._conns

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:
        self._conns = value
        self._publish()

    def open_conns(self) -> int:
        """Open connections whose client is not known to have closed them."""
        return self._conns - len(self._closing)

    def run(self) -> None:
        """List this worker on the board now that it accepts (its session is loaded), then run."""
        if self.board is not None:
            self._listed, self._closing = True, set()
            self._publish()
        super().run()

    def handle_exit(self, sig, frame) -> None:
        """Graceful stop: off the board at once, so no peer waits for us to accept."""
        self._unlist()
        super().handle_exit(sig, frame)

    def accept(self, listener) -> None:
        """Accept, unless a peer holds fewer connections and may still take this one."""
        if self.board is not None and not self._resumed and self._busier():
            # Level-triggered: leaving the connection queued would wake us again at once.
            self._pause_until = time.monotonic() + DEFER_S
            super().set_accept_enabled(False)
            return
        super().accept(listener)

    def set_accept_enabled(self, enabled: bool) -> None:
        """gthread's switch, except that the run loop's re-enabling waits out a pause.

        A pause ends early once this worker has become the less loaded one (a connection of ours
        closed, or the peer took more): two workers each waiting for the other would otherwise
        both idle (one-request connections fell from ~2,750 to ~400 req/s).
        """
        if enabled and self._pause_until:
            expired = time.monotonic() >= self._pause_until
            if not expired and not self._lighter():
                return
            self._pause_until, self._resumed = 0.0, expired
        if not enabled and not self.alive:
            self._unlist()
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """gthread's poll, woken to look at the board again while a pause lasts."""
        left = self._pause_until - time.monotonic()
        if left > 0:  # an expired pause must not shorten the poll: the loop may not re-enable yet
            timeout = min(timeout, left, RECHECK_S)
        super().wait_for_and_dispatch_events(timeout)
        self._resumed = False

    def _busier(self) -> bool:
        least = self.board.least_peer(self.board_slot)
        return least is not None and self.open_conns() > least

    def _lighter(self) -> bool:
        least = self.board.least_peer(self.board_slot)
        return least is None or self.open_conns() < least

    def _publish(self) -> None:
        if self._listed:
            self.board.publish(self.board_slot, self.open_conns())

    def _unlist(self) -> None:
        if self._listed:
            self._listed = False
            self.board.publish(self.board_slot, _OFF)

    def get_thread_pool(self) -> LanePool:
        """The lanes; the bound is read from the app once it is loaded."""
        return LanePool(self.cfg.threads)

    def enqueue_req(self, conn) -> None:
        """Dispatch a readable connection; a new one with no request yet waits in the poller.

        Without this a probe on a fresh connection whose bytes are still in flight could not be
        told from inference and would queue behind it. Waiting in the poller is what gthread
        does itself for a new connection that sends nothing for a while; a gunicorn without
        that machinery (``pending_conns``) dispatches at once instead.
        """
        waiting = getattr(self, "pending_conns", None)
        if (waiting is not None and not conn.initialized and not conn.data_ready
                and isinstance(conn.sock, socket.socket) and peek(conn) is None):
            conn.sock.setblocking(False)
            conn.timeout = time.monotonic() + self.cfg.keepalive
            waiting.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ,
                                 partial(self.on_pending_socket_readable, conn))
            return
        if self._listed and conn.initialized and peek(conn) == b"":
            # Until a lane thread has closed them, the connections a client just closed would
            # still count: reconnecting at once, it found us busier than we are (6/2 splits).
            self._closing.add(conn)
            self._publish()
        super().enqueue_req(conn)

    def finish_request(self, conn, fs) -> None:
        """gthread's bookkeeping after a lane thread is done with a connection."""
        if conn in self._closing:
            self._closing.discard(conn)
            self._publish()
        super().finish_request(conn, fs)

    def load_wsgi(self) -> None:
        """Load the app, then take ``MAX_INFLIGHT`` from its config."""
        super().load_wsgi()
        self.tpool.max_inflight = int(self.wsgi.config["MAX_INFLIGHT"])
