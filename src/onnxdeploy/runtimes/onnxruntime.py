"""ONNX Runtime sessions: made with a CPU budget, run with errors mapped to ours (the default
runtime behind ``onnxdeploy.runtimes``).

Timing lives in ``measure/latency.py``: one place measures. Running a whole data set in batches
is the same for every runtime (``common.py``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import DataError, ModelLoadError, first_line
from .common import RUNNERS, SESSIONS, default_threads


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
        msg = first_line(exc)
        raise ModelLoadError(f"{name}: ONNX Runtime cannot load it: {msg}") from exc


@functools.lru_cache(maxsize=1)
def _quiet_run_options() -> ort.RunOptions:
    """Run options that keep ORT from logging a refused feed to stderr: the DataError says it once."""
    options = ort.RunOptions()
    options.log_severity_level = 4  # FATAL only; at 3 a rejected shape prints a coloured ERROR line
    return options


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run and return outputs by name; a feed the model rejects becomes DataError."""
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, feeds, _quiet_run_options())
    except (ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.RuntimeException,
            ValueError) as exc:  # ValueError: a missing or unknown input name
        msg = first_line(exc)
        raise DataError(f"the model rejected the input: {msg}") from exc
    return dict(zip(names, values))


RUNNERS["onnxruntime"] = run
