"""ONNX Runtime sessions: made with a CPU budget, run with errors mapped to ours (the default
runtime behind ``onnxdeploy.runtimes``).

Timing lives in ``measure/latency.py``: one place measures.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..data import DataSet
from ..errors import DataError, ModelLoadError, first_line
from ..modelfile import TensorSpec, with_batch_axes

#: sessions made by this process, by model file (resolved path) or "<in-memory>": the pipeline
#: reports how many sessions each model got, so a step that loads a model twice shows up
SESSIONS: Counter[str] = Counter()


def session_counts() -> dict[str, int]:
    """How many ORT sessions this process made per model file so far."""
    return dict(SESSIONS)


def default_threads() -> int:
    """Threads this process may use: its CPU affinity capped by the cgroup CPU limit, not the host's cores."""
    from ..environment import usable_cores

    return usable_cores()


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


def output_specs(session: ort.InferenceSession) -> dict[str, TensorSpec]:
    """The session's outputs as TensorSpecs with their batch axes (shapes as ORT reports them).

    Only shapes and kinds matter here: tensors get a placeholder object dtype.
    """
    def spec(arg) -> TensorSpec:
        kind = "tensor" if arg.type.startswith("tensor(") else arg.type.split("(")[0]
        kind = {"seq": "sequence"}.get(kind, kind)
        shape = tuple(arg.shape) if kind == "tensor" and isinstance(arg.shape, list) else None
        return TensorSpec(arg.name, np.dtype(object) if kind == "tensor" else None, shape, kind=kind)

    sig = with_batch_axes([spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()])
    return {s.name: s for s in sig.outputs}


def _join(spec: TensorSpec | None, chunks: list[np.ndarray], counts: list[int]) -> np.ndarray:
    """Join one output's per-batch values along the axis whose size follows the batch counts.

    The declared batch axis is tried first, then any axis not fixed in the signature (a
    sequence output's axis 0 is its samples). An output whose values do not follow the batch
    (a state without batch axis, a constant) keeps the first batch's value; a ragged one
    (detections of varying count) is joined along axis 0 so that nothing is dropped.
    """
    if len(chunks) == 1:
        return chunks[0]
    ndim = chunks[0].ndim
    declared = [] if spec is None or spec.batch_axis is None else [spec.batch_axis]
    for axis in dict.fromkeys([*declared, *range(ndim)]):
        if spec is not None and spec.shape is not None and axis < len(spec.shape) and spec.fixed(axis):
            continue
        if all(c.ndim == ndim and c.shape[axis] == n for c, n in zip(chunks, counts)):
            return np.concatenate(chunks, axis=axis)
    if all(c.shape == chunks[0].shape for c in chunks):
        return chunks[0]
    if ndim >= 1 and all(c.ndim == ndim and c.shape[1:] == chunks[0].shape[1:] for c in chunks):
        return np.concatenate(chunks, axis=0)
    return chunks[0]


def run_dataset(
    session: ort.InferenceSession, data: DataSet, *, batch_size: int = 256,
    specs: dict[str, TensorSpec] | None = None,
) -> dict[str, np.ndarray]:
    """Run the whole data set in batches; each output joined along its own batch axis.

    Outputs without one (a state fixed in shape, a constant) keep the first batch's value;
    non-tensor outputs (a ZipMap's list of dicts) become object arrays joined along samples.
    A model that cannot take ``batch_size`` samples at once (a state exported at batch 1) is
    run one sample at a time instead: the data is not at fault. ``specs`` are the output specs
    to join by (a variant is joined like its reference, whatever shapes its own file declares).
    """
    if batch_size > 1 and len(data) > 1 and not data.batch_sizes([batch_size]).usable:
        batch_size = 1
    try:
        return _run_batches(session, data, batch_size, specs)
    except DataError:
        if batch_size == 1 or len(data) == 1:
            raise
        try:
            run(session, data.slice(0, 2))
        except DataError:
            pass
        else:
            raise  # two samples at once work: the fault is elsewhere
        return _run_batches(session, data, 1, specs)


def _run_batches(session: ort.InferenceSession, data: DataSet, batch_size: int,
                 specs: dict[str, TensorSpec] | None = None) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    counts = []
    for (feeds, _), (start, stop) in zip(data.batches(batch_size), data.ranges(batch_size)):
        counts.append(stop - start)
        for name, value in run(session, feeds).items():
            parts.setdefault(name, []).append(_as_array(value))
    own = output_specs(session)
    if specs:
        # by position: a variant's outputs may be named apart from its reference's
        ref = list(specs.values())
        own = {name: ref[i] if i < len(ref) else own.get(name) for i, name in enumerate(own)}
    return {name: _join(own.get(name), chunks, counts) for name, chunks in parts.items()}


def _as_array(value) -> np.ndarray:
    """An ORT output as an array; a list of dicts (ZipMap) as a 1-D object array of dicts."""
    if isinstance(value, list):
        out = np.empty(len(value), dtype=object)
        out[:] = value
        return out
    return np.asarray(value)
