"""Running inference: directly, or with dynamic batching across concurrent requests.

With batching on, request threads put their feeds in a per-process queue and wait. One batch
thread takes the oldest request, gathers more until ``max_batch_size`` rows or until
``timeout_ms`` after the oldest request arrived, concatenates compatible requests along axis 0,
makes one ``session.run`` and hands each caller its own rows. Requests are compatible when they
have the same inputs with the same trailing shapes and dtypes; others wait for a later batch.
Models with an input lacking a batch axis are never merged.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .model import SessionHolder
from .validation import ApiError

log = logging.getLogger("onnxdeploy.serve")

#: how long a caller waits for its batch before giving up with 503 (a wedged batch thread)
RESULT_TIMEOUT_S = 120.0


@dataclass
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple
    enqueued: float
    done: threading.Event = field(default_factory=threading.Event)
    outputs: list[np.ndarray] | None = None
    error: BaseException | None = None


class Executor:
    """Runs feeds through the session, merging concurrent requests when batching is on."""

    def __init__(self, holder: SessionHolder, metrics, *, max_batch_size: int = 0,
                 timeout_ms: float = 2.0):
        self.holder = holder
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.timeout_s = max(0.0, timeout_ms) / 1e3
        self.batchable = max_batch_size > 1 and all(
            s.has_batch_axis for s in holder.info.signature.inputs)
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def infer(self, feeds: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
        """All outputs for these feeds, in graph order."""
        if (not self.batchable or rows >= self.max_batch_size
                or any(a.shape[0] != rows for a in feeds.values())):
            return self._run(feeds)
        item = _Pending(feeds, rows, _key(feeds), time.perf_counter())
        self._ensure_thread()
        with self._cond:
            self._queue.append(item)
            self._cond.notify()
        if not item.done.wait(RESULT_TIMEOUT_S):
            raise ApiError(503, "the batch did not run in time; retry later", {"Retry-After": "1"})
        if item.error is not None:
            raise item.error
        return item.outputs

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        t0 = time.perf_counter()
        try:
            return self.holder.run(feeds)
        finally:
            self.metrics.compute_seconds.observe(time.perf_counter() - t0)

    def _ensure_thread(self) -> None:
        # Threads do not survive fork: each worker starts its own batch thread.
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._cond:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._queue.clear()
                self._thread = threading.Thread(target=self._loop, name="onnxdeploy-batcher",
                                                daemon=True)
                self._pid = os.getpid()
                self._thread.start()

    def _take_batch(self) -> list[_Pending]:
        with self._cond:
            while not self._queue:
                self._cond.wait()
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            deadline = first.enqueued + self.timeout_s
            while rows < self.max_batch_size:
                fits = next((p for p in self._queue
                             if p.key == first.key and rows + p.rows <= self.max_batch_size), None)
                if fits is not None:
                    self._queue.remove(fits)
                    batch.append(fits)
                    rows += fits.rows
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            start = time.perf_counter()
            for p in batch:
                self.metrics.queue_seconds.observe(start - p.enqueued)
            self.metrics.batch_size.observe(sum(p.rows for p in batch))
            try:
                if len(batch) == 1:
                    batch[0].outputs = self._run(batch[0].feeds)
                else:
                    merged = {name: np.concatenate([p.feeds[name] for p in batch], axis=0)
                              for name in batch[0].feeds}
                    outputs = self._run(merged)
                    _split(batch, outputs)
            except BaseException as exc:  # every waiter must wake, whatever happened
                for p in batch:
                    p.error = exc
            for p in batch:
                p.done.set()


def _key(feeds: dict[str, np.ndarray]) -> tuple:
    return tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in feeds.items()))


def _split(batch: list[_Pending], outputs: list[np.ndarray]) -> None:
    total = sum(p.rows for p in batch)
    offsets = np.cumsum([0] + [p.rows for p in batch])
    for i, p in enumerate(batch):
        p.outputs = [
            out[offsets[i]:offsets[i + 1]] if out.ndim and out.shape[0] == total else out
            for out in outputs
        ]
