"""What an output is, so that it is judged by metrics that mean something for it.

A conservative classifier of shape, dtype and task: an output is called class scores only
when the task says classification (metadata ``onnxdeploy.task``, labels given, ``--task``) or
its values are visibly a probability distribution over a class axis. Everything else is a plain
``tensor`` (judged by max abs diff, allclose, cosine and SNR), never argmax "top-1".
"""

from __future__ import annotations

import numpy as np

from .modelfile import META_TASK, TensorSpec

CLASS_SCORES = "class_scores"        # [batch, classes]: top-1 and accuracy apply
SEQUENCE_SCORES = "sequence_scores"  # [batch, time, classes]: per-position argmax applies
EMBEDDING = "embedding"              # [batch, dim] or [batch, seq, dim]: cosine applies
TENSOR = "tensor"                    # anything else, and every output we cannot be sure about
#: non-tensor outputs keep their ONNX type kind: "sequence" (a ZipMap's list of dicts), "map", ...
NON_TENSOR_KINDS = ("sequence", "map", "optional", "sparse_tensor")

CLASSIFICATION = "classification"
EMBEDDING_TASKS = ("feature-extraction", "sentence-embedding")
#: tolerance on "rows sum to one" when values decide that an output is a softmax
SIMPLEX_ATOL = 1e-3


def task_of(metadata: dict[str, str]) -> str | None:
    """The task the model's metadata declares (``text-classification`` is ``classification``)."""
    task = metadata.get(META_TASK)
    return CLASSIFICATION if task == "text-classification" else task


def output_kind(spec: TensorSpec, task: str | None = None, values: np.ndarray | None = None) -> str:
    """The kind of one output: class_scores, sequence_scores, embedding, tensor, or a non-tensor kind.

    ``task`` is the model's task (metadata, ``--task``, or ``classification`` when labels are
    given); ``values`` are outputs on real data, if any: rows that are probability
    distributions (in [0, 1], summing to 1 over the last axis) mark class scores without a task.
    """
    if spec.dtype is None:
        return spec.kind or TENSOR
    if spec.dtype.kind != "f":
        return TENSOR
    rank = spec.rank if spec.rank is not None else (None if values is None else np.ndim(values))
    if rank not in (2, 3):
        return TENSOR
    last = spec.shape[-1] if spec.shape is not None else None
    if isinstance(last, int) and 0 < last < 2:  # one column: a score, not a choice among classes
        return TENSOR
    scores = SEQUENCE_SCORES if rank == 3 else CLASS_SCORES
    if task == CLASSIFICATION:
        return scores
    if task in EMBEDDING_TASKS:
        return EMBEDDING
    if values is not None and _is_distribution(np.asarray(values)):
        return scores
    return TENSOR


def _is_distribution(values: np.ndarray) -> bool:
    """True when every row along the last axis is a probability distribution over >= 2 classes."""
    if values.ndim not in (2, 3) or values.size == 0 or values.shape[-1] < 2:
        return False
    if values.dtype.kind != "f" or not np.isfinite(values).all():
        return False
    if values.min() < 0 or values.max() > 1:
        return False
    return bool(np.allclose(values.sum(axis=-1), 1.0, atol=SIMPLEX_ATOL))
