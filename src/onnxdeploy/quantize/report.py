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
    relative_error: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    #: the measure judged against the tolerance: accuracy drop, top-1 disagreement or relative error
    error: float | None = None
    admissible: bool = False
    reason: str = ""
    op_counts: dict[str, int] = field(default_factory=dict)

    def latency_ratio(self, before: dict[str, float]) -> dict[str, float]:
        """after / before per batch size (below 1 is faster)."""
        return {k: v / before[k] for k, v in self.latency_ms.items() if before.get(k)}

    def worst_ratio(self, before: dict[str, float]) -> float:
        """The largest latency ratio over the measured batch sizes: how much slower at worst."""
        ratios = self.latency_ratio(before)
        return max(ratios.values()) if ratios else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "settings": self.settings,
            "size_bytes": self.size_bytes,
            "latency_ms": self.latency_ms,
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement,
            "accuracy": self.accuracy,
            "relative_error": self.relative_error,
            "error": self.error,
            "admissible": self.admissible,
            "reason": self.reason,
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
        return out
