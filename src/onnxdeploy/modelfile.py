"""ONNX model files: safe loading and atomic saving (external data included), signatures, sizes.

Everything that touches an ``.onnx`` file on disk goes through here, so that sizes always count
external data, a copy or move keeps the model loadable, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from .errors import ModelLoadError, first_line

#: protobuf cannot serialize a message of 2 GiB or more; stay clear of the limit.
PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_THRESHOLD = int(1.8 * 2**30)

#: keys under which onnxdeploy keeps its own facts in ``metadata_props``
META_TASK = "onnxdeploy.task"
META_LABELS = "onnxdeploy.labels"
META_INPUT_SCALING = "onnxdeploy.input_scaling"
META_SOURCE = "onnxdeploy.source"
#: a written variant's runtime (``onnxruntime`` | ``openvino``) and precision (``fp32``, ``bf16``,
#: ``fp16``, ``int8``): serve runs the file on that runtime unless ``--runtime`` says otherwise
META_RUNTIME = "onnxdeploy.runtime"
META_PRECISION = "onnxdeploy.precision"


# --------------------------------------------------------------------------- loading / saving


def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file; expected a path to an .onnx model")
    if not p.is_file():
        raise ModelLoadError(f"{p}: is a directory; expected a path to an .onnx model")
    return p


def load_model(path: str | os.PathLike, *, load_external_data: bool = True) -> onnx.ModelProto:
    """Read an ONNX model (with its external data) or raise ModelLoadError saying why not."""
    p = _existing_file(path)
    try:
        model = onnx.load(str(p), load_external_data=load_external_data)
    except (DecodeError, RuntimeWarning, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{p}: not an ONNX model (protobuf parse failed: {exc})") from exc
    except FileNotFoundError as exc:
        raise ModelLoadError(
            f"{p}: external data file missing ({exc.filename or exc}); keep the .data file beside the model"
        ) from exc
    except Exception as exc:  # onnx raises a variety of types for corrupt input
        raise ModelLoadError(f"{p}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{p}: not an ONNX model (no graph found in the file)")
    return model


def check_model(model: onnx.ModelProto | str | os.PathLike, *, name: str = "model") -> None:
    """Run ``onnx.checker`` (on the path for models over 2 GB) and raise ModelLoadError on failure."""
    try:
        if isinstance(model, onnx.ModelProto):
            if model.ByteSize() >= PROTOBUF_LIMIT:
                raise ModelLoadError(f"{name}: over 2 GB in memory; check it from its saved path")
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(str(model))
    except onnx.checker.ValidationError as exc:
        first = first_line(exc)
        raise ModelLoadError(f"{name}: invalid ONNX graph: {first}") from exc


def save_model(
    model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None
) -> Path:
    """Save atomically; weights go to ``<name>.data`` beside it when asked or when over ~1.8 GB.

    The model and its data file are first written into a temporary directory beside the target
    and then moved into place, so an interrupted save leaves the previous files untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = model.ByteSize() > EXTERNAL_THRESHOLD
    data_name = target.name + ".data"
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tmp_model = tmpdir / target.name
        if external_data:
            onnx.save_model(
                model,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, str(tmp_model))
        if (tmpdir / data_name).exists():
            os.replace(tmpdir / data_name, target.parent / data_name)
        os.replace(tmp_model, target)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return target


def copy_model(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a model with its external data so that the copy loads on its own."""
    model = load_model(src)
    uses_external = bool(external_data_files(src))
    return save_model(model, dst, external_data=uses_external or None)


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The external data files a saved model refers to (deduplicated, in first-use order)."""
    p = _existing_file(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception:
        return []
    seen: dict[Path, None] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    seen[(p.parent / entry.value)] = None
    return list(seen)


def model_size(path: str | os.PathLike) -> int:
    """Bytes on disk of the model file plus every external data file it uses."""
    p = _existing_file(path)
    total = p.stat().st_size
    for data in external_data_files(p):
        if data.exists():
            total += data.stat().st_size
    return total


def _all_tensors(model: onnx.ModelProto):
    """Every TensorProto in the model, subgraphs and Constant attributes included."""
    yield from onnx.external_data_helper._get_all_tensors(model)


# --------------------------------------------------------------------------- signature


#: the dim_param some converters (Paddle2ONNX, tf2onnx) write for "unknown"; several unrelated
#: axes may carry it, so it is no name at all
UNNAMED_DIM = "?"


def is_fixed_dim(dim: int | str | None) -> bool:
    """True for a dimension with a known size: an ``int`` > 0 (-1 and 0 mean dynamic)."""
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def dim_name(dim: int | str | None) -> str | None:
    """The symbolic name of a dynamic dimension, or None when it is unnamed (-1, 0, '?', empty)."""
    if isinstance(dim, str) and dim.strip() and dim != UNNAMED_DIM:
        return dim
    return None


def fmt_dim(dim: int | str | None) -> str:
    """One dimension as the converter wrote it: ``-1``, ``'?'``, ``batch``, ``?`` for an empty dim."""
    if dim is None:
        return "?"
    return str(dim)


def fmt_shape(shape) -> str:
    """A shape as written, e.g. ``[batch, 3, -1]``; ``unknown`` when even the rank is unknown."""
    if shape is None:
        return "unknown"
    return "[" + ", ".join(fmt_dim(d) for d in shape) + "]"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, numpy dtype (None if not a tensor) and shape.

    Dimensions are kept as the file writes them: an ``int`` from ``dim_value`` (-1 and 0 are
    dynamic, as Paddle2ONNX and some TF converters write them), a ``str`` from ``dim_param``
    (``'?'`` is unnamed), ``None`` when the dim is empty; ``shape`` is None when even the rank is
    unknown. ``batch_axis`` is the axis that carries samples (see ``Signature``), None if none.
    """

    name: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...] | None
    kind: str = "tensor"
    batch_axis: int | None = None

    @property
    def has_batch_axis(self) -> bool:
        """True when an axis of this tensor carries the batch."""
        return self.batch_axis is not None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def fixed(self, axis: int) -> int | None:
        """The fixed size of ``axis``, or None when it is dynamic."""
        d = self.shape[axis] if self.shape is not None else None
        return int(d) if is_fixed_dim(d) else None

    def dynamic_axes(self) -> list[int]:
        """Axes whose size is not fixed."""
        return [i for i, d in enumerate(self.shape or ()) if not is_fixed_dim(d)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": None if self.dtype is None else str(self.dtype),
            "shape": None if self.shape is None else list(self.shape),
            "batch_axis": self.batch_axis,
            **({"kind": self.kind} if self.kind != "tensor" else {}),
        }


@dataclass(frozen=True)
class Signature:
    """A model's graph inputs (initializers excluded) and outputs, each with its batch axis."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: the dim name the batch axis carries across tensors (e.g. ``batch``), if one was found
    batch_dim: str | None = None

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def batch_axes(self) -> dict[str, int | None]:
        """Input name -> its batch axis (None for inputs without one: a sample rate, a flag)."""
        return {s.name: s.batch_axis for s in self.inputs}

    @property
    def batched(self) -> bool:
        """True when at least one input carries a batch axis."""
        return any(s.batch_axis is not None for s in self.inputs)

    def with_batch_axes(self, overrides: dict[str, int | None]) -> Signature:
        """The same signature with the batch axis of some inputs set by the user (``--batch-axis``)."""
        from .errors import OptionError

        names = {s.name for s in self.inputs}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise OptionError(
                f"--batch-axis {unknown[0]}: no such input; the model's inputs are {', '.join(sorted(names))}"
            )
        inputs = []
        for s in self.inputs:
            if s.name in overrides:
                axis = overrides[s.name]
                if axis is not None and s.shape is not None and -len(s.shape) <= axis < 0:
                    axis += len(s.shape)  # -1 is the last axis, as in numpy
                if axis is not None and (s.shape is None or not 0 <= axis < len(s.shape)):
                    raise OptionError(
                        f"--batch-axis {s.name}={axis}: input '{s.name}' has shape {fmt_shape(s.shape)}; "
                        "expected an axis index within its rank"
                    )
                if axis is not None and is_fixed_dim(s.shape[axis]):
                    raise OptionError(
                        f"--batch-axis {s.name}={axis}: axis {axis} of '{s.name}' is fixed at "
                        f"{s.shape[axis]}; a batch axis must be dynamic"
                    )
                s = replace(s, batch_axis=axis)
            inputs.append(s)
        return Signature(tuple(inputs), self.outputs, self.batch_dim)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "batch_dim": self.batch_dim,
        }


def parse_batch_axes(items: list[str] | tuple[str, ...] | None) -> dict[str, int | None]:
    """Parse ``INPUT=AXIS`` pairs given to ``--batch-axis`` (``INPUT=none`` for no batch axis)."""
    from .errors import OptionError

    out: dict[str, int | None] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        value = value.strip().lower()
        if not sep or not name or not (value == "none" or value.lstrip("-").isdigit()):
            raise OptionError(
                f"--batch-axis {item!r}: expected INPUT=AXIS with an axis index (or INPUT=none), e.g. state=1"
            )
        axis = None if value == "none" else int(value)
        if name in out and out[name] != axis:
            raise OptionError(
                f"--batch-axis {name} given twice ({out[name]} and {axis}); expected one axis per input"
            )
        out[name] = axis
    return out


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    t = value.type
    which = t.WhichOneof("value")
    if which != "tensor_type":
        return TensorSpec(value.name, None, None, kind=which.replace("_type", "") if which else "unknown")
    tt = t.tensor_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
    except (KeyError, TypeError, ValueError):
        dtype = None
    shape: tuple[int | str | None, ...] | None
    if not tt.HasField("shape"):
        shape = None
    else:
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorSpec(value.name, dtype, shape)


def _shared_batch_name(specs: list[TensorSpec]) -> str | None:
    """The dim name the inputs share that looks most like the batch, or None when none is shared.

    Among names carried by two or more inputs, the one that is most often an input's first
    named dim wins (``batch`` over ``seq`` even when ``position_ids [1, seq]`` makes ``seq`` the
    more common name), then the most common, then the earliest-placed.
    """
    seen: dict[str, list[int]] = {}
    first: Counter = Counter()
    for s in specs:
        names: dict[str, int] = {}
        for axis, d in enumerate(s.shape or ()):
            n = dim_name(d)
            if n is not None and n not in names:
                names[n] = axis
        if names:
            first[next(iter(names))] += 1
        for n, axis in names.items():
            seen.setdefault(n, []).append(axis)
    shared = [(n, axes) for n, axes in seen.items() if len(axes) >= 2]
    if not shared:
        return None
    shared.sort(key=lambda item: (-first[item[0]], -len(item[1]), sum(item[1]) / len(item[1])))
    return shared[0][0]


def _batch_axis(spec: TensorSpec, name: str | None) -> int | None:
    """The axis carrying ``name``; else the first dynamic axis that is not named otherwise.

    When a batch name is known, an axis named something else (``seq`` in ``position_ids
    [1, seq]``) is a different dimension, not the batch: such a tensor has no batch axis.
    """
    if spec.shape is None or spec.dtype is None:
        return None
    if name is not None:
        for axis, d in enumerate(spec.shape):
            if d == name:
                return axis
    for axis in spec.dynamic_axes():
        if name is None or dim_name(spec.shape[axis]) is None:
            return axis
    return None


def with_batch_axes(inputs, outputs) -> Signature:
    """A Signature from specs as written, each given its batch axis.

    The batch axis is found from the dim name the inputs share (``batch`` in
    ``state [2, batch, 128]``), else it is the tensor's first dynamic axis, else there is none.
    Used for model files and for signatures read from a server's metadata alike.
    """
    inputs, outputs = list(inputs), list(outputs)
    name = _shared_batch_name(inputs)
    if name is None and len(inputs) == 1:
        first = inputs[0].dynamic_axes()
        name = dim_name(inputs[0].shape[first[0]]) if first and inputs[0].shape else None
    inputs = [replace(s, batch_axis=_batch_axis(s, name)) for s in inputs]
    outputs = [replace(s, batch_axis=_batch_axis(s, name)) for s in outputs]
    return Signature(tuple(inputs), tuple(outputs), name)


def signature(model: onnx.ModelProto) -> Signature:
    """The model's real inputs (graph inputs that are not initializers) and its outputs."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [_spec(v) for v in model.graph.input if v.name not in inits]
    outputs = [_spec(v) for v in model.graph.output]
    return with_batch_axes(inputs, outputs)


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class ClassifierInfo:
    """What the metadata says about a classifier: its labels and how raw input is scaled."""

    labels: tuple[str, ...] = ()
    input_scaling: dict[str, Any] = field(default_factory=dict)


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    """``metadata_props`` as a plain dict."""
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Set (or replace) ``metadata_props`` entries in place."""
    current = metadata(model)
    current.update(values)
    del model.metadata_props[:]
    for key, value in current.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def write_variant(src: str | os.PathLike, dst: str | os.PathLike, *, runtime: str,
                  precision: str) -> Path:
    """Write ``src`` to ``dst`` (the same file when they are one path) with the variant's runtime
    and precision in its metadata; external data stays external."""
    model = load_model(src)
    set_metadata(model, {META_RUNTIME: runtime, META_PRECISION: precision})
    return save_model(model, dst, external_data=bool(external_data_files(src)) or None)


def classifier_metadata(
    *, labels: list[str], input_scaling: dict[str, Any], source: str
) -> dict[str, str]:
    """The ``metadata_props`` entries that mark a model as a classifier."""
    return {
        META_TASK: "classification",
        META_LABELS: json.dumps(list(labels)),
        META_INPUT_SCALING: json.dumps(input_scaling),
        META_SOURCE: source,
    }


def classifier_info(model: onnx.ModelProto) -> ClassifierInfo | None:
    """The classifier facts from the metadata, or None when the model is not marked a classifier."""
    meta = metadata(model)
    if meta.get(META_TASK) != "classification":
        return None
    try:
        labels = tuple(str(x) for x in json.loads(meta.get(META_LABELS, "[]")))
    except (ValueError, TypeError):
        labels = ()
    try:
        scaling = json.loads(meta.get(META_INPUT_SCALING, "{}"))
    except ValueError:
        scaling = {}
    return ClassifierInfo(labels=labels, input_scaling=scaling if isinstance(scaling, dict) else {})


# --------------------------------------------------------------------------- structure


def iter_nodes(graph: onnx.GraphProto):
    """Every node of a graph, descending into If/Loop/Scan subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_nodes(g)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Operator type -> number of nodes (subgraphs included), sorted by name."""
    counts = Counter(
        (f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type
        for n in iter_nodes(model.graph)
    )
    return dict(sorted(counts.items()))


#: operators that make a model int8 (``com.microsoft.`` prefixes allowed)
_INT8_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM",
    "QEmbedLayerNormalization", "MatMulNBits",
})


def is_int8_op(op_type: str) -> bool:
    """True for an int8 operator (``com.microsoft.`` prefixes allowed, as in ``op_counts``)."""
    op = op_type.rsplit(".", 1)[-1]
    return op in _INT8_OPS or op.startswith("QLinear")


def quantized_ops(model: onnx.ModelProto) -> dict[str, int]:
    """The int8 operators a model already holds (empty for a float model)."""
    found: dict[str, int] = {}
    for node in iter_nodes(model.graph):
        if is_int8_op(node.op_type):
            found[node.op_type] = found.get(node.op_type, 0) + 1
    return dict(sorted(found.items()))


def opset_version(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


# --------------------------------------------------------------------------- a model directory

#: metadata key (and the ``<file>.measured_cpu.json`` beside a model) recording the CPU a
#: variant was measured on: ``{"cpu": "...", "flags": {"avx2": true, ...}, "source": "..."}``
META_MEASURED_CPU = "onnxdeploy.measured_cpu"
MEASURED_CPU_SUFFIX = ".measured_cpu.json"


def _listing(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def visible_entries(directory: str | os.PathLike) -> list[Path]:
    """The entries of a directory that are not hidden (Kubernetes' ``..data`` links, dotfiles)."""
    return sorted(p for p in Path(directory).iterdir() if not p.name.startswith("."))


def served_model_in(directory: str | os.PathLike, flag: str = "--model_dir") -> Path:
    """The model a directory holds: its one ``.onnx`` file, or in a pipeline output directory
    (it has ``report.json``) the variant ``verdict.ship`` names.

    Raises ModelLoadError (exit 2) with one line naming what was found and what was expected.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ModelLoadError(f"{flag} {d}: not a directory; expected a directory holding one "
                             ".onnx model (or a pipeline output directory with report.json)")
    report = d / "report.json"
    if report.is_file():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
            ship = data["verdict"]["ship"]
            entry = next(v for v in data.get("variants", []) if v.get("name") == ship)
        except (OSError, ValueError, KeyError, TypeError, StopIteration):
            raise ModelLoadError(f"{flag} {d}: report.json names no shipped variant (verdict.ship "
                                 "with a matching variants[] entry); expected a pipeline "
                                 "report.json, or a directory with exactly one .onnx file") from None
        recorded = Path(str(entry.get("path", "")))
        # the directory may have moved (copied to a volume, /mnt/models): its own copy first
        for candidate in (d / recorded.name, d / recorded, recorded):
            if recorded.name and candidate.is_file():
                return candidate
        raise ModelLoadError(f"{flag} {d}: report.json ships '{ship}' ({recorded.name}) but that "
                             f"file is not in the directory; expected {recorded.name} beside "
                             "report.json")
    entries = visible_entries(d)
    models = [p for p in entries if p.suffix == ".onnx" and p.is_file()]
    if len(models) == 1:
        return models[0]
    if not models:
        found = _listing([p.name + ("/" if p.is_dir() else "") for p in entries]) or "nothing"
        raise ModelLoadError(f"{flag} {d}: no .onnx file (found: {found}); expected exactly one "
                             ".onnx model, or a pipeline output directory with report.json")
    raise ModelLoadError(f"{flag} {d}: {len(models)} .onnx files ({_listing([p.name for p in models])}); "
                         "expected exactly one, or a pipeline output directory whose report.json "
                         "names the variant to ship")


def measured_cpu(path: str | os.PathLike, model: onnx.ModelProto | None = None) -> dict | None:
    """The CPU a model's measurement ran on, if recorded: the JSON beside it, else its metadata."""
    p = Path(path)
    beside = p.with_name(p.name + MEASURED_CPU_SUFFIX)
    text = None
    if beside.is_file():
        text = beside.read_text(encoding="utf-8")
    else:
        if model is None:
            try:
                model = onnx.load(str(p), load_external_data=False)
            except Exception:  # noqa: BLE001 - unreadable models fail elsewhere, clearly
                return None
        text = metadata(model).get(META_MEASURED_CPU)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("flags"), dict) else None
