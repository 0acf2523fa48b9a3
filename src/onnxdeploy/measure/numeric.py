"""Output metrics by output kind: how far a variant's outputs are from the reference's.

Every output gets the same numbers (max and mean abs diff, an ``allclose``-style check with an
atol taken from the output's own scale, cosine similarity, SNR in dB); what *decides* depends on
what the output is:

- ``class_scores`` (``[batch, classes]``; only when the model's metadata says it is a classifier,
  labels are given, or the user says ``--task classification``): top-1 agreement and accuracy;
- ``sequence_scores`` (``[batch, time, classes]`` holding probabilities, or any such output of a
  classifier): per-position argmax agreement;
- ``labels`` (integer or boolean outputs): exact agreement;
- ``embedding`` / ``tensor`` (any other float output): the smallest per-sample cosine similarity.

An output that the data does not exercise (constant, or all within ``NEAR_ZERO`` of zero, like a
detector's probability map on random input) is neither a pass nor a failure: ``passed`` is None
and the note says to pass real inputs with ``--data``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError
from ..modelfile import TensorSpec
from ..outputkinds import output_kind

CLASSIFICATION = "classification"
TASKS = ("classification", "feature-extraction", "sentence-embedding")
#: an output whose reference values all lie within this of zero carries no signal on this data
NEAR_ZERO = 1e-4
#: the allclose check: atol = ATOL_FRACTION x the output's scale (its largest |value|), plus rtol
ATOL_FRACTION = 1e-3
RTOL = 1e-3
#: drift bounds (quantization, compare): smallest per-sample cosine for non-class outputs
DEFAULT_MIN_COSINE = 0.99
NOT_EXERCISED = "not exercised by this data: pass real inputs with --data"


def _is_zipmap(value: Any) -> bool:
    rows = value if isinstance(value, list) else (
        list(value) if isinstance(value, np.ndarray) and value.dtype == object else None)
    return bool(rows) and isinstance(rows[0], dict)


def as_array(value: Any) -> np.ndarray:
    """An output as an array; ZipMap's ``{label: score}`` maps become ``[batch, classes]``."""
    if _is_zipmap(value):
        rows = list(value)
        keys = sorted(rows[0])
        return np.asarray([[row[k] for k in keys] for row in rows], dtype=np.float64)
    return np.asarray(value)


def output_kinds(outputs: dict[str, Any], *, task: str | None, labels: bool,
                 specs: dict[str, TensorSpec] | None = None) -> dict[str, str]:
    """The kind of every output (``outputkinds.output_kind``), from its spec, reference value,
    the task and whether labels exist; integer outputs are ``labels``, a ZipMap ``class_scores``."""
    if task is None and labels:
        task = CLASSIFICATION
    kinds: dict[str, str] = {}
    for name, value in outputs.items():
        arr = as_array(value)
        if _is_zipmap(value):
            kinds[name] = "class_scores"
        elif arr.dtype.kind in "iub":
            kinds[name] = "labels"
        elif arr.dtype.kind != "f":
            kinds[name] = "other"
        else:
            spec = (specs or {}).get(name) or TensorSpec(name, arr.dtype, tuple(arr.shape))
            kinds[name] = output_kind(spec, task, arr)
    return kinds


@dataclass
class OutputMetric:
    """One output of one variant against the reference."""

    name: str
    kind: str
    max_abs_diff: float
    mean_abs_diff: float
    atol: float
    rtol: float
    allclose: bool
    cosine: float | None
    min_cosine: float | None
    snr_db: float | None
    #: class_scores: top-1 agreement; sequence_scores: per-position argmax agreement; labels: equality
    agreement: float | None
    exercised: bool
    passed: bool | None = None
    failure: str = ""
    #: embeddings ``[batch, dim]``: share of samples whose nearest neighbour within the set is kept
    nn_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("snr_db", "cosine", "min_cosine", "max_abs_diff", "mean_abs_diff"):
            if isinstance(out[key], float) and not math.isfinite(out[key]):
                out[key] = None if math.isnan(out[key]) else ("inf" if out[key] > 0 else "-inf")
        if not self.exercised:
            out["note"] = NOT_EXERCISED
        return out


def row_cosines(ref: np.ndarray, got: np.ndarray, batch_axis: int = 0) -> np.ndarray:
    """Cosine of every sample (rows along ``batch_axis``, flattened); rows of zero norm are NaN."""
    x = np.moveaxis(np.asarray(ref, dtype=np.float64), batch_axis, 0).reshape(ref.shape[batch_axis], -1)
    y = np.moveaxis(np.asarray(got, dtype=np.float64), batch_axis, 0).reshape(got.shape[batch_axis], -1)
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((nx > 0) & (ny > 0), np.sum(x * y, axis=1) / (nx * ny), np.nan)


def _cosines(x: np.ndarray, y: np.ndarray, batch_axis: int | None) -> tuple[float | None, float | None]:
    xf, yf = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    na, nb = float(xf @ xf), float(yf @ yf)
    cos = float(xf @ yf / math.sqrt(na * nb)) if na > 0 and nb > 0 else None
    if batch_axis is None or x.ndim < 2:
        return cos, cos
    per = row_cosines(x, y, batch_axis)
    return cos, float(np.nanmin(per)) if np.isfinite(per).any() else None


#: cosines within this of each other are the same neighbour (exact duplicates in the data)
NN_TIE = 1e-6
NN_MIN_SAMPLES = 3
#: nearest-neighbour agreement compares all pairs: above this many samples it is left out
NN_MAX_SAMPLES = 4096


def nn_agreement(ref: np.ndarray, got: np.ndarray) -> float | None:
    """Share of samples whose nearest neighbour (cosine, within the set) is the same in both.

    Agreeing means the served neighbour is as near, in the reference, as the reference's own
    nearest (within ``NN_TIE``): exact duplicates are interchangeable. None below 3 samples.
    """
    if len(ref) < NN_MIN_SAMPLES:
        return None

    def similarities(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64).reshape(len(v), -1)
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        u = v / np.where(norm > 0, norm, 1.0)
        s = u @ u.T
        np.fill_diagonal(s, -np.inf)
        return s

    r, g = similarities(ref), similarities(got)
    served = g.argmax(axis=1)
    rows = np.arange(len(r))
    return float(np.mean(r[rows, served] >= r.max(axis=1) - NN_TIE))



def half_min_cosines(ref: dict[str, Any], got: dict[str, Any], kinds: dict[str, str],
                     batch_axes: dict[str, int | None]) -> tuple[float, float] | None:
    """The smallest per-sample cosine over the even and over the odd samples (embeddings only).

    How far the two halves of one data set differ is a measure of how much a minimum over data of
    that size moves from one sample of texts to another.
    """
    lows: list[tuple[float, float]] = []
    for name, kind in kinds.items():
        axis = batch_axes.get(name)
        if kind != "embedding" or axis is None or name not in ref or name not in got:
            continue
        x, y = as_array(ref[name]), as_array(got[name])
        if x.dtype.kind != "f" or x.shape != y.shape or x.ndim < 2 or x.shape[axis] < 4:
            continue
        cos = row_cosines(x, y, axis)
        even, odd = cos[0::2], cos[1::2]
        if np.isfinite(even).any() and np.isfinite(odd).any():
            lows.append((float(np.nanmin(even)), float(np.nanmin(odd))))
    if not lows:
        return None
    return min(a for a, _ in lows), min(b for _, b in lows)


def metric(name: str, kind: str, ref: Any, got: Any, *, batch_axis: int | None = 0,
           rtol: float = RTOL, atol: float | None = None) -> OutputMetric:
    """Every metric of one output; ``passed`` is left for a criterion to decide."""
    x, y = as_array(ref), as_array(got)
    if x.shape != y.shape:
        raise DataError(f"output '{name}' has shape {x.shape} in one model and {y.shape} in the other")
    if x.dtype.kind not in "fiub" or x.size == 0:
        same = x.size == 0 or bool(np.array_equal(x, y))
        return OutputMetric(name, kind, 0.0 if same else math.inf, 0.0 if same else math.inf,
                            0.0, 0.0, same, None, None, None, 1.0 if same else 0.0, x.size > 0)
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    both_finite = np.isfinite(xf) & np.isfinite(yf)
    d = np.where(both_finite, np.abs(xf - yf), np.where(np.isclose(xf, yf, equal_nan=True), 0, np.inf))
    scale = float(np.max(np.abs(xf[np.isfinite(xf)]))) if np.isfinite(xf).any() else 0.0
    tol = ATOL_FRACTION * scale if atol is None else atol
    close = bool(np.allclose(yf, xf, atol=tol, rtol=rtol, equal_nan=True))
    if kind == "labels":
        exercised = True
    else:
        exercised = bool(scale >= NEAR_ZERO and float(np.ptp(xf[np.isfinite(xf)])) > 0)
    cos = min_cos = snr = agreement = None
    if x.dtype.kind == "f":
        cos, min_cos = _cosines(xf, yf, batch_axis)
        noise = float(np.sum((xf - yf) ** 2))
        signal = float(np.sum(xf ** 2))
        snr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    if kind == "class_scores":
        agreement = float(np.mean(np.argmax(x, axis=-1) == np.argmax(y, axis=-1)))
    elif kind == "sequence_scores":
        agreement = float(np.mean(np.argmax(x, axis=-1) == np.argmax(y, axis=-1)))
    elif kind == "labels":
        agreement = float(np.mean(x == y))
    nn = None
    if (kind == "embedding" and x.ndim == 2 and batch_axis == 0 and x.dtype.kind == "f"
            and len(x) <= NN_MAX_SAMPLES and np.isfinite(yf).all()):
        nn = nn_agreement(xf, yf)
    return OutputMetric(name, kind, float(d.max()), float(d.mean()), tol, rtol, close, cos, min_cos,
                        snr, agreement, exercised, nn_agreement=nn)


@dataclass
class Comparison:
    """All outputs of one variant against the reference, and whether the check passed."""

    outputs: list[OutputMetric]
    passed: bool | None
    failures: list[str] = field(default_factory=list)

    def by_name(self, name: str) -> OutputMetric:
        for m in self.outputs:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def max_abs_diff(self) -> float:
        return max((m.max_abs_diff for m in self.outputs), default=0.0)

    @property
    def mean_abs_diff(self) -> float:
        vals = [m.mean_abs_diff for m in self.outputs]
        return float(np.mean(vals)) if vals else 0.0

    @property
    def cosine_similarity(self) -> float | None:
        vals = [m.cosine for m in self.outputs if m.cosine is not None]
        return min(vals) if vals else None

    @property
    def min_cosine(self) -> float | None:
        vals = [m.min_cosine for m in self.outputs if m.min_cosine is not None and m.exercised]
        return min(vals) if vals else None

    @property
    def top1_agreement(self) -> float | None:
        for m in self.outputs:
            if m.kind == "class_scores":
                return m.agreement
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": self.failures,
                "outputs": [m.to_dict() for m in self.outputs],
                "max_abs_diff": self.max_abs_diff, "top1_agreement": self.top1_agreement,
                "min_cosine": self.min_cosine}


def _pair(ref: dict[str, Any], got: dict[str, Any]):
    if len(ref) != len(got):
        raise DataError(f"the models have different numbers of outputs ({len(ref)} vs {len(got)})")
    return zip(ref.items(), got.values())


def _decide(metrics: list[OutputMetric]) -> tuple[bool | None, list[str]]:
    for m in metrics:
        if not m.exercised:  # no signal on this data: neither a pass nor a failure
            m.passed, m.failure = None, ""
    exercised = [m for m in metrics if m.exercised]
    failures = [m.failure for m in exercised if m.passed is False]
    if not exercised:
        return None, failures
    return (not failures), failures


def equivalence(ref: dict[str, Any], got: dict[str, Any], kinds: dict[str, str], *,
                atol: float, rtol: float = 0.0,
                batch_axes: dict[str, int | None] | None = None) -> Comparison:
    """Are the outputs the same within ``atol``/``rtol`` (graph optimization's proof)?"""
    out = []
    for (name, x), y in _pair(ref, got):
        m = metric(name, kinds.get(name, "tensor"), x, y, batch_axis=(batch_axes or {}).get(name, 0),
                   rtol=rtol, atol=atol)
        m.passed = m.allclose
        if not m.passed:
            m.failure = (f"output '{name}': max abs diff {m.max_abs_diff:.3g} exceeds "
                         f"atol {atol:g} + rtol {rtol:g}")
        out.append(m)
    passed, failures = _decide(out)
    return Comparison(out, passed, failures)


def drift(ref: dict[str, Any], got: dict[str, Any], kinds: dict[str, str], *,
          max_disagreement: float, min_cosine: float = DEFAULT_MIN_COSINE,
          batch_axes: dict[str, int | None] | None = None) -> Comparison:
    """How far an approximation (int8) moved each output, judged by what the output is."""
    out = []
    for (name, x), y in _pair(ref, got):
        kind = kinds.get(name, "tensor")
        m = metric(name, kind, x, y, batch_axis=(batch_axes or {}).get(name, 0))
        if kind in ("class_scores", "sequence_scores", "labels"):
            what = {"class_scores": "top-1 agreement", "sequence_scores": "per-position argmax agreement",
                    "labels": "agreement"}[kind]
            m.passed = m.agreement is not None and 1.0 - m.agreement <= max_disagreement + 1e-12
            if not m.passed:
                m.failure = (f"output '{name}': {what} {m.agreement:.4f} is below "
                             f"{1 - max_disagreement:.4f}")
        elif m.min_cosine is not None:
            m.passed = m.min_cosine >= min_cosine
            if not m.passed:
                m.failure = f"output '{name}': min cosine {_below(m.min_cosine, min_cosine)} is below {min_cosine}"
        else:
            m.passed = m.allclose
            if not m.passed:
                m.failure = f"output '{name}': max abs diff {m.max_abs_diff:.3g} beyond atol {m.atol:.3g}"
        out.append(m)
    passed, failures = _decide(out)
    return Comparison(out, passed, failures)


def _below(value: float, bound: float) -> str:
    """``value`` with 4 decimals, or as many more as it takes not to read as the bound or above."""
    for digits in range(4, 12):
        text = f"{value:.{digits}f}"
        if float(text) < bound:
            return text
    return repr(value)


def predictions(outputs: dict[str, Any], kinds: dict[str, str]) -> np.ndarray | None:
    """Predicted classes from the class-score output, else None."""
    for name, value in outputs.items():
        if kinds.get(name) == "class_scores":
            return np.argmax(as_array(value), axis=-1)
    return None


def accuracy(outputs: dict[str, Any], labels: np.ndarray | None, kinds: dict[str, str]) -> float | None:
    """Top-1 accuracy in [0, 1], or None without labels or a class-score output."""
    pred = predictions(outputs, kinds)
    if pred is None or labels is None or len(pred) != len(labels):
        return None
    return float(np.mean(pred == labels))


def top1(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """Predicted classes from the first ``[batch, classes]`` float output, else None.

    For callers that know the model is a classifier without output kinds (export's check of a
    built-in, bench's accuracy through the API).
    """
    for value in outputs.values():
        arr = as_array(value)
        if arr.ndim == 2 and arr.shape[1] > 1 and arr.dtype.kind == "f":
            return np.argmax(arr, axis=1)
    return None


def top1_accuracy(outputs: dict[str, np.ndarray], labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy in [0, 1] of a classifier's outputs, or None without labels or class scores."""
    pred = top1(outputs)
    if pred is None or labels is None or len(pred) != len(labels):
        return None
    return float(np.mean(pred == labels))
