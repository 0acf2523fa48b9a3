"""ONNX Runtime sessions: made with a CPU budget, run with errors mapped to ours.

Timing lives in ``measure/latency.py``: one place measures.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .data import DataSet
from .errors import DataError, ModelLoadError

#: sessions made by this process, by model file (resolved path) or "<in-memory>": the pipeline
#: reports how many sessions each model got, so a step that loads a model twice shows up
SESSIONS: Counter[str] = Counter()


def session_counts() -> dict[str, int]:
    """How many ORT sessions this process made per model file so far."""
    return dict(SESSIONS)


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
        SESSIONS["<in-memory>"] += 1
    else:
        source, name = str(model), Path(model).name
        SESSIONS[str(Path(model).resolve())] += 1
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
