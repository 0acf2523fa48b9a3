"""Step 5: load-test served models side by side (servers, load engines, statistics, verdict)."""

from .options import BenchOptions
from .output import write_outputs
from .run import BenchReport, run_bench

__all__ = ["BenchOptions", "BenchReport", "run_bench", "write_outputs"]
