"""Runtimes: the one place sessions are made and run. Every caller (export, measure, the steps,
serve, bench) imports these five names from here, never a runtime module itself:

- ``make_session(model, *, threads=None, optimization="all", optimized_model_path=None,
  spinning=None)``: a session for a model file or ``ModelProto``; ModelLoadError if it cannot load
- ``run(session, feeds)``: ``{output name: array}``; a feed the model refuses raises DataError
- ``run_dataset(session, data, *, batch_size=256, specs=None)``: a whole DataSet in batches, each
  output joined along its own batch axis
- ``default_threads()``: the CPUs this process may use (affinity capped by the cgroup limit)
- ``session_counts()``: sessions made so far, per model file (the pipeline reports them)

ONNX Runtime (``onnxruntime.py``) backs them today. Another runtime gets a module beside it and
is chosen behind these functions; callers do not change.
"""

from .onnxruntime import default_threads, make_session, run, run_dataset, session_counts

__all__ = ["default_threads", "make_session", "run", "run_dataset", "session_counts"]
