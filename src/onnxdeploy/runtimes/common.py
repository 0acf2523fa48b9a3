"""What every runtime shares: the session counter, the CPU budget, ``run`` dispatched to the
session's runtime, and a whole data set run in batches with each output joined along its own
batch axis.

A session says which runtime made it by a ``runtime`` attribute (ORT's sessions have none: they
are ``onnxruntime``); every session lists ``get_inputs()`` / ``get_outputs()`` as ORT's does
(``name``, ``shape``, ``type`` such as ``tensor(float)``) and runs as ``session.run(names, feeds)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from ..data import DataSet
from ..errors import DataError
from ..modelfile import TensorSpec, with_batch_axes

#: sessions made by this process, by model file (resolved path) or "<in-memory>": the pipeline
#: reports how many sessions each model got, so a step that loads a model twice shows up
SESSIONS: Counter[str] = Counter()


def session_counts() -> dict[str, int]:
    """How many sessions (any runtime) this process made per model file so far."""
    return dict(SESSIONS)


def default_threads() -> int:
    """Threads this process may use: its CPU affinity capped by the cgroup CPU limit, not the host's cores."""
    from ..environment import usable_cores

    return usable_cores()


def runtime_of(session) -> str:
    """``onnxruntime`` or ``openvino``: the runtime that made a session."""
    return getattr(session, "runtime", "onnxruntime")


#: each runtime module registers its ``run`` here when imported (a session exists only after
#: its runtime's module made it, so the one that ran it is always registered)
RUNNERS: dict[str, Callable[[Any, dict[str, np.ndarray]], dict[str, np.ndarray]]] = {}


def run(session, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run and return outputs by name; a feed the model rejects becomes DataError."""
    return RUNNERS[runtime_of(session)](session, feeds)


def output_specs(session) -> dict[str, TensorSpec]:
    """The session's outputs as TensorSpecs with their batch axes (shapes as the session reports
    them; every runtime's session lists its inputs and outputs the way ORT's does).

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
    session, data: DataSet, *, batch_size: int = 256,
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


def _run_batches(session, data: DataSet, batch_size: int,
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
