"""``inspect``: a model as written and as onnxdeploy understands it, without running it.

Dims are reported exactly as the file writes them (``batch``, ``-1``, ``'?'``, an empty dim
as None), beside what every step will infer from them: the batch axis of each input and the kind
of each output. External data is not read (sizes come from the files on disk), so a model of
several GB inspects in the time its graph takes to parse.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from . import modelfile
from .outputkinds import output_kind, task_of

#: metadata values longer than this (a tokenizer.json) are cut in the report
METADATA_VALUE_LIMIT = 200


def type_str(t: onnx.TypeProto) -> str:
    """An ONNX type as ORT spells it: ``tensor(float)``, ``seq(map(int64,tensor(float)))``."""
    which = t.WhichOneof("value")
    if which == "tensor_type":
        return f"tensor({_elem(t.tensor_type.elem_type)})"
    if which == "sequence_type":
        return f"seq({type_str(t.sequence_type.elem_type)})"
    if which == "map_type":
        return f"map({_elem(t.map_type.key_type)},{type_str(t.map_type.value_type)})"
    if which == "optional_type":
        return f"optional({type_str(t.optional_type.elem_type)})"
    if which == "sparse_tensor_type":
        return f"sparse_tensor({_elem(t.sparse_tensor_type.elem_type)})"
    return "unknown"


def _elem(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "undefined"


@dataclass
class InspectReport:
    """Everything ``onnxdeploy inspect`` shows; ``to_dict`` is its ``--json``."""

    path: str
    size_bytes: dict[str, int]
    external_data: list[str]
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    batch_axes: dict[str, int | None]
    batch_dim: str | None
    task: str | None
    op_counts: dict[str, int]
    nodes: int
    parameters: int
    constant_weights: int
    quantized: bool
    quantized_ops: dict[str, int]
    metadata: dict[str, str]
    metadata_truncated: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def domains(self) -> list[str]:
        """Operator domains the model imports (``ai.onnx`` for the default one)."""
        return sorted(d or "ai.onnx" for d in self.opsets)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: dims as written (-1 an int, '?' a string, an empty dim null)."""
        out = asdict(self)
        out["domains"] = self.domains
        return out


def _tensor_dict(spec: modelfile.TensorSpec, value: onnx.ValueInfoProto) -> dict[str, Any]:
    return {
        "name": spec.name,
        "type": type_str(value.type),
        "dtype": None if spec.dtype is None else str(spec.dtype),
        "shape": None if spec.shape is None else list(spec.shape),
        "batch_axis": spec.batch_axis,
    }


def _size(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


def _constant_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    found = []
    for node in modelfile.iter_nodes(model.graph):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            found += [a.t for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR]
    return found


def inspect_model(path: str | os.PathLike) -> InspectReport:
    """Read ``path`` (not its external data) and report its signature, ops, size and metadata."""
    p = Path(path)
    model = modelfile.load_model(p, load_external_data=False)
    sig = modelfile.signature(model)
    meta = modelfile.metadata(model)
    task = task_of(meta)
    values = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    inputs = [_tensor_dict(s, values[s.name]) for s in sig.inputs]
    outputs = [{**_tensor_dict(s, values[s.name]), "kind": output_kind(s, task)} for s in sig.outputs]

    data_files = modelfile.external_data_files(p)
    missing = [f.name for f in data_files if not f.exists()]
    model_bytes = p.stat().st_size
    total = modelfile.model_size(p)
    constants = [t for t in _constant_tensors(model) if _size(t) > 1]
    found = modelfile.quantized_ops(model)

    shown, truncated = {}, []
    for key, value in meta.items():
        if len(value) > METADATA_VALUE_LIMIT:
            shown[key] = value[:METADATA_VALUE_LIMIT] + f"... ({len(value)} characters)"
            truncated.append(key)
        else:
            shown[key] = value

    notes = _notes(sig, constants, found, missing, outputs)
    return InspectReport(
        path=str(p),
        size_bytes={"model": model_bytes, "external_data": total - model_bytes, "total": total},
        external_data=[f.name for f in data_files],
        ir_version=int(model.ir_version),
        producer=" ".join(x for x in (model.producer_name, model.producer_version) if x),
        opsets={(o.domain or ""): int(o.version) for o in model.opset_import},
        inputs=inputs,
        outputs=outputs,
        batch_axes=sig.batch_axes,
        batch_dim=sig.batch_dim,
        task=task,
        op_counts=modelfile.op_counts(model),
        nodes=sum(1 for _ in modelfile.iter_nodes(model.graph)),
        parameters=sum(_size(t) for t in model.graph.initializer) + sum(_size(t) for t in constants),
        constant_weights=len(constants),
        quantized=bool(found),
        quantized_ops=found,
        metadata=shown,
        metadata_truncated=truncated,
        notes=notes,
    )


def _notes(sig, constants, found, missing, outputs) -> list[str]:
    notes = []
    if not sig.batched:
        notes.append("no input has a batch axis: the model takes fixed-size feeds only "
                     "(name one with --batch-axis INPUT=AXIS if it has one)")
    for s in sig.inputs:
        if s.batch_axis is None and sig.batched:
            notes.append(f"input '{s.name}' has no batch axis: it goes whole with every batch")
        elif s.batch_axis not in (None, 0):
            notes.append(f"input '{s.name}' carries the batch on axis {s.batch_axis}")
    if any(d == modelfile.UNNAMED_DIM or (isinstance(d, int) and d <= 0)
           for s in (*sig.inputs, *sig.outputs) for d in (s.shape or ())):
        notes.append("dims written -1, 0 or '?' are dynamic and unnamed: each is free on its own")
    if constants:
        notes.append(f"{len(constants)} weight tensor(s) live in Constant nodes, not initializers: "
                     "quantize converts them first")
    if found:
        notes.append("already quantized (int8 ops present): quantize refuses it; quantize the float original")
    for o in outputs:
        if o["dtype"] is None:
            notes.append(f"output '{o['name']}' is a {o['type']}, not a tensor")
    if missing:
        notes.append(f"external data missing: {', '.join(missing)} (keep it beside the model)")
    notes += _random_data_notes(sig)
    return notes


def _random_data_notes(sig) -> list[str]:
    """What ``--data random`` would have to guess for this model (free dims without a size)."""
    from .data import load_data
    from .errors import DataError

    try:
        data = load_data("random", sig, count=1)
    except DataError as exc:
        return [f"--data random cannot feed it: {exc}"]
    return [f"random data: {n}" for n in data.notes[1:]]
