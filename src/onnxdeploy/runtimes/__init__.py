"""Runtimes: the one place sessions are made and run. Every caller (export, measure, the steps,
serve, bench) imports these names from here, never a runtime module itself:

- ``make_session(model, *, runtime="onnxruntime", precision="fp32", threads=None,
  optimization="all", optimized_model_path=None, spinning=None)``: a session for a model file or
  ``ModelProto``; ModelLoadError if it cannot load, MissingDependencyError (with the pip hint)
  when the runtime's extra is not installed
- ``run(session, feeds)``: ``{output name: array}``; a feed the model refuses raises DataError
- ``run_dataset(session, data, *, batch_size=256, specs=None)``: a whole DataSet in batches, each
  output joined along its own batch axis
- ``default_threads()``: the CPUs this process may use (affinity capped by the cgroup limit)
- ``session_counts()``: sessions made so far, per model file (the pipeline reports them)
- ``runtime_of(session)``, ``precision_of(session)``: which runtime made a session, and the
  precision it actually runs at (OpenVINO reports it back; ORT runs the graph as written)
- ``openvino_available()``, ``openvino_version()``

ONNX Runtime (``onnxruntime.py``) is the default; OpenVINO (``openvino.py``, the ``openvino``
extra) reads the same ``.onnx`` file. Every session lists its inputs and outputs as ORT's does and
runs as ``session.run(names, feeds)``, so timing and serving code take either.
"""

from __future__ import annotations

import os

from ..errors import OptionError
from .common import default_threads, run, run_dataset, runtime_of, session_counts

#: the runtimes a variant may run on, the default first
RUNTIMES = ("onnxruntime", "openvino")
#: precision words of a variant (``onnxdeploy.precision``)
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "default")
#: the install hint of each optional runtime
EXTRAS = {"openvino": "pip install 'onnxdeploy[openvino]'"}


def make_session(model, *, runtime: str = "onnxruntime", precision: str | None = None,
                 threads: int | None = None, optimization: str = "all",
                 optimized_model_path: str | os.PathLike | None = None, spinning: bool | None = None):
    """A session of ``model`` on ``runtime`` at ``precision`` (see the module docstring).

    ORT runs the graph as written (``precision`` only records what the file holds); OpenVINO is
    told the precision as its inference precision hint (``fp32`` by default: exact float).
    ``optimization``, ``optimized_model_path`` and ``spinning`` are ORT's.
    """
    if runtime == "openvino":
        from . import openvino

        return openvino.make_session(model, threads=threads, precision=precision or "fp32")
    if runtime != "onnxruntime":
        raise OptionError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if precision is not None and precision not in PRECISIONS:
        raise OptionError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    from . import onnxruntime

    return onnxruntime.make_session(model, threads=threads, optimization=optimization,
                                    optimized_model_path=optimized_model_path, spinning=spinning)


def precision_of(session) -> str | None:
    """The precision a session runs at as its runtime reports it (OpenVINO), else None."""
    return getattr(session, "precision", None)


def openvino_available() -> bool:
    """Whether the ``openvino`` extra is installed."""
    from . import openvino

    return openvino.available()


def openvino_version() -> str:
    from . import openvino

    return openvino.version()


__all__ = ["EXTRAS", "PRECISIONS", "RUNTIMES", "default_threads", "make_session", "openvino_available",
           "openvino_version", "precision_of", "run", "run_dataset", "runtime_of", "session_counts"]
