"""What the quantize step reports: one entry per measured candidate, and the step's report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CandidateResult:
    """One quantized variant measured against the float model on the same inputs."""

    name: str
    settings: dict[str, Any]
    size_bytes: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    #: the measure judged against the tolerance: accuracy drop, top-1 disagreement or relative error
    error: float | None = None
    admissible: bool = False
    reason: str = ""
    op_counts: dict[str, int] = field(default_factory=dict)
    int8_ops: int = 0
    min_cosine: float | None = None
    #: per-output metrics (numeric.OutputMetric.to_dict) and the failed checks, by output name
    outputs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    exercised: bool = True
    #: the interleaved figures {batch_N: {median_ms, min_ms, max_ms, runs, rounds}}
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    speedup: dict[str, float] = field(default_factory=dict)
    speed: str = ""
    sha256: str = ""
    #: state outputs: {output: {one_step_min_cosine, chained_min_cosine, steps}} (models with state)
    state: dict[str, Any] | None = None
    chained: dict[str, float] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "settings": self.settings,
            "size_bytes": self.size_bytes,
            "latency_ms": self.latency_ms,
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement,
            "accuracy": self.accuracy,
            "min_cosine": self.min_cosine,
            "error": self.error,
            "admissible": self.admissible,
            "int8_ops": self.int8_ops,
            "exercised": self.exercised,
            "reason": self.reason,
            "latency": self.latency,
            "speedup": self.speedup,
            "speed": self.speed,
            "outputs": self.outputs,
            "failures": self.failures,
            "state": self.state,
        }


@dataclass
class QuantizeReport:
    """Report of ``onnxdeploy quantize``; ``to_dict`` holds the DESIGN.md keys."""

    mode: str
    model: str
    output: str | None
    data: str
    samples: int
    criterion: str
    tolerance: float
    size_before: int
    size_after: int | None
    comparison: dict[str, Any]
    latency_before: dict[str, float]
    latency_after: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    op_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    preprocessing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    candidates: list[CandidateResult] = field(default_factory=list)
    chosen: str | None = None
    reason: str = ""
    passed: bool = True
    #: the full interleaved measurement (figures with spread, noise); not serialized as a whole
    measurement: Any = field(default=None, repr=False)
    latency: dict[str, Any] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    #: the mixed-precision search (fallback.Fallback.to_dict) when auto ran it
    fallback: dict[str, Any] | None = None
    #: the state input -> output pairs judged over chained steps (None: the model has none)
    state: dict[str, Any] | None = None

    @property
    def size_ratio(self) -> float | None:
        """before / after: how many times smaller the output is."""
        return self.size_before / self.size_after if self.size_after else None

    @property
    def speedup(self) -> dict[str, float]:
        """before / after latency per batch size (above 1 is faster)."""
        return {k: self.latency_before[k] / v for k, v in self.latency_after.items() if v}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "model": self.model,
            "output": self.output,
            "data": self.data,
            "samples": self.samples,
            "settings": self.settings,
            "size_bytes": {"before": self.size_before, "after": self.size_after},
            "size_ratio": self.size_ratio,
            "comparison": self.comparison,
            "latency_ms": {"before": self.latency_before, "after": self.latency_after},
            "speedup": self.speedup,
            "latency": self.latency,
            "environment": self.environment,
            "op_counts": self.op_counts,
            "preprocessing": self.preprocessing,
            "warnings": self.warnings,
            "passed": self.passed,
        }
        if self.calibration is not None:
            out["calibration"] = self.calibration
        if self.mode == "auto":
            out["candidates"] = [c.to_dict() for c in self.candidates]
            out["chosen"] = {"name": self.chosen, "reason": self.reason}
            out["fallback"] = self.fallback
        if self.state is not None:
            out["state"] = self.state
        return out
