"""ONNX Runtime sessions and in-process timing, shared by every step that runs a model."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .data import DataSet
from .errors import DataError, ModelLoadError

DEFAULT_LATENCY_ROUNDS = 5
DEFAULT_LATENCY_ITERS = 20


def default_threads() -> int:
    """Threads this process may use: its CPU affinity, not the host's core count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def make_session(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    threads: int | None = None,
    optimization: str = "all",
    optimized_model_path: str | os.PathLike | None = None,
    spinning: bool | None = None,
) -> ort.InferenceSession:
    """An ORT CPU session; errors become ModelLoadError naming the model.

    ``spinning`` (ORT's ``session.intra_op.allow_spinning``) defaults to off when the session has
    more than one intra-op thread: on a small shared CPU an idle session's spinning pool thread
    takes a core from whichever session runs next, and two identical models timed side by side
    here came out 0.17 ms and 0.32 ms a run at random; with spinning off they agree within 2%.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    if spinning is None:
        spinning = opts.intra_op_num_threads == 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if optimized_model_path is not None:
        opts.optimized_model_filepath = str(optimized_model_path)
    if isinstance(model, onnx.ModelProto):
        source, name = model.SerializeToString(), "model"
    else:
        source, name = str(model), Path(model).name
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{name}: ONNX Runtime cannot load it: {msg}") from exc


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run and return outputs by name; a feed the model rejects becomes DataError."""
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, feeds)
    except (ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.RuntimeException) as exc:
        msg = str(exc).strip().splitlines()[0]
        raise DataError(f"the model rejected the input: {msg}") from exc
    return dict(zip(names, values))


def run_dataset(
    session: ort.InferenceSession, data: DataSet, *, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Run the whole data set in batches; outputs concatenated along the batch axis."""
    parts: dict[str, list[np.ndarray]] = {}
    for feeds, _ in data.batches(batch_size):
        for name, value in run(session, feeds).items():
            parts.setdefault(name, []).append(np.asarray(value))
    out = {}
    for name, chunks in parts.items():
        if len(chunks) == 1 or any(c.ndim == 0 for c in chunks):
            out[name] = chunks[0] if len(chunks) == 1 else np.stack(chunks)
        else:
            out[name] = np.concatenate(chunks, axis=0)
    return out


def time_session(
    session: ort.InferenceSession, feeds: dict[str, np.ndarray], *, iters: int
) -> float:
    """Median milliseconds of ``iters`` runs of the same feeds."""
    names = [o.name for o in session.get_outputs()]
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        session.run(names, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


#: each timed round of a session lasts at least this long, so a model that answers in 20 µs is
#: timed over hundreds of runs instead of 20 (a handful of runs is mostly scheduler noise)
MIN_ROUND_MS = 15.0
MAX_ITERS = 5000


def _iters_for(session: ort.InferenceSession, feeds: dict[str, np.ndarray], iters: int,
               min_round_ms: float) -> int:
    """Iterations per round: at least ``iters`` and enough to last ``min_round_ms``."""
    single = time_session(session, feeds, iters=3)
    if single <= 0:
        return iters
    return int(min(MAX_ITERS, max(iters, np.ceil(min_round_ms / single))))


def ab_latency(
    sessions: Sequence[ort.InferenceSession],
    feeds: dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]],
    *,
    rounds: int = DEFAULT_LATENCY_ROUNDS,
    iters: int = DEFAULT_LATENCY_ITERS,
    min_round_ms: float = MIN_ROUND_MS,
) -> list[float]:
    """Median ms per run of each session, measured alternately (A, B, A, B ...) so drift hits all.

    ``feeds`` is one dict for all sessions or one per session (models may name inputs apart).
    Each round times each session over at least ``iters`` runs and at least ``min_round_ms``
    after a warm-up; the result is the median across rounds of the per-round medians.
    """
    per = list(feeds) if isinstance(feeds, (list, tuple)) else [feeds] * len(sessions)
    for s, f in zip(sessions, per):
        run(s, f)  # warm-up, and a clear error if the feeds do not fit
    counts = [_iters_for(s, f, iters, min_round_ms) for s, f in zip(sessions, per)]
    results: list[list[float]] = [[] for _ in sessions]
    for r in range(rounds):
        order = range(len(sessions)) if r % 2 == 0 else reversed(range(len(sessions)))
        for i in order:
            results[i].append(time_session(sessions[i], per[i], iters=counts[i]))
    return [statistics.median(r) for r in results]
