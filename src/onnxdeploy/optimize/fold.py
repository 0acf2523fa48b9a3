"""Constant folding: replace nodes that compute only from constants by the values they compute.

Fusions such as ``fuse_add_bias_into_conv`` and ``fuse_bn_into_conv`` leave arithmetic on
constants behind (a Squeeze of the bias, Mul/Add/Sqrt of BatchNorm parameters that came in
through Constant nodes), which both grows the graph and hides constants from the next fusion.
The values are computed by ONNX Runtime with every graph optimization off, so the folded model
holds exactly what the unfolded one computed at run time; nothing else in the graph is touched
(ORT's own offline optimizer would also fuse, which belongs to ``--ort-level``).

Not folded: nodes with subgraphs, non-default domains, random ops, sequence/optional values,
DequantizeLinear (quantized weights are the point of a quantized model), nodes producing graph
outputs, and any node whose result is much larger than its inputs (ConstantOfShape, Expand,
Tile ... would grow the file).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import first_line
from ..modelfile import PROTOBUF_LIMIT

NEVER_FOLD = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
    "Bernoulli", "DequantizeLinear", "If", "Loop", "Scan",
})
_SEQUENCE_PREFIXES = ("Sequence", "Optional", "SplitToSequence", "ConcatFromSequence")

#: a folded value may exceed its inputs by this factor plus this many bytes before it is refused
GROWTH_FACTOR = 2
GROWTH_SLACK_BYTES = 4096


@dataclass
class FoldResult:
    """What folding did: the model, the folded op counts, and why it stopped short if it did."""

    model: onnx.ModelProto
    folded: dict[str, int] = field(default_factory=dict)
    warning: str | None = None


def _foldable(node: onnx.NodeProto) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type in NEVER_FOLD:
        return False
    if node.op_type.startswith(_SEQUENCE_PREFIXES):
        return False
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return False
    if node.op_type == "Constant" and any(a.name == "sparse_value" for a in node.attribute):
        return False
    return True


def _names_used_in_subgraphs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read (outer-scope references included, over-approximated)."""
    used: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for inner in g.node:
                used.update(inner.input)
                used |= _names_used_in_subgraphs(inner)
    return used


def constant_closure(model: onnx.ModelProto) -> list[int]:
    """Indices of top-level nodes whose every input is a constant (initializer, Constant, folded)."""
    graph = model.graph
    graph_inputs = {v.name for v in graph.input}
    # an initializer that is also a graph input can be overridden at run time: not a constant
    constants = {i.name for i in graph.initializer if i.name not in graph_inputs} | {""}
    outputs = {o.name for o in graph.output}
    closure = []
    for index, node in enumerate(graph.node):
        if not _foldable(node) or any(o in outputs for o in node.output):
            continue
        if all(name in constants for name in node.input):
            closure.append(index)
            constants.update(node.output)
    return closure


def _evaluate(model: onnx.ModelProto, closure: list[onnx.NodeProto]) -> dict[str, np.ndarray]:
    """Run the constant nodes alone in ONNX Runtime (optimizations off) and return every value."""
    import onnxruntime as ort

    needed = {name for node in closure for name in node.input}
    inits = [i for i in model.graph.initializer if i.name in needed]
    outputs = [onnx.ValueInfoProto(name=o) for node in closure for o in node.output if o]
    graph = onnx.helper.make_graph(list(closure), "fold", [], outputs, inits)
    sub = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    if sub.ByteSize() >= PROTOBUF_LIMIT:
        raise ValueError("the constant part of the graph is over 2 GB")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(sub.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, {})))
    for name in needed:
        if name and name not in values:
            init = next(i for i in inits if i.name == name)
            values[name] = numpy_helper.to_array(init)
    return values


def _inflates(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> bool:
    outs = [values.get(o) for o in node.output if o]
    if any(not isinstance(v, np.ndarray) for v in outs):
        return True
    if node.op_type == "Constant":
        return False
    out_bytes = sum(v.nbytes for v in outs)
    in_bytes = sum(values[i].nbytes for i in node.input if i and isinstance(values.get(i), np.ndarray))
    return out_bytes > GROWTH_FACTOR * in_bytes + GROWTH_SLACK_BYTES


def fold_constants(model: onnx.ModelProto) -> FoldResult:
    """A copy of ``model`` with its constant-only top-level nodes replaced by initializers."""
    closure = constant_closure(model)
    if not closure:
        return FoldResult(model)
    nodes = list(model.graph.node)
    try:
        values = _evaluate(model, [nodes[i] for i in closure])
    except Exception as exc:  # an op ORT cannot run alone, a huge constant part ...
        first = first_line(exc)
        return FoldResult(model, warning=f"constant folding skipped: {first}")
    folded = {i for i in closure if not _inflates(nodes[i], values)}
    if not folded:
        return FoldResult(model)
    refused = set(closure) - folded
    kept = [i for i in range(len(nodes)) if i not in folded]

    # refused (inflating) closure nodes stay only while something still reads them
    while True:
        used = {o.name for o in model.graph.output}
        for i in kept:
            used.update(nodes[i].input)
            used |= _names_used_in_subgraphs(nodes[i])
        drop = {i for i in kept if i in refused and not any(o in used for o in nodes[i].output)}
        if not drop:
            break
        kept = [i for i in kept if i not in drop]
        folded |= drop

    new = onnx.ModelProto()
    new.CopyFrom(model)
    graph = new.graph
    gone = sorted(folded)
    produced = {o for i in gone for o in nodes[i].output}
    consumed = {name for i in gone for name in nodes[i].input}
    del graph.node[:]
    graph.node.extend(nodes[i] for i in kept)
    for i in sorted(folded - refused):
        for name in nodes[i].output:
            if name in used:
                graph.initializer.append(numpy_helper.from_array(values[name], name))
    for init in [x for x in graph.initializer if x.name in consumed and x.name not in used]:
        graph.initializer.remove(init)
    for vi in [v for v in graph.value_info if v.name in produced and v.name not in used]:
        graph.value_info.remove(vi)
    counts = Counter(nodes[i].op_type for i in gone)
    return FoldResult(new, folded=dict(sorted(counts.items())))
