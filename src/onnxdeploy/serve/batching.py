"""Running inference: directly, or with dynamic batching across concurrent requests.

With batching on, one request at a time per process runs the session (the *runner*); the rest
queue. The policy (measured on 2 shared cores, docs/serve.md "Dynamic batching"):

- **the front's requests** (``infer_async``, from the worker's event loop, which parses and
  answers them itself) are run by one runner thread per process (``start``): a request that
  finds the runner idle wakes it and is run at once with whatever is waiting; one that finds it
  busy queues, and when the run ends the runner thread takes the oldest waiting request and
  every compatible one waiting by then (up to ``max_batch_size`` rows) into its next run. Each
  request costs one hand-off to the runner thread and one back into its loop (one call per
  batch and loop), however many are in flight: no thread per request;
- **a thread's requests** (``infer``: gRPC's handlers, Flask, the front's work lane while
  parsing is slow) join the same queue and batches: a thread that finds the runner idle runs at
  once in its own thread; one that finds it busy waits, and is answered by the batch that takes
  it, or woken to lead the next batch itself when it is the oldest waiting and the runner of
  the moment was a thread. A lone request is never held, and costs no hop it would not make
  with batching off; one that finds the runner idle, nothing queued and no other request of
  its process in flight runs at once without a queue entry (``run_lone``, ``_try_lone``),
  counted as any batch;
- **waiting for more** (holding a batch up to ``timeout_ms`` once the runner is free) happens
  only where it is measured to pay: ``expect`` (entered by the request path around each view)
  tells the executor how many requests of this process are in flight and how many of those are
  still being parsed (on their way to it). The runner holds while some other request is in
  flight and the expected wait for the next arrival (the measured time from entering a view to
  reaching the executor when one is on its way, else the measured gap between arrivals) is
  shorter than the fixed cost of a run (the intercept of the measured run time against rows):
  one more request in this batch then saves more than it costs. A lone request (nothing else in
  flight in the process) never waits.
- ``hold="always"`` (``--batch-hold always``) holds every batch until it is full or
  ``timeout_ms`` passed, as a fixed queue delay does: a request then takes the timeout even
  alone; for clients that prefer full batches to latency, and for tests that need requests
  held in flight for a known time.

``counts`` records each batch's way: ``alone`` (ran at once, nothing waiting), ``gathered`` (took
what was waiting), ``held`` (waited for more); exported as ``onnxdeploy_batches_total{how}``,
with the protocols a batch held (``http``, ``grpc``, ``grpc+http``: see ``protocol``) in
``onnxdeploy_batch_protocols_total``.

Merging: compatible requests are concatenated along each input's own batch axis
(``state [2, batch, 128]`` along axis 1), run once, and each caller gets its own rows, split
along each output's batch axis. Requests are compatible when their batched inputs have the same
dtypes and the same sizes off the batch axis, and their inputs without a batch axis (a 0-d flag,
a sample rate) are equal, byte for byte: those are passed through once. Others wait for a later
batch. A model with no batch axis is never merged.

Text requests (``padded=True``: token feeds from the worker's TextEncoder) merge whatever their
sequence lengths: the batch is padded on the right to its longest sequence (``pad_feeds``,
the pad id on ``input_ids``, 0 on masks and type ids), and each caller's rows of an output that
runs along the sequence (``last_hidden_state [batch, sequence, hidden]``) are cut back to the
length its own request had, so a caller gets what an unbatched run would have given it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..modelfile import dim_name, is_fixed_dim
from ..tokenizer import pad_feeds
from .model import SessionHolder
from .validation import ApiError

log = logging.getLogger("onnxdeploy.serve")

#: how long a caller waits for its batch before giving up with 503 (a wedged runner)
RESULT_TIMEOUT_S = 120.0
#: weight of a new observation in the moving averages of arrival gaps and run costs
EWMA = 0.05

#: the batch-hold policies (see the module docstring)
HOLDS = ("adaptive", "always")

_origin = threading.local()
_NOTHING = contextlib.nullcontext()


@contextlib.contextmanager
def protocol(name: str) -> Iterator[None]:
    """Requests made by this thread inside the block are counted under ``name`` in
    ``onnxdeploy_batch_protocols_total`` (outside any block: ``http``)."""
    previous = getattr(_origin, "name", "http")
    _origin.name = name
    try:
        yield
    finally:
        _origin.name = previous


@dataclass(eq=False)  # identity: deque.remove must never compare the feeds' arrays
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple
    enqueued: float
    length: int | None = None  # a text request's own sequence length (padded merges)
    protocol: str = "http"
    done: threading.Event | None = None  # a thread's request that queued: woken by this
    outputs: list[np.ndarray] | None = None
    error: BaseException | None = None
    lead: bool = False  # woken to run the next batch (not with its result)
    counted: bool = False  # its request is inside ``expect`` (counted in flight)
    future: object = None  # an event loop's caller (``infer_async``): resolved in its loop
    loop: object = None
    timer: object = None  # its loop's RESULT_TIMEOUT_S timer


class Ticket:
    """One request on its way to the executor (``Executor.expect``): counted in flight until
    it leaves, and "coming" until it reaches ``infer``/``infer_async``."""

    __slots__ = ("entered", "arrived")

    def __init__(self, entered: float):
        self.entered = entered
        self.arrived = False


class _Expect:
    """``Executor.expect``'s context manager (a class: cheaper than a generator's, per request)."""

    __slots__ = ("executor", "ticket")

    def __init__(self, executor: Executor):
        self.executor, self.ticket = executor, None

    def __enter__(self) -> Ticket:
        self.ticket = self.executor._enter()
        return self.ticket

    def __exit__(self, *exc) -> None:
        self.executor._leave(self.ticket)


class CostModel:
    """Run time against rows, ``t = fixed + per_row * rows``, from exponentially weighted sums
    (a weighted least-squares line that follows the recent runs)."""

    def __init__(self, weight: float = EWMA):
        self.weight = weight
        self.n = self.x = self.y = self.xx = self.xy = 0.0

    def add(self, rows: int, seconds: float) -> None:
        k = 1.0 - self.weight
        self.n = self.n * k + 1.0
        self.x = self.x * k + rows
        self.y = self.y * k + seconds
        self.xx = self.xx * k + rows * rows
        self.xy = self.xy * k + rows * seconds

    @property
    def fixed(self) -> float | None:
        """The cost of a run whatever its rows (None until runs of two sizes were seen)."""
        if self.n == 0:
            return None
        var = self.xx / self.n - (self.x / self.n) ** 2
        if var <= 1e-9:
            return None
        slope = (self.xy / self.n - self.x * self.y / self.n ** 2) / var
        return max(0.0, self.y / self.n - max(0.0, slope) * self.x / self.n)


class Executor:
    """Runs feeds through the session, merging concurrent requests when batching is on."""

    def __init__(self, holder: SessionHolder, metrics, *, max_batch_size: int = 0,
                 timeout_ms: float = 2.0, hold: str = "adaptive"):
        if hold not in HOLDS:
            raise ValueError(f"hold={hold!r}; expected one of {', '.join(HOLDS)}")
        self.hold = hold
        self.holder = holder
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.timeout_s = max(0.0, timeout_ms) / 1e3
        sig = holder.info.signature
        self.axes = {s.name: s.batch_axis for s in sig.inputs}
        self.out_axes = [s.batch_axis for s in sig.outputs]
        self.batchable = max_batch_size > 1 and sig.batched
        text = holder.info.text
        self.pad_id = text.pad_id if text is not None else 0
        self.text_inputs = text.inputs if text is not None else ()
        self.seq_axes = _sequence_axes(sig) if text is not None else []
        # one lock, two conditions: ``_cond`` for a runner holding its batch (and ``paused``,
        # ``close``), ``_wake`` for the runner thread waiting for work. Waking a thread costs a
        # futex call and a GIL hand-off: a request wakes the runner thread only when it hands it
        # work, and a holding runner only when one is holding (``_holding``).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake = threading.Condition(self._lock)
        self._holding = 0
        self._queue: collections.deque[_Pending] = collections.deque()
        self._busy = False  # a thread is running (or gathering) a batch
        self._next: _Pending | None = None  # handed to the runner thread to lead
        self._thread: threading.Thread | None = None  # the runner thread (``start``)
        self._closing = False
        self._inview = 0  # requests inside ``expect`` (in flight in this process)
        self._coming = 0  # of those, the ones that have not reached ``infer`` yet
        self.costs = CostModel()
        self.lead_s: float | None = None  # moving average: entering the view -> reaching infer
        self.gap_s: float | None = None  # moving average: time between arrivals
        self.run_s: float | None = None  # moving average: a session run's duration
        # moving average: the duration of a run of one request alone (what running a request
        # inline would cost: the front's inline decision; batches' runs would overstate it)
        self.lone_s: float | None = None
        self._last_arrival: float | None = None
        self.counts: collections.Counter[str] = collections.Counter()
        self._batches = {}
        self._mixes = {}
        # a lone request may skip the queue (``infer``) only where a batch of one that finds
        # nothing waiting is never held: the adaptive hold (it holds only for another request
        # in flight), or no hold at all
        self._lone_free = hold == "adaptive" or self.timeout_s <= 0

    # ------------------------------------------------------------------ callers

    def infer(self, feeds: dict[str, np.ndarray], rows: int, *, padded: bool = False,
              ticket: Ticket | None = None) -> list[np.ndarray]:
        """All outputs for these feeds, in graph order, run in the calling thread or by the
        runner of the moment (see the module docstring).

        ``padded``: the feeds are a text request's tokens ``[rows, length]``, right-padded, which
        may merge with other text requests of any length (see the module docstring).
        ``ticket``: the request's ``expect`` ticket (None: a request the executor was not told
        of, e.g. with batching off).
        """
        if not self.batchable or rows >= self.max_batch_size or not self._uniform(feeds, rows):
            self._alone_unmerged(ticket)
            return self._run(feeds)
        if self._lone_free:
            outputs = self._try_lone(feeds, rows, ticket)
            if outputs is not None:
                return outputs
        item = self._item(feeds, rows, padded, ticket)
        with self._cond:
            self._arrive(item, ticket)
            if self._busy:
                item.done = threading.Event()  # made only for a request that waits
                self._queue.append(item)
                if self._holding:
                    self._cond.notify_all()  # a runner holding for more sees it
                lead = False
            else:
                self._busy = lead = True
        if not lead:
            if not item.done.wait(RESULT_TIMEOUT_S):
                with self._cond:
                    queued = item in self._queue
                    if queued:
                        self._queue.remove(item)
                if queued:
                    raise _late()
                item.done.wait()  # taken into a batch, or made the next leader: never dropped
            if not item.lead:  # another thread ran it
                if item.error is not None:
                    raise item.error
                return item.outputs
        batch = [item]
        try:
            batch = self._gather(item)
            self._execute(batch)
        finally:
            # idle (or handed over) before the callers wake: a caller's next request must find
            # the runner free, not be queued behind a runner about to finish
            self._hand_over()
            self._finish(batch, item)
        if item.error is not None:
            raise item.error
        return item.outputs

    def run_lone(self, feeds: dict[str, np.ndarray], rows: int, *, padded: bool = False,
                 ticket: Ticket | None = None) -> list[np.ndarray] | None:
        """``infer`` in this thread for a request that would run at once and alone (the runner
        idle, nothing queued, no other request of this process in flight, and a lone request
        never held): its outputs. Otherwise None, and nothing was done: the caller hands the
        request over (the front's event loop, which must never wait for a batch)."""
        if not self.batchable or rows >= self.max_batch_size or not self._uniform(feeds, rows):
            with self._cond:  # never merged: at once, unless the runner has work (its turn)
                if self._busy or self._queue:
                    return None
            self._alone_unmerged(ticket)
            return self._run(feeds)
        return self._try_lone(feeds, rows, ticket) if self._lone_free else None

    def quiet(self) -> bool:
        """A hint, read without the lock: no run, nothing queued, no request in flight (the
        front's inline path; ``run_lone`` decides under the lock)."""
        return not self._busy and not self._inview and not self._queue

    def infer_async(self, feeds: dict[str, np.ndarray], rows: int, loop, *,
                    padded: bool = False, ticket: Ticket | None = None):
        """``infer`` for a caller in an event loop (the front): an ``asyncio`` future of the
        outputs, run by the executor's runner thread (``start``) with whatever is waiting, and
        resolved in ``loop``: the caller's thread never blocks, and a request costs one hand-off
        to the runner and one back."""
        if self._thread is None:
            self.start()
        future = loop.create_future()
        item = self._item(feeds, rows, padded, ticket)
        if item is None:  # not mergeable: run alone by the runner, in turn
            item = _Pending(feeds, rows, (object(),), time.perf_counter())
        item.future, item.loop = future, loop
        with self._cond:
            self._arrive(item, ticket)
            if self._busy:
                self._queue.append(item)
                if self._holding:
                    self._cond.notify_all()  # a runner holding for more sees it
            else:
                self._busy = True
                self._next = item
                self._wake.notify()  # the runner thread leads it
        item.timer = loop.call_later(RESULT_TIMEOUT_S, self._expire, item)
        return future

    def expect(self) -> contextlib.AbstractContextManager:
        """Around a request's view: while it is parsed, the runner knows one more request is on
        its way (and may hold a batch for it, see the module docstring). Yields the request's
        ``Ticket`` for ``infer``/``infer_async`` (None with batching off: costs nothing)."""
        return _Expect(self) if self.batchable else _NOTHING

    def _enter(self) -> Ticket:
        ticket = Ticket(time.perf_counter())
        with self._lock:
            self._coming += 1
            self._inview += 1
        return ticket

    def _leave(self, ticket: Ticket) -> None:
        with self._lock:
            if not ticket.arrived:  # refused before reaching infer
                ticket.arrived = True
                self._coming -= 1
            self._inview -= 1
            if self._holding:
                self._cond.notify_all()  # a holding runner re-decides

    def in_flight(self) -> tuple[int, int]:
        """(requests inside ``expect``, of those not at the executor yet)."""
        with self._cond:
            return self._inview, self._coming

    def idle(self) -> bool:
        """No run in progress and nothing queued or on its way (a request made now runs at once
        and alone, without waiting: what the front's inline path needs)."""
        with self._cond:
            return not self._busy and not self._queue and not self._coming

    def waiting(self) -> int:
        """Requests queued for the runner now."""
        with self._cond:
            return len(self._queue)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the runner as a run in progress would: requests made meanwhile queue, and are
        gathered when the block ends (tests use it to make "busy" certain, not timed)."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            self._hand_over()

    def start(self) -> None:
        """Start the runner thread that ``infer_async``'s requests are run by (idempotent)."""
        with self._cond:
            if self._thread is not None:
                return
            self._closing = False
            self._thread = threading.Thread(target=self._serve, name="serve-runner", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the runner thread once every request handed to it was answered."""
        with self._cond:
            thread = self._thread
            self._closing = True
            self._wake.notify_all()
        if thread is not None:
            thread.join()
        self._thread = None

    # ------------------------------------------------------------------ the runner

    def _alone_unmerged(self, ticket: Ticket | None) -> None:
        """A request that may not merge reached the executor: no longer on its way."""
        if ticket is not None and not ticket.arrived:
            with self._cond:
                ticket.arrived = True
                self._coming -= 1

    def _item(self, feeds, rows: int, padded: bool, ticket: Ticket | None) -> _Pending | None:
        """The queue entry of a request that may merge (None: it runs alone, at once)."""
        if not self.batchable or rows >= self.max_batch_size or not self._uniform(feeds, rows):
            self._alone_unmerged(ticket)
            return None
        now = time.perf_counter()
        if padded:
            length = int(feeds[self.text_inputs[0]].shape[1])
            item = _Pending(feeds, rows, ("text",), now, length)
        else:
            item = _Pending(feeds, rows, self._key(feeds), now)
        item.protocol = getattr(_origin, "name", "http")
        return item

    def _arrive(self, item: _Pending, ticket: Ticket | None) -> None:
        """Record an arrival (lock held): the gap since the last one, the lead from the view."""
        item.counted = self._arrived(item.enqueued, ticket)

    def _arrived(self, now: float, ticket: Ticket | None) -> bool:
        """``_arrive`` for a request at ``now``: whether it is counted in flight (lock held)."""
        if self._last_arrival is not None:
            gap = now - self._last_arrival
            self.gap_s = gap if self.gap_s is None else self.gap_s + (gap - self.gap_s) * EWMA
        self._last_arrival = now
        if ticket is None:
            return False
        if not ticket.arrived:
            ticket.arrived = True
            self._coming -= 1
            lead = now - ticket.entered
            self.lead_s = lead if self.lead_s is None else self.lead_s + (lead - self.lead_s) * EWMA
        return True

    def _try_lone(self, feeds: dict[str, np.ndarray], rows: int,
                  ticket: Ticket | None) -> list[np.ndarray] | None:
        """Run a request that may merge at once in this thread when it would be a batch of
        itself alone (the runner idle, nothing queued and no other request of this process in
        flight: ``_gather`` would neither find nor hold for anything), without its queue entry
        and its bookkeeping; else None (nothing done). Only where a lone batch is never held
        (``_lone_free``)."""
        now = time.perf_counter()
        with self._cond:
            if self._busy or self._queue or self._inview > (ticket is not None):
                return None
            self._busy = True
            self._arrived(now, ticket)
        return self._run_lone(feeds, rows)

    def _run_lone(self, feeds: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
        """Run a lone request at once in this thread (the runner taken by the caller): what
        ``_gather`` and ``_execute`` do for a batch of one that finds nothing waiting, counted
        the same (``alone``, its protocol, its rows, a queue time of 0: it never queued)."""
        try:
            self._count("alone")
            self._observe_lone(rows)
            start = time.perf_counter()
            outputs = self._run(feeds, lone=True)
            self.costs.add(rows, time.perf_counter() - start)
            return outputs
        finally:
            self._hand_over()

    def _serve(self) -> None:
        """The runner thread: leads each batch handed to it, then the next, until closed."""
        while True:
            with self._cond:
                while self._next is None and not (self._closing and not self._busy):
                    self._wake.wait()
                item, self._next = self._next, None
            if item is None:
                return
            while item is not None:
                batch = [item]
                try:
                    batch = self._gather(item)
                    self._execute(batch)
                except BaseException:  # pragma: no cover - _execute keeps errors per request
                    log.exception("the batch runner failed")
                # idle (or the next batch's lead taken) before the callers' loops wake: a
                # client's next request then finds the runner free and may run inline, instead
                # of queueing behind a runner thread still waiting for the GIL to finish
                nxt = self._hand_over(runner=True)
                self._finish(batch, None)
                item = nxt

    def _hand_over(self, runner: bool = False) -> _Pending | None:
        """The run is over: the oldest waiting request leads the next batch, else idle. Called
        by the runner thread (``runner``), that request is returned for it to lead."""
        with self._cond:
            nxt = self._queue.popleft() if self._queue else None
            if nxt is None:
                self._busy = False
                self._cond.notify_all()  # paused() may be waiting for an idle runner
                if self._closing:
                    self._wake.notify_all()  # and close() for the runner thread to end
                return None
            if runner:
                return nxt
            if nxt.future is not None:  # an event loop's request: the runner thread leads it
                self._next = nxt
                self._wake.notify()
                return None
        nxt.lead = True
        nxt.done.set()
        return None

    def _finish(self, batch: list[_Pending], me: _Pending | None) -> None:
        """Wake every caller of ``batch`` but ``me``; an event loop's callers with one call into
        their loop per batch."""
        loops: dict = {}
        for p in batch:
            if p is me:
                continue
            if p.future is None:
                p.done.set()
            else:
                loops.setdefault(p.loop, []).append(p)
        for loop, items in loops.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # the loop is closed: the worker is stopping, nobody waits
                pass

    def _expire(self, item: _Pending) -> None:
        """In the caller's loop, ``RESULT_TIMEOUT_S`` after ``infer_async``: a request still
        queued then is answered 503 (a wedged runner); one taken into a batch is answered."""
        with self._cond:
            queued = item in self._queue
            if queued:
                self._queue.remove(item)
        if queued and not item.future.done():
            item.future.set_exception(_late())

    def _gather(self, first: _Pending) -> list[_Pending]:
        """``first`` and the compatible requests waiting now; more only where waiting pays."""
        with self._cond:
            batch, rows = [first], first.rows
            rows = self._take(first, batch, rows)
            how = "alone" if len(batch) == 1 else "gathered"
            deadline = time.perf_counter() + self.timeout_s  # holding, not queueing behind a run
            while rows < self.max_batch_size and self._wait_pays(batch):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                if how != "held":  # counted as the hold starts
                    how = "held"
                    self._count(how)
                self._holding += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._holding -= 1
                rows = self._take(first, batch, rows)
        if how != "held":
            self._count(how)
        return batch

    def _count(self, how: str) -> None:
        self.counts[how] += 1
        try:
            counter = self._batches.get(how)
            if counter is None and self.metrics.batches is not None:
                counter = self._batches[how] = self.metrics.batches.labels(how)
            if counter is not None:
                counter.inc()
        except Exception:  # pragma: no cover - metrics must never break an answer
            log.exception("could not count a batch")

    def _take(self, first: _Pending, batch: list[_Pending], rows: int) -> int:
        """Move the waiting requests compatible with ``first`` into ``batch`` (lock held)."""
        for p in list(self._queue):
            if rows >= self.max_batch_size:
                break
            if p.key == first.key and rows + p.rows <= self.max_batch_size:
                self._queue.remove(p)
                batch.append(p)
                rows += p.rows
        return rows

    def _wait_pays(self, batch: list[_Pending]) -> bool:
        """Whether holding ``batch`` for one more request is expected to save time (lock held):
        some other request is in flight in this process, and the expected wait for it (the
        measured lead from view to executor when one is on its way, else the measured gap
        between arrivals) is shorter than a run's measured fixed cost. Nothing measured yet:
        no."""
        if self.timeout_s <= 0:
            return False
        if self.hold == "always":
            return True
        if self._inview <= sum(1 for p in batch if p.counted):
            return False
        fixed = self.costs.fixed
        wait = self.lead_s if self._coming > 0 else self.gap_s
        return fixed is not None and wait is not None and wait < fixed

    def _execute(self, batch: list[_Pending]) -> None:
        start = time.perf_counter()
        rows = sum(p.rows for p in batch)
        try:
            self._observe(batch, start, rows)
            if len(batch) == 1:
                batch[0].outputs = self._run(batch[0].feeds, lone=True)
            elif batch[0].length is not None:
                merged, _ = pad_feeds([p.feeds for p in batch], pad_id=self.pad_id)
                outputs = self._run(merged)
                _split(batch, outputs, self.out_axes)
                _trim(batch, self.seq_axes, int(merged[self.text_inputs[0]].shape[1]))
            else:
                merged = {}
                for name, first in batch[0].feeds.items():
                    axis = self.axes.get(name)
                    merged[name] = first if axis is None else np.concatenate(
                        [p.feeds[name] for p in batch], axis=axis)
                outputs = self._run(merged)
                _split(batch, outputs, self.out_axes)
            self.costs.add(rows, time.perf_counter() - start)
        except BaseException as exc:  # every waiter must wake, whatever happened (_finish)
            for p in batch:
                p.error = exc

    def _observe_lone(self, rows: int) -> None:
        """``_observe`` for a batch of one request that never queued (a queue time of 0)."""
        self._record((0.0,), rows, getattr(_origin, "name", "http"))

    def _observe(self, batch: list[_Pending], start: float, rows: int) -> None:
        self._record([start - p.enqueued for p in batch], rows,
                     "+".join(sorted({p.protocol for p in batch})))

    def _record(self, waits, rows: int, mix: str) -> None:
        """A batch's metrics: each request's queue time, its rows, its protocol mix."""
        metrics = self.metrics
        try:
            for wait in waits:
                metrics.queue_seconds.observe(wait)
            metrics.batch_size.observe(rows)
            counter = self._mixes.get(mix)
            if counter is None and metrics.batch_protocols is not None:
                counter = self._mixes[mix] = metrics.batch_protocols.labels(mix)
            if counter is not None:
                counter.inc()
        except Exception:  # pragma: no cover - metrics must never break an answer
            log.exception("could not count a batch")

    # ------------------------------------------------------------------ helpers

    def _uniform(self, feeds: dict[str, np.ndarray], rows: int) -> bool:
        """Every batched input carries ``rows`` along its batch axis (else run it alone)."""
        for name, arr in feeds.items():
            axis = self.axes.get(name)
            if axis is not None and (axis >= arr.ndim or arr.shape[axis] != rows):
                return False
        return True

    def _key(self, feeds: dict[str, np.ndarray]) -> tuple:
        """Requests with equal keys can share a run."""
        parts = []
        for name in sorted(feeds):
            arr, axis = feeds[name], self.axes.get(name)
            if axis is None:  # passed through once: every request must send the same value
                parts.append((name, arr.dtype.str, arr.shape, arr.tobytes()))
            else:
                parts.append((name, arr.dtype.str, arr.shape[:axis] + arr.shape[axis + 1:]))
        return tuple(parts)

    def _run(self, feeds: dict[str, np.ndarray], lone: bool = False) -> list[np.ndarray]:
        t0 = time.perf_counter()
        try:
            return self.holder.run(feeds)
        finally:
            took = time.perf_counter() - t0
            self.metrics.compute_seconds.observe(took)
            run_s = self.run_s
            self.run_s = took if run_s is None else run_s + (took - run_s) * EWMA
            if lone:
                lone_s = self.lone_s
                self.lone_s = took if lone_s is None else lone_s + (took - lone_s) * EWMA


def _late() -> ApiError:
    return ApiError(503, "the batch did not run in time; retry later", {"Retry-After": "1"})


def _settle(items: list[_Pending]) -> None:
    """In an event loop: resolve the futures of its requests that a batch answered."""
    for p in items:
        p.timer.cancel()
        if not p.future.done():  # the caller may have gone (cancelled)
            if p.error is not None:
                p.future.set_exception(p.error)
            else:
                p.future.set_result(p.outputs)


def _split(batch: list[_Pending], outputs: list[np.ndarray], axes: list[int | None]) -> None:
    """Each caller's rows of every output, along the output's batch axis.

    An output whose batch axis is unknown is split along axis 0 when that axis has the merged
    row count; an output without the merged rows on its axis (a pooled value) goes whole to each.
    """
    total = sum(p.rows for p in batch)
    offsets = np.cumsum([0] + [p.rows for p in batch])
    for i, p in enumerate(batch):
        outs = []
        for out, axis in zip(outputs, axes + [None] * (len(outputs) - len(axes))):
            axis = 0 if axis is None else axis
            if out.ndim > axis and out.shape[axis] == total:
                index = [slice(None)] * out.ndim
                index[axis] = slice(offsets[i], offsets[i + 1])
                outs.append(out[tuple(index)])
            else:
                outs.append(out)
        p.outputs = outs


def _sequence_axes(sig) -> list[list[tuple[int, bool]]]:
    """Per output, ``(axis, named)`` for the axes that may run along the token sequence.

    An axis whose dim is named like a non-batch dim of the token inputs (``sequence``) does
    (``named``); a dynamic axis without a name (``-1``, ``?``) may, and ``_trim`` cuts it only
    when it has the merged length. Fixed axes and the batch axis never do.
    """
    seq_names = {dim_name(d) for s in sig.inputs for axis, d in enumerate(s.shape or ())
                 if axis != s.batch_axis and dim_name(d) is not None}
    out = []
    for spec in sig.outputs:
        axes = []
        for axis, dim in enumerate(spec.shape or ()):
            if axis == spec.batch_axis or is_fixed_dim(dim):
                continue
            name = dim_name(dim)
            if name is None or name in seq_names:
                axes.append((axis, name is not None))
        out.append(axes)
    return out


def _trim(batch: list[_Pending], seq_axes: list[list[tuple[int, bool]]], merged_length: int) -> None:
    """Cut each caller's sequence-long outputs back to its own request's length."""
    for p in batch:
        if p.length == merged_length:
            continue
        outs = []
        for out, axes in zip(p.outputs, seq_axes + [[]] * (len(p.outputs) - len(seq_axes))):
            index = [slice(None)] * out.ndim
            for axis, named in axes:
                if axis < out.ndim and (named or out.shape[axis] == merged_length):
                    index[axis] = slice(0, p.length)
            outs.append(out[tuple(index)])
        p.outputs = outs
