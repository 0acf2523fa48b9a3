"""Numeric comparison of two models (or ONNX against PyTorch outputs), accuracy, latency."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import DataSet, load_data
from .errors import DataError
from .modelfile import load_model, signature
from .runtime import ab_latency, make_session, run_dataset

DEFAULT_LATENCY_BATCH = 32


@dataclass
class OutputDiff:
    """How far two sets of outputs are apart."""

    max_abs_diff: float
    mean_abs_diff: float
    cosine_similarity: float | None
    top1_agreement: float | None
    per_output: dict[str, float] = field(default_factory=dict)


def is_class_scores(arr: np.ndarray) -> bool:
    """A float ``N×C`` array with C > 1 is read as class scores (logits or probabilities)."""
    return arr.ndim == 2 and arr.shape[1] > 1 and arr.dtype.kind == "f"


def top1(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """Predicted classes from the first output that looks like class scores, else None."""
    for value in outputs.values():
        if is_class_scores(value):
            return np.argmax(value, axis=1)
    return None


def accuracy(outputs: dict[str, np.ndarray], labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy in [0, 1], or None without labels or class scores."""
    pred = top1(outputs)
    if pred is None or labels is None or len(pred) != len(labels):
        return None
    return float(np.mean(pred == labels))


def diff_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> OutputDiff:
    """Compare outputs pairwise in order (names may differ between exports)."""
    if len(a) != len(b):
        raise DataError(f"the models have different numbers of outputs ({len(a)} vs {len(b)})")
    max_abs, sums, count, per = 0.0, 0.0, 0, {}
    dots = na = nb = 0.0
    for (name, x), (_, y) in zip(a.items(), b.items()):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise DataError(f"output '{name}' has shape {x.shape} in one model and {y.shape} in the other")
        if x.dtype.kind not in "fiub" or x.size == 0:
            per[name] = 0.0 if np.array_equal(x, y) else float("inf")
            continue
        xf, yf = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        d = np.abs(xf - yf)
        per[name] = float(d.max())
        max_abs = max(max_abs, per[name])
        sums += float(d.sum())
        count += d.size
        dots += float(xf @ yf)
        na += float(xf @ xf)
        nb += float(yf @ yf)
    cosine = dots / np.sqrt(na * nb) if na > 0 and nb > 0 else None
    pa, pb = top1(a), top1(b)
    agree = float(np.mean(pa == pb)) if pa is not None and pb is not None else None
    return OutputDiff(
        max_abs_diff=max_abs,
        mean_abs_diff=sums / count if count else 0.0,
        cosine_similarity=None if cosine is None else float(cosine),
        top1_agreement=agree,
        per_output=per,
    )


@dataclass
class CompareOptions:
    """Options of ``onnxdeploy compare``."""

    data: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    count: int | None = None
    latency_batch: int = DEFAULT_LATENCY_BATCH
    latency_rounds: int = 5
    threads: int | None = None


@dataclass
class CompareReport:
    """Report of ``onnxdeploy compare``."""

    a: str
    b: str
    data: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    cosine_similarity: float | None
    top1_agreement: float | None
    accuracy: dict[str, float | None] | None
    latency_ms: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_pair(sess_a, sess_b, data: DataSet, *, batch: int, rounds: int) -> dict[str, dict[str, float]]:
    """In-process latency of two sessions at batch 1 and ``batch``, measured A/B alternately."""
    out: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    sizes = [1] if not data.batched else sorted({1, batch})
    for size in sizes:
        feeds = data.feeds(size)
        la, lb = ab_latency([sess_a, sess_b], feeds, rounds=rounds)
        out["a"][f"batch_{size}"] = la
        out["b"][f"batch_{size}"] = lb
    return out


def compare_models(
    a: str | os.PathLike, b: str | os.PathLike, options: CompareOptions | None = None
) -> CompareReport:
    """Run two models on the same data and report how far apart they are and how fast each is."""
    opts = options or CompareOptions()
    model_a, model_b = load_model(a), load_model(b)
    sig_a, sig_b = signature(model_a), signature(model_b)
    names_a = [(s.name, s.dtype) for s in sig_a.inputs]
    names_b = [(s.name, s.dtype) for s in sig_b.inputs]
    if names_a != names_b:
        raise DataError(
            f"the models take different inputs: {Path(a).name} {names_a} vs {Path(b).name} {names_b}"
        )
    data = load_data(opts.data, sig_a, dims=opts.dims, count=opts.count)
    sess_a = make_session(a, threads=opts.threads)
    sess_b = make_session(b, threads=opts.threads)
    out_a, out_b = run_dataset(sess_a, data), run_dataset(sess_b, data)
    diff = diff_outputs(out_a, out_b)
    acc = None
    if data.labels is not None:
        acc = {"a": accuracy(out_a, data.labels), "b": accuracy(out_b, data.labels)}
    latency = latency_pair(sess_a, sess_b, data, batch=opts.latency_batch, rounds=opts.latency_rounds)
    return CompareReport(
        a=str(a),
        b=str(b),
        data=data.name,
        samples=len(data),
        max_abs_diff=diff.max_abs_diff,
        mean_abs_diff=diff.mean_abs_diff,
        cosine_similarity=diff.cosine_similarity,
        top1_agreement=diff.top1_agreement,
        accuracy=acc,
        latency_ms=latency,
    )
