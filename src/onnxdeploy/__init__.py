"""onnxdeploy: PyTorch to production through ONNX, measured at every step.

The steps are the public Python API, each a function of input path(s) and an options dataclass
that returns a typed report (``.to_dict()`` gives the JSON the CLI prints)::

    import onnxdeploy
    report = onnxdeploy.quantize_model("model.onnx", "model.int8.onnx",
                                       onnxdeploy.QuantizeOptions(mode="auto", data="digits"))
    report.chosen, report.to_dict()["comparison"]

They are imported on first use, so ``import onnxdeploy`` stays light (a serving image has no
torch). The step packages keep their own names (``onnxdeploy.quantize`` is the package), so the
functions carry a verb: ``export_model``, ``quantize_model``, ``optimize_model``,
``compare_models``, ``run_bench``, ``run_pipeline``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: public name -> module that defines it
_PUBLIC = {
    "export_model": "export", "ExportOptions": "export", "ExportReport": "export",
    "quantize_model": "quantize", "QuantizeOptions": "quantize", "QuantizeReport": "quantize.report",
    "optimize_model": "optimize", "OptimizeOptions": "optimize", "OptimizeReport": "optimize",
    "compare_models": "compare", "CompareOptions": "compare", "CompareReport": "compare",
    "run_bench": "bench", "BenchOptions": "bench", "BenchReport": "bench.run",
    "run_pipeline": "pipeline", "PipelineOptions": "pipeline", "PipelineReport": "pipeline",
}

__all__ = ["__version__", *_PUBLIC]


def _version() -> str:
    # looked up on first use: importlib.metadata and the scan of the installed distributions
    # cost ~0.1-0.3 s, paid by every serve process (the parent and each worker) at import
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxdeploy")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxdeploy' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
