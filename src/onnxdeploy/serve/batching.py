"""Running inference: directly, or with dynamic batching across concurrent requests.

With batching on, request threads put their feeds in a per-process queue and wait. One batch
thread takes the oldest request, gathers more until ``max_batch_size`` rows or until
``timeout_ms`` after the oldest request arrived, concatenates compatible requests along each
input's own batch axis (``state [2, batch, 128]`` along axis 1), makes one ``session.run`` and
hands each caller its own rows, split along each output's batch axis. Requests are compatible
when their batched inputs have the same dtypes and the same sizes off the batch axis, and their
inputs without a batch axis (a 0-d flag, a sample rate) are equal, byte for byte: those are
passed through once. Others wait for a later batch. A model with no batch axis is never merged.

Text requests (``padded=True``: token feeds from the worker's TextEncoder) merge whatever their
sequence lengths: the batch is padded on the right to its longest sequence (``pad_feeds``,
the pad id on ``input_ids``, 0 on masks and type ids), and each caller's rows of an output that
runs along the sequence (``last_hidden_state [batch, sequence, hidden]``) are cut back to the
length its own request had, so a caller gets what an unbatched run would have given it.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..modelfile import dim_name, is_fixed_dim
from ..tokenizer import pad_feeds
from .model import SessionHolder
from .validation import ApiError

log = logging.getLogger("onnxdeploy.serve")

#: how long a caller waits for its batch before giving up with 503 (a wedged batch thread)
RESULT_TIMEOUT_S = 120.0


@dataclass(eq=False)  # identity: deque.remove must never compare the feeds' arrays
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple
    enqueued: float
    length: int | None = None  # a text request's own sequence length (padded merges)
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
        sig = holder.info.signature
        self.axes = {s.name: s.batch_axis for s in sig.inputs}
        self.out_axes = [s.batch_axis for s in sig.outputs]
        self.batchable = max_batch_size > 1 and sig.batched
        text = holder.info.text
        self.pad_id = text.pad_id if text is not None else 0
        self.text_inputs = text.inputs if text is not None else ()
        self.seq_axes = _sequence_axes(sig) if text is not None else []
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def infer(self, feeds: dict[str, np.ndarray], rows: int, *, padded: bool = False
              ) -> list[np.ndarray]:
        """All outputs for these feeds, in graph order.

        ``padded``: the feeds are a text request's tokens ``[rows, length]``, right-padded, which
        may merge with other text requests of any length (see the module docstring).
        """
        if not self.batchable or rows >= self.max_batch_size or not self._uniform(feeds, rows):
            return self._run(feeds)
        if padded:
            length = int(feeds[self.text_inputs[0]].shape[1])
            item = _Pending(feeds, rows, ("text",), time.perf_counter(), length)
        else:
            item = _Pending(feeds, rows, self._key(feeds), time.perf_counter())
        self._ensure_thread()
        with self._cond:
            self._queue.append(item)
            self._cond.notify()
        if not item.done.wait(RESULT_TIMEOUT_S):
            raise ApiError(503, "the batch did not run in time; retry later", {"Retry-After": "1"})
        if item.error is not None:
            raise item.error
        return item.outputs

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
            except BaseException as exc:  # every waiter must wake, whatever happened
                for p in batch:
                    p.error = exc
            for p in batch:
                p.done.set()


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
