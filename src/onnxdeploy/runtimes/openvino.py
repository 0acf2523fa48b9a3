"""OpenVINO sessions behind ``onnxdeploy.runtimes``: the ``.onnx`` file read directly
(``ov.Core().read_model``), compiled for the CPU with a thread count and a precision hint, and
run with the same inputs, outputs and dtypes as ONNX Runtime gives our callers.

The session object looks like ORT's to every caller: ``get_inputs()`` / ``get_outputs()`` list
``name``, ``shape`` (ints, dim names, None) and ``type`` (``tensor(float)``) as the ONNX file
declares them, and ``run(names, feeds)`` returns a list of arrays in that order. OpenVINO's own
port names are not used for lookup: it may rename a graph input after a node it folded into it
(``tokens`` came back as ``ids`` behind a Cast), so inputs and outputs are matched by the names
the file declares, among every name OpenVINO gives a port.

Precision: ``fp32`` sets ``INFERENCE_PRECISION_HINT`` to f32 (exact float); ``bf16`` and
``fp16`` ask for those; ``default`` leaves OpenVINO's choice (bf16 on CPUs with BF16 units).
``session.precision`` is what the compiled model reports it used, never what was asked.

Nothing outside ``runtimes/`` imports openvino; without the extra, ``make_session`` raises
MissingDependencyError with the pip hint.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import DataError, ModelLoadError, OptionError, first_line, require
from .common import RUNNERS, SESSIONS, default_threads

RUNTIME = "openvino"
#: our precision words -> OpenVINO's INFERENCE_PRECISION_HINT (None: OpenVINO chooses)
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32", "default": None}
#: OpenVINO's element type names -> our precision words
_USED = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "float16": "fp16"}

#: ONNX element types -> numpy dtypes and ORT's type words
_ONNX_TYPES = {
    onnx.TensorProto.FLOAT: ("float", np.float32), onnx.TensorProto.DOUBLE: ("double", np.float64),
    onnx.TensorProto.FLOAT16: ("float16", np.float16), onnx.TensorProto.INT8: ("int8", np.int8),
    onnx.TensorProto.UINT8: ("uint8", np.uint8), onnx.TensorProto.INT16: ("int16", np.int16),
    onnx.TensorProto.UINT16: ("uint16", np.uint16), onnx.TensorProto.INT32: ("int32", np.int32),
    onnx.TensorProto.UINT32: ("uint32", np.uint32), onnx.TensorProto.INT64: ("int64", np.int64),
    onnx.TensorProto.UINT64: ("uint64", np.uint64), onnx.TensorProto.BOOL: ("bool", np.bool_),
}


def version() -> str:
    """OpenVINO's version, short (``2026.4.1``), or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return "not installed"
    return openvino.__version__.split("-")[0]


def available() -> bool:
    """Whether the ``openvino`` extra is installed (imports it once)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Arg:
    """An input or output as ORT's ``NodeArg`` shows it."""

    name: str
    shape: list[Any] | None
    type: str
    dtype: Any = None


def _arg(value: onnx.ValueInfoProto) -> Arg:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return Arg(value.name, None, {"sequence_type": "seq", "map_type": "map"}.get(kind, str(kind)) + "(...)")
    tt = value.type.tensor_type
    word, dtype = _ONNX_TYPES.get(tt.elem_type, (onnx.TensorProto.DataType.Name(tt.elem_type).lower(), None))
    shape = None
    if tt.HasField("shape"):
        # as ORT shows them: a fixed size, a dim name, or None (unnamed, or Paddle's -1)
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or None)
                 for d in tt.shape.dim]
    return Arg(value.name, shape, f"tensor({word})", dtype)


class OpenVINOSession:
    """A compiled OpenVINO model with ORT's session face (``get_inputs``, ``get_outputs``, ``run``).

    One infer request per thread: a request is not thread-safe, the compiled model is, so the
    server's threads each run their own request like they share one ORT session.
    """

    runtime = RUNTIME

    def __init__(self, compiled, inputs: list[Arg], outputs: list[Arg], *, name: str,
                 threads: int, requested: str, precision: str):
        self.compiled = compiled
        self.name = name
        self.threads = threads
        #: the precision asked for, and the one the compiled model reports it uses
        self.requested = requested
        self.precision = precision
        self._inputs, self._outputs = inputs, outputs
        self._in_ports = {a.name: _port(compiled.inputs, a.name, i) for i, a in enumerate(inputs)}
        self._out_ports = {a.name: _port(compiled.outputs, a.name, i) for i, a in enumerate(outputs)}
        self._local = threading.local()

    def get_inputs(self) -> list[Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[Arg]:
        return list(self._outputs)

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, output_names, feeds: dict[str, np.ndarray], run_options=None) -> list[np.ndarray]:
        """Outputs in the order of ``output_names`` (all, in graph order, for None), as ORT does.

        Raises ValueError for a missing or unknown input or a wrong dtype (ORT refuses those
        too; OpenVINO would convert the dtype silently) and RuntimeError when OpenVINO refuses.
        """
        unknown = sorted(set(feeds) - set(self._in_ports))
        missing = [a.name for a in self._inputs if a.name not in feeds]
        if unknown or missing:
            raise ValueError(f"inputs {', '.join(unknown) or 'none'} unknown, {', '.join(missing) or 'none'} "
                             f"missing; the model takes {', '.join(self._in_ports)}")
        import openvino as ov

        request = self._request()
        for arg in self._inputs:
            value = np.asarray(feeds[arg.name])
            if arg.dtype is not None and value.dtype != np.dtype(arg.dtype):
                raise ValueError(f"input '{arg.name}' has dtype {value.dtype}; expected {np.dtype(arg.dtype)}")
            _check_shape(arg, value.shape)
            if not value.flags.c_contiguous:  # not np.ascontiguousarray: it makes a 0-d input 1-d
                value = value.copy()
            # set_tensor on a shared buffer, then infer(): a dict to infer() cost ~0.3 ms a call
            request.set_tensor(self._in_ports[arg.name], ov.Tensor(value, shared_memory=True))
        request.infer()
        names = [a.name for a in self._outputs] if output_names is None else list(output_names)
        by_name = {a.name: a for a in self._outputs}
        out = []
        for n in names:
            if n not in by_name:
                raise ValueError(f"unknown output '{n}'")
            # copy: the request's buffers are overwritten by its next run
            value = np.array(request.get_tensor(self._out_ports[n]).data, copy=True)
            want = by_name[n].dtype
            if want is not None and value.dtype != np.dtype(want):
                value = value.astype(want)
            out.append(value)
        return out


def _check_shape(arg: Arg, shape: tuple[int, ...]) -> None:
    """Refuse a feed whose rank or fixed dims differ from the file's, as ORT does: OpenVINO
    answered an ``x [batch, 4]`` fed ``[2, 5]`` with an empty output instead of an error."""
    if arg.shape is None:
        return
    if len(shape) != len(arg.shape):
        raise ValueError(f"input '{arg.name}' has rank {len(shape)}; expected rank {len(arg.shape)}")
    for axis, (got, want) in enumerate(zip(shape, arg.shape)):
        if isinstance(want, int) and want > 0 and got != want:
            raise ValueError(f"input '{arg.name}': axis {axis} is {got}; expected {want}")


def _port(ports, name: str, index: int):
    """The compiled model's port carrying ``name`` among its names, else the one at ``index``."""
    for port in ports:
        if name in port.get_names():
            return port
    return ports[index]


def make_session(model: str | os.PathLike | onnx.ModelProto, *, threads: int | None = None,
                 precision: str = "fp32") -> OpenVINOSession:
    """A CPU session of OpenVINO at ``precision``; a model it cannot read or compile raises
    ModelLoadError in one line naming the operator and the OpenVINO version."""
    if precision not in HINTS:
        raise OptionError(f"precision {precision!r} on OpenVINO: expected one of {', '.join(HINTS)}")
    require("openvino", "openvino")
    threads = threads or default_threads()
    if isinstance(model, onnx.ModelProto):
        proto, name, source = model, "model", model.SerializeToString()
        SESSIONS["<in-memory>"] += 1
    else:
        from ..modelfile import load_model

        proto, name, source = load_model(model, load_external_data=False), Path(model).name, str(model)
        SESSIONS[str(Path(model).resolve())] += 1
    inits = {i.name for i in proto.graph.initializer}
    inputs = [_arg(v) for v in proto.graph.input if v.name not in inits]
    outputs = [_arg(v) for v in proto.graph.output]
    # no CPU pinning: OpenVINO pins its threads to cores by default, so two processes of one
    # thread each (serve's workers) both ran on the same core: MiniLM NNCF int8 in process, 2
    # processes x 1 thread, 44-46 calls/s in all pinned against 99-104 unpinned (one process
    # alone: 50; docs/runtimes.md, "Served")
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                              "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
    if HINTS[precision] is not None:
        config["INFERENCE_PRECISION_HINT"] = HINTS[precision]
    core = _core()
    try:
        read = core.read_model(source) if isinstance(source, str) else core.read_model(source, b"")
        compiled = core.compile_model(read, "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError / OpConversionFailure with pages of text
        raise ModelLoadError(f"{name}: {refusal(exc)}") from exc
    used = compiled.get_property("INFERENCE_PRECISION_HINT")
    used = used.get_type_name() if hasattr(used, "get_type_name") else str(used)
    return OpenVINOSession(compiled, inputs, outputs, name=name, threads=threads, requested=precision,
                           precision=_precision_word(used))


_CORE = None
_CORE_LOCK = threading.Lock()


def _core():
    """One ``ov.Core`` per process (it holds the plugins)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
        return _CORE


def _precision_word(used: str) -> str:
    """``fp32``, ``bf16``, ``fp16`` from OpenVINO's type name (``f32``, ``bf16``, ``f16``)."""
    key = used.lower().strip()
    return _USED.get(key, key)


_OP = re.compile(r"^--\s*(\S+?)(?:\s+with a message|:|$)")
_UNSUPPORTED = re.compile(r"(?:not support(?:ed)? the following ONNX operations|"
                          r"No conversion rule found for operations?):?\s*(.+)", re.I)
_NOISE = re.compile(r"^(Exception from |Check '|FrontEnd API failed|Model wasn't fully converted|"
                    r"Failed operations detailed log|Loading input model|\[\s*ERROR|Summary:)")


def refusal(exc: BaseException) -> str:
    """OpenVINO's refusal in one line: the operator(s) it could not take and its version."""
    text = str(exc)
    ops = []
    for line in text.splitlines():
        line = line.strip()
        if m := _OP.match(line):
            ops.append(m.group(1))
        elif m := _UNSUPPORTED.search(line):
            ops.extend(o.strip() for o in m.group(1).split(",") if o.strip())
    ops = list(dict.fromkeys(ops))
    if ops:
        what = f"operator {ops[0]}" if len(ops) == 1 else f"operators {', '.join(ops)}"
        return f"OpenVINO {version()} cannot convert {what}"
    detail = next((ln.strip() for ln in text.splitlines() if ln.strip() and not _NOISE.match(ln.strip())),
                  first_line(exc))
    if detail.startswith("Unsupported value_info type"):
        detail += " (a non-tensor output, e.g. a ZipMap's sequence of maps)"
    return f"OpenVINO {version()} cannot load it: {detail}"


def run(session: OpenVINOSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run and return outputs by name; a feed the model rejects becomes DataError."""
    names = [a.name for a in session.get_outputs()]
    try:
        values = session.run(names, feeds)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DataError(f"the model rejected the input: {_run_message(exc)}") from exc
    return dict(zip(names, values))


def _run_message(exc: BaseException) -> str:
    text = str(exc)
    detail = next((ln.strip() for ln in text.splitlines() if ln.strip() and not _NOISE.match(ln.strip())),
                  first_line(exc))
    return f"{detail} (OpenVINO {version()})" if isinstance(exc, RuntimeError) else detail


RUNNERS[RUNTIME] = run
