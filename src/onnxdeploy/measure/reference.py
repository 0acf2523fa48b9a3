"""The reference of a run: the float model's data, session, outputs and labels, built once.

Every step that judges a variant (quantize's choice, optimize's proof, compare, the pipeline's
summary) takes the same ``Reference`` instead of loading the float model and running it again.
Standalone commands build their own; the pipeline builds one and hands it on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataSet, load_data
from ..errors import OptionError
from ..modelfile import Signature, load_model, metadata, signature
from ..outputkinds import task_of
from ..runtimes import make_session, run, run_dataset
from .latency import DEFAULT_LATENCY_BATCH
from .numeric import TASKS, accuracy, output_kinds


@dataclass
class Reference:
    """The float model as every comparison sees it."""

    path: Path
    signature: Signature
    meta: dict[str, str]
    task: str | None
    data: DataSet
    session: Any
    outputs: dict[str, Any]
    kinds: dict[str, str]
    threads: int | None
    latency_batch: int = DEFAULT_LATENCY_BATCH
    _control: Any = field(default=None, repr=False)
    _plain: dict[str, Any] | None = field(default=None, repr=False)
    _sizes: list[int] | None = field(default=None, repr=False)
    #: batch sizes the model could not take, with the reason
    skipped_batches: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray | None:
        return self.data.labels

    @property
    def accuracy(self) -> float | None:
        """The float model's top-1 accuracy on the labelled data, else None."""
        return accuracy(self.outputs, self.data.labels, self.kinds)

    @property
    def output_batch_axes(self) -> dict[str, int | None]:
        return {s.name: s.batch_axis for s in self.signature.outputs}

    def control(self):
        """A second session of the same file: the A/A control of every latency measurement."""
        if self._control is None:
            self._control = make_session(self.path, threads=self.threads)
        return self._control

    def plain_outputs(self) -> dict[str, Any]:
        """Outputs with ONNX Runtime's graph optimizations off (computed once).

        Graph optimization proves a rewrite against these: with ORT's own rewrites on, a QDQ model
        runs int8 kernels whose rounding differs from the graph as written.
        """
        if self._plain is None:
            sess = make_session(self.path, threads=self.threads, optimization="disable")
            self._plain = run_dataset(sess, self.data)
        return self._plain

    def batch_sizes(self) -> list[int]:
        """Batch sizes latency is measured at: 1 and ``latency_batch`` where the model takes them.

        A size the model refuses (a state exported at batch 1) is skipped with a note in
        ``skipped_batches``, never blamed on the user's data.
        """
        if self._sizes is None:
            sizes = self.data.batch_sizes(sorted({1, self.latency_batch}),
                                          probe=lambda feeds: run(self.session, feeds))
            self._sizes = list(sizes.usable)
            self.skipped_batches = {f"batch_{k}": v for k, v in sizes.skipped.items()}
        return self._sizes

    def feeds(self) -> dict[int, dict[str, np.ndarray]]:
        """Inputs at every measured batch size."""
        return {size: self.data.feeds(size) for size in self.batch_sizes()}


def build_reference(
    path: str | os.PathLike,
    *,
    data: str | None = None,
    dims: dict[str, int] | None = None,
    count: int | None = None,
    threads: int | None = None,
    task: str | None = None,
    latency_batch: int = DEFAULT_LATENCY_BATCH,
    batch_axes: dict[str, int | None] | None = None,
    int_ranges: dict[str, tuple[int, int]] | None = None,
) -> Reference:
    """Load the float model once, build its data, run it once.

    ``batch_axes`` overrides the batch axis of some inputs (``--batch-axis``); ``int_ranges``
    bounds random integers per input (``--int-range``, token ids, class indices).
    """
    if task is not None and task not in TASKS:
        raise OptionError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    p = Path(path)
    model = load_model(p, load_external_data=False)
    sig = signature(model)
    if batch_axes:
        sig = sig.with_batch_axes(batch_axes)
    meta = metadata(model)
    task = task or task_of(meta)
    dataset = load_data(data, sig, dims=dims or {}, int_ranges=int_ranges, count=count, meta=meta)
    session = make_session(p, threads=threads)
    outputs = run_dataset(session, dataset)
    kinds = output_kinds(outputs, task=task, labels=dataset.labels is not None,
                         specs={o.name: o for o in sig.outputs})
    return Reference(p, sig, meta, task, dataset, session, outputs, kinds, threads, latency_batch)
