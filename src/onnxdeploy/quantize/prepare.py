"""Getting any float model into the shape ORT's quantizer expects, and refusing models it must not see.

The order matters: Constant weights become initializers (``quantize_dynamic`` only quantizes
initializers), stale ``value_info`` is dropped (onnxruntime#25890: "Inferred shape and existing
shape differ" on dynamo exports), the opset is raised to one the quantizer fully supports, and
only then ``quant_pre_process`` runs shape inference and clean-up, retried without symbolic shape
inference (and then without optimization) when that fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelLoadError, first_line
from ..modelfile import (
    EXTERNAL_THRESHOLD,
    is_int8_op,
    opset_version,
    quantized_ops,
    save_model,
)

#: QDQ per-channel needs the ``axis`` attribute of QuantizeLinear (opset 13); dynamic needs >= 11
MIN_OPSET = 13

def is_quantized_op(op_type: str) -> bool:
    """True for an int8 operator (``com.microsoft.`` prefixes allowed, as in ``op_counts``)."""
    return is_int8_op(op_type)


def check_not_quantized(model: onnx.ModelProto, name: str) -> None:
    """Raise ModelLoadError when the model is already quantized: quantizing twice compounds error."""
    found = quantized_ops(model)
    if found:
        ops = ", ".join(f"{k} x{v}" for k, v in found.items())
        raise ModelLoadError(
            f"{name}: already quantized (has {ops}); expected a float model: quantize the original instead"
        )


_SCALAR_ATTRS = {
    "value_float": np.float32, "value_floats": np.float32,
    "value_int": np.int64, "value_ints": np.int64,
}


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn top-level Constant nodes into initializers (in place); returns how many were converted."""
    graph = model.graph
    taken = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep, converted = [], 0
    for node in graph.node:
        tensor = _constant_tensor(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
        name = node.output[0] if node.output else ""
        if tensor is None or name in taken or name in outputs:
            keep.append(node)
            continue
        tensor.name = name
        graph.initializer.append(tensor)
        if model.ir_version < 4:  # before IR 4 every initializer had to be a graph input too
            graph.input.append(onnx.helper.make_tensor_value_info(name, tensor.data_type, tensor.dims))
        taken.add(name)
        converted += 1
    if converted:
        del graph.node[:]
        graph.node.extend(keep)
    return converted


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attr.t)
            return tensor
        if attr.name in _SCALAR_ATTRS:
            value = onnx.helper.get_attribute_value(attr)
            return numpy_helper.from_array(np.asarray(value, dtype=_SCALAR_ATTRS[attr.name]))
    return None  # sparse or string constants: not weights, leave them be


def name_unnamed_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed top-level node a unique name (``<op>_<index>``): ORT's quantizer picks
    nodes to leave float by name, and some converters write none."""
    taken = {n.name for n in model.graph.node if n.name}
    count = 0
    for i, node in enumerate(model.graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{i}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
        count += 1
    return count


def drop_value_info(model: onnx.ModelProto) -> int:
    """Remove intermediate shape annotations (shape inference recomputes them); returns the count."""
    count = len(model.graph.value_info)
    del model.graph.value_info[:]
    return count


def ensure_opset(model: onnx.ModelProto, name: str, minimum: int = MIN_OPSET) -> onnx.ModelProto:
    """The model at ``minimum`` opset or above, upgraded by onnx.version_converter when below."""
    current = opset_version(model)
    if current >= minimum:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, minimum)
        onnx.checker.check_model(upgraded)
    except Exception as exc:
        first = first_line(exc)
        raise ModelLoadError(
            f"{name}: opset {current} is below {minimum}, which int8 quantization needs "
            f"(QuantizeLinear with per-axis scales), and onnx.version_converter could not upgrade it "
            f"({first}); re-export the model at opset {minimum} or newer"
        ) from exc
    return upgraded


@contextlib.contextmanager
def working_directory(path: Path):
    """Run with ``path`` as the current directory: ORT's symbolic shape inference saves
    ``sym_shape_infer_temp.onnx`` and a weight-sized ``<uuid>.data`` into the current directory
    when it fails, and the quantizers write scratch files there too."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def quiet_quantizer(logger: str | None = None):
    """Silence a quantizer's logger (ORT's logs advice through the root logger, NNCF through
    ``nncf``) to errors while the block runs; steps never print."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@dataclass
class Prepared:
    """A float model ready for ORT's quantizer, with what was done to it."""

    path: Path
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def prepare(model: onnx.ModelProto, workdir: Path, name: str) -> Prepared:
    """Clean ``model`` (a copy) and pre-process it into ``workdir``; the float semantics stay."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    notes: list[str] = []
    warnings: list[str] = []
    n = constants_to_initializers(work)
    if n:
        notes.append(f"converted {n} Constant node(s) to initializers so their weights can be quantized")
    n = name_unnamed_nodes(work)
    if n:
        notes.append(f"named {n} unnamed node(s) so single nodes can be kept float")
    n = drop_value_info(work)
    if n:
        notes.append(f"dropped {n} stale value_info entries (shapes are inferred again)")
    before = opset_version(work)
    work = ensure_opset(work, name)
    if opset_version(work) != before:
        notes.append(f"upgraded opset {before} -> {opset_version(work)} with onnx.version_converter")
    external = work.ByteSize() > EXTERNAL_THRESHOLD
    clean = save_model(work, workdir / "clean.onnx", external_data=external)
    target = workdir / "prepared.onnx"
    attempts = (
        ("full", {}),
        ("without symbolic shape inference", {"skip_symbolic_shape": True}),
        ("without symbolic shape inference and optimization",
         {"skip_symbolic_shape": True, "skip_optimization": True}),
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    errors: list[str] = []
    for label, kwargs in attempts:
        try:
            with quiet_quantizer(), working_directory(workdir):
                quant_pre_process(
                    str(clean), str(target), save_as_external_data=external,
                    all_tensors_to_one_file=True,
                    external_data_location="prepared.onnx.data" if external else None, **kwargs,
                )
        except Exception as exc:  # the pre-processor raises anything from shape inference
            errors.append(f"{label}: {type(exc).__name__}: {first_line(exc, '')}")
            continue
        if errors:
            warnings.append(
                f"pre-processing succeeded only {label} (earlier attempt failed: {errors[0]}); "
                "tensors with unknown shapes may stay float"
            )
        notes.append(f"pre-processed with quant_pre_process ({label})")
        return Prepared(target, notes, warnings)
    warnings.append(
        f"pre-processing failed ({errors[-1]}); quantizing the cleaned model without it"
    )
    return Prepared(clean, notes, warnings)
