"""The compare step: two models on the same data, output by output, with accuracy and latency.

``A`` is the reference (its outputs, labels and session are built once) and ``B`` is measured
against it through the measurement stage: metrics by output kind, accuracy where labels and
class scores exist, and both timed in one interleaved measurement with an A/A control of A.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .environment import environment
from .judge import inprocess
from .judge.words import speed_words
from .measure import (
    DEFAULT_BUDGET_S,
    DEFAULT_LATENCY_BATCH,
    Reference,
    Variant,
    build_reference,
    runtime_variants,
)
from .measure.latency import REFERENCE
from .measure.numeric import DEFAULT_MIN_COSINE, output_kinds, top1, top1_accuracy
from .measure.variants import evaluate, time_variants

__all__ = ["DEFAULT_LATENCY_BATCH", "CompareOptions", "CompareReport", "OutputDiff", "accuracy",
           "compare_models", "diff_outputs", "top1"]

B_NAME = "b"
#: top-1 accuracy without output kinds (``measure.numeric.top1_accuracy``), under its old name here
accuracy = top1_accuracy


@dataclass
class OutputDiff:
    """How far two sets of outputs are apart (the summary older callers read)."""

    max_abs_diff: float
    mean_abs_diff: float
    cosine_similarity: float | None
    top1_agreement: float | None
    per_output: dict[str, float] = field(default_factory=dict)


def diff_outputs(a: dict[str, Any], b: dict[str, Any]) -> OutputDiff:
    """Compare outputs pairwise in order (names may differ between exports)."""
    from .measure.numeric import drift

    kinds = output_kinds(a, task="classification", labels=False)
    cmp_ = drift(a, b, kinds, max_disagreement=1.0)
    return OutputDiff(cmp_.max_abs_diff, cmp_.mean_abs_diff, cmp_.cosine_similarity,
                      cmp_.top1_agreement, {m.name: m.max_abs_diff for m in cmp_.outputs})


@dataclass
class CompareOptions:
    """Options of ``onnxdeploy compare``."""

    data: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    count: int | None = None
    latency_batch: int = DEFAULT_LATENCY_BATCH
    latency_budget_s: float = DEFAULT_BUDGET_S
    max_disagreement: float = 0.01
    min_cosine: float = DEFAULT_MIN_COSINE
    task: str | None = None
    batch_axes: dict[str, int | None] = field(default_factory=dict)
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    threads: int | None = None
    #: also measure A on the other runtimes (``measure.runtime_variants``: OpenVINO FP32, and
    #: BF16 on CPUs with BF16) in the same measurement; ``runtimes`` in the report
    runtimes: bool = False


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
    min_cosine: float | None = None
    passed: bool | None = None
    failures: list[str] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    speedup: dict[str, float] = field(default_factory=dict)
    speed: str = ""
    speed_text: str = ""
    latency: dict[str, Any] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    #: A on other runtimes (``--runtimes``): name -> runtime, precision asked and used, the check
    #: against A on ORT, speedup and speed words against A
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_models(
    a: str | os.PathLike, b: str | os.PathLike, options: CompareOptions | None = None,
    *, reference: Reference | None = None, latency=None,
) -> CompareReport:
    """Run two models on the same data and report how far apart they are and how fast each is.

    ``reference`` is A's reference when the caller has one; ``latency`` is a measurement that
    already timed B under the name ``"b"`` (the pipeline's one measurement), else B is timed here.
    """
    opts = options or CompareOptions()
    ref = reference or build_reference(a, data=opts.data, dims=opts.dims, count=opts.count,
                                       threads=opts.threads, task=opts.task,
                                       latency_batch=opts.latency_batch, batch_axes=opts.batch_axes,
                                       int_ranges=opts.int_ranges)
    variant = Variant.of(B_NAME, b, parent=REFERENCE, produced_by={"step": "compare"})
    result, session = evaluate(ref, variant, max_disagreement=opts.max_disagreement,
                               min_cosine=opts.min_cosine)
    on_runtimes = {}
    for name, runtime, precision in (runtime_variants() if opts.runtimes else []):
        v = Variant.of(name, a, parent=REFERENCE, produced_by={"step": "compare"}, runtime=runtime,
                       precision=precision)
        on_runtimes[name] = evaluate(ref, v, max_disagreement=opts.max_disagreement,
                                     min_cosine=opts.min_cosine)
    if latency is None:
        latency = time_variants(ref, {B_NAME: session, **{n: s for n, (_, s) in on_runtimes.items()}},
                                budget_s=opts.latency_budget_s)
    cmp_ = result.comparison
    acc = None
    if ref.labels is not None and ref.accuracy is not None:
        acc = {"a": ref.accuracy, "b": result.accuracy}
    speedup = latency.speedup(B_NAME)
    return CompareReport(
        a=str(a), b=str(b), data=ref.data.name, samples=len(ref.data),
        max_abs_diff=cmp_.max_abs_diff, mean_abs_diff=cmp_.mean_abs_diff,
        cosine_similarity=cmp_.cosine_similarity, top1_agreement=cmp_.top1_agreement,
        accuracy=acc,
        latency_ms={"a": latency.median(REFERENCE), "b": latency.median(B_NAME)},
        min_cosine=cmp_.min_cosine, passed=cmp_.passed, failures=cmp_.failures,
        outputs=[m.to_dict() for m in cmp_.outputs], speedup=speedup,
        speed=inprocess.speed(latency, B_NAME),
        speed_text=", ".join(f"{Path(b).name} {speed_words(s, latency.margin)} at {k.replace('_', ' ')}"
                             for k, s in speedup.items()),
        latency=latency.to_dict(),
        environment=environment(opts.threads),
        runtimes={name: _on_runtime(r, latency) for name, (r, _) in on_runtimes.items()},
    )


def _on_runtime(result, latency) -> dict[str, Any]:
    v, cmp_ = result.variant, result.comparison
    return {"runtime": v.runtime, "precision": v.precision, "precision_used": v.precision_used,
            "passed": cmp_.passed, "failures": cmp_.failures, "max_abs_diff": cmp_.max_abs_diff,
            "min_cosine": cmp_.min_cosine, "top1_agreement": cmp_.top1_agreement,
            "latency_ms": latency.median(v.name), "speedup": latency.speedup(v.name),
            "speed": inprocess.speed(latency, v.name)}
