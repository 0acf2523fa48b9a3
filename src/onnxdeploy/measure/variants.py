"""Variants with lineage, and ``measure_variants``: one function that measures a set of them.

For every variant: size on disk (external data included), sha256, op counts and int8 ops,
output metrics against the reference by output kind, accuracy, and in-process latency of all
variants (and the float model twice, as A/A control) in one interleaved measurement.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..modelfile import (
    META_PRECISION,
    META_RUNTIME,
    external_data_files,
    is_int8_op,
    load_model,
    metadata,
    model_size,
    op_counts,
    signature,
)
from ..runtimes import make_session, precision_of, run_dataset
from .latency import CONTROL, DEFAULT_BUDGET_S, REFERENCE, Latency, measure
from .numeric import DEFAULT_MIN_COSINE, Comparison, accuracy, drift
from .reference import Reference

#: the runtime of a variant whose file does not say otherwise
DEFAULT_RUNTIME = "onnxruntime"


def sha256_of(path: str | os.PathLike) -> str:
    """sha256 over the model file and its external data files, in order."""
    h = hashlib.sha256()
    for p in [Path(path), *external_data_files(path)]:
        if p.exists():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


@dataclass
class Variant:
    """One model file in a run, the runtime and precision it runs at, and where it came from.

    A variant is (file, runtime, precision): the same float file on OpenVINO at bf16 is a variant
    of its own (``bf16-openvino``). ``precision_used`` is what the runtime reported it ran at
    (OpenVINO reads it back from the compiled model), set once the variant was measured.
    """

    name: str
    path: Path
    parent: str | None
    produced_by: dict[str, Any]
    sha256: str = ""
    size_bytes: int = 0
    runtime: str = DEFAULT_RUNTIME
    precision: str = "fp32"
    precision_used: str | None = None

    @classmethod
    def of(cls, name: str, path: str | os.PathLike, *, parent: str | None,
           produced_by: dict[str, Any], runtime: str | None = None,
           precision: str | None = None) -> Variant:
        """A variant of a file on disk, hashed and sized now.

        Runtime and precision, when not given, come from the file's metadata
        (``onnxdeploy.runtime``, ``onnxdeploy.precision``), else ONNX Runtime, and ``int8`` for a
        file with int8 operators, ``fp32`` otherwise.
        """
        p = Path(path)
        if runtime is None or precision is None:
            model = load_model(p, load_external_data=False)
            meta = metadata(model)
            runtime = runtime or meta.get(META_RUNTIME) or DEFAULT_RUNTIME
            if precision is None:
                precision = meta.get(META_PRECISION) or (
                    "int8" if any(is_int8_op(op) for op in op_counts(model)) else "fp32")
        return cls(name, p, parent, dict(produced_by), sha256_of(p), model_size(p), runtime, precision)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "path": str(self.path), "sha256": self.sha256,
               "size_bytes": self.size_bytes, "parent": self.parent, "produced_by": self.produced_by,
               "runtime": self.runtime, "precision": self.precision}
        if self.precision_used is not None:
            out["precision_used"] = self.precision_used
        return out


@dataclass
class VariantResult:
    """What was measured about one variant."""

    variant: Variant
    op_counts: dict[str, int]
    comparison: Comparison | None
    accuracy: float | None
    outputs: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def int8_ops(self) -> int:
        return sum(n for op, n in self.op_counts.items() if is_int8_op(op))

    def to_dict(self) -> dict[str, Any]:
        return {**self.variant.to_dict(), "op_counts": self.op_counts, "int8_ops": self.int8_ops,
                "accuracy": self.accuracy,
                "comparison": None if self.comparison is None else self.comparison.to_dict()}


@dataclass
class Measurement:
    """Every variant of a run measured against one reference."""

    reference: Reference = field(repr=False)
    results: dict[str, VariantResult]
    latency: Latency | None

    def size_ratio(self, name: str) -> float | None:
        """How many times smaller than the float model."""
        ref, v = self.results[REFERENCE].variant.size_bytes, self.results[name].variant.size_bytes
        return ref / v if v else None

    def to_dict(self) -> dict[str, Any]:
        return {"variants": [r.to_dict() for r in self.results.values()],
                "latency": None if self.latency is None else self.latency.to_dict()}


#: the float model on other runtimes: (variant name, runtime, precision, the CPU flag it needs)
RUNTIME_VARIANTS = (("float32-openvino", "openvino", "fp32", None),
                    ("bf16-openvino", "openvino", "bf16", "bf16"))


def runtime_variants(flags: dict[str, bool] | None = None) -> list[tuple[str, str, str]]:
    """``(name, runtime, precision)`` of the float variants worth measuring here.

    On OpenVINO when its extra is installed: FP32 always, BF16 only on a CPU whose flags say
    bf16 (``environment.cpu_flags``; elsewhere OpenVINO would run it at FP32 anyway).
    """
    from ..environment import cpu_flags
    from ..runtimes import openvino_available

    if not openvino_available():
        return []
    flags = cpu_flags() if flags is None else flags
    return [(name, runtime, precision) for name, runtime, precision, needs in RUNTIME_VARIANTS
            if needs is None or flags.get(needs)]


def check_same_inputs(reference: Reference, path: Path) -> None:
    """Raise DataError when a variant takes other inputs than the reference."""
    sig = signature(load_model(path, load_external_data=False))
    want = [(s.name, str(s.dtype), None if s.shape is None else len(s.shape))
            for s in reference.signature.inputs]
    got = [(s.name, str(s.dtype), None if s.shape is None else len(s.shape)) for s in sig.inputs]
    if want != got:
        def fmt(items):
            return ", ".join(f"{n} {d} rank {r}" for n, d, r in items)
        raise DataError(
            f"the models take different inputs: {reference.path.name} takes {fmt(want)}; "
            f"{path.name} takes {fmt(got)}")


def evaluate(reference: Reference, variant: Variant, *, max_disagreement: float,
             min_cosine: float = DEFAULT_MIN_COSINE, session=None) -> tuple[VariantResult, Any]:
    """Outputs, drift and accuracy of one variant; returns the result and its session."""
    check_same_inputs(reference, variant.path)
    sess = session or make_session(variant.path, threads=reference.threads, runtime=variant.runtime,
                                   precision=variant.precision)
    variant.precision_used = precision_of(sess) or variant.precision_used
    outs = run_dataset(sess, reference.data, specs={s.name: s for s in reference.signature.outputs})
    cmp_ = drift(reference.outputs, outs, reference.kinds, max_disagreement=max_disagreement,
                 min_cosine=min_cosine, batch_axes=reference.output_batch_axes)
    result = VariantResult(variant, op_counts(load_model(variant.path, load_external_data=False)),
                           cmp_, accuracy(outs, reference.labels, reference.kinds), outs)
    return result, sess


def reference_result(reference: Reference, variant: Variant) -> VariantResult:
    """The float model's own entry (no comparison: it is the reference)."""
    return VariantResult(variant, op_counts(load_model(variant.path, load_external_data=False)),
                         None, reference.accuracy, reference.outputs)


def time_variants(reference: Reference, sessions: dict[str, Any], *, budget_s: float = DEFAULT_BUDGET_S,
                  droppable: set[str] | None = None) -> Latency:
    """Latency of the given sessions, the reference and its A/A control, interleaved."""
    all_sessions = {REFERENCE: reference.session, CONTROL: reference.control(), **sessions}
    feeds = reference.feeds()
    timing = measure(all_sessions, {n: feeds for n in all_sessions}, budget_s=budget_s,
                     threads=reference.threads, droppable=droppable)
    timing.notes += [f"{k} skipped: {why}" for k, why in reference.skipped_batches.items()]
    return timing


def measure_variants(
    reference: Reference,
    float_variant: Variant,
    variants: list[Variant],
    *,
    max_disagreement: float,
    min_cosine: float = DEFAULT_MIN_COSINE,
    latency: bool = True,
    budget_s: float = DEFAULT_BUDGET_S,
    droppable: set[str] | None = None,
) -> Measurement:
    """Measure every variant against the reference: size, ops, outputs, accuracy, latency."""
    if any(v.name in (REFERENCE, CONTROL) for v in variants):
        raise DataError(f"variant names {REFERENCE!r} and {CONTROL!r} are reserved")
    results = {REFERENCE: reference_result(reference, float_variant)}
    sessions: dict[str, Any] = {}
    for v in variants:
        results[v.name], sessions[v.name] = evaluate(reference, v, max_disagreement=max_disagreement,
                                                     min_cosine=min_cosine)
    timing = time_variants(reference, sessions, budget_s=budget_s, droppable=droppable) if latency else None
    return Measurement(reference, results, timing)
