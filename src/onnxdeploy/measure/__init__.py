"""The one measurement stage: a reference built once, variants with lineage, metrics by output
kind, and interleaved latency with an A/A control and a time budget."""

from .latency import DEFAULT_BUDGET_S, DEFAULT_LATENCY_BATCH, Figure, Latency
from .numeric import Comparison, OutputMetric, drift, equivalence, output_kinds
from .reference import Reference, build_reference
from .variants import (
    RUNTIME_VARIANTS,
    Measurement,
    Variant,
    VariantResult,
    is_int8_op,
    measure_variants,
    runtime_variants,
)

__all__ = [
    "DEFAULT_BUDGET_S", "DEFAULT_LATENCY_BATCH", "Comparison", "Figure", "Latency", "Measurement",
    "OutputMetric", "RUNTIME_VARIANTS", "Reference", "Variant", "VariantResult", "build_reference", "drift",
    "equivalence", "is_int8_op", "measure_variants", "output_kinds", "runtime_variants",
]
