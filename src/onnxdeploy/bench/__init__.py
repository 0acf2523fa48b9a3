"""Step 5: load-test served models side by side (servers, load engines, statistics, verdict)."""

from .output import write_outputs
from .run import BenchOptions, BenchReport, run_bench

__all__ = ["BenchOptions", "BenchReport", "run_bench", "write_outputs"]
