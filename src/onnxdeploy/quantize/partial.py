"""Partial int8: which nodes of any kind cost the quality, measured on the run's own data.

A **unit** is what the recipe quantizes and what must be kept float together: a weight node
(Conv, ConvTranspose, Gemm, MatMul, LSTM/GRU/RNN, an embedding Gather, Attention) with the
activations the quantizer fuses into it (a Conv + Relu is one unit: static QDQ gives the pair one
output scale), or, in static mode, an activation operator with a scale of its own (Softmax,
AveragePool, normalizations ...). Data-movement ops (Reshape, Transpose, MaxPool ...) reuse their
input's scale and cost nothing on their own: they are never ranked.

Two ways to measure a unit's cost, and the report says which was used (``method``):

- ``simulated``: one float run of the prepared model exposes every unit's inputs and outputs;
  each unit is then cut out as a model of its own and run in ONNX Runtime on fake-quantized
  inputs (activations per tensor, uint8 over the tensor's range including zero, as dynamic
  quantization and min-max calibration take it), fake-quantized weights (int8 symmetric, per
  channel or per tensor, 7 bits with reduce_range) and, for static recipes, a fake-quantized
  output. Its signal-to-noise ratio against the float output is the unit's cost (``snr_db``).
  Cheap: one float run and one tiny model a unit.
- ``quantized``: where the unit cannot be cut out and run alone (a contrib op ORT refuses, a
  subgraph), the real quantizer quantizes that unit alone (every other unit excluded) and the
  whole model is compared with float: the SNR of its outputs. One quantize and one evaluation a
  unit, so these run last and within the time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..data import DataSet
from ..errors import RuntimeFailure, first_line
from ..modelfile import load_model, save_model
from ..runtimes import make_session
from .fallback import RANK_SAMPLES, LayerCost, layer_name
from .options import supported_op_types
from .recipes import Recipe

#: nodes that carry a weight the quantizer turns int8, and the input index of that weight
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "LSTM": 1, "GRU": 1,
                "RNN": 1, "Gather": 0, "Attention": 1}
#: activations the static quantizer fuses into the node before them (one output scale)
FUSED = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh"})
#: ops that reuse their input's scale (no rounding of their own): never ranked alone
PASSTHROUGH = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "MaxPool",
                         "Split", "Slice", "Pad", "Concat", "Resize", "Gather", "GatherElements",
                         "TopK", "ArgMax", "Where", "CumSum"})
#: weight axis that indexes output channels, per op (per-channel scales run along it)
CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1, "LSTM": 1, "GRU": 1, "RNN": 1,
                "Gather": None, "Attention": 1}


@dataclass
class Unit:
    """One thing to keep float: its nodes (the head first), and the weight it quantizes."""

    head: onnx.NodeProto
    nodes: list[onnx.NodeProto]
    weight: np.ndarray | None

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


def _weight_name(node: onnx.NodeProto, inits: dict) -> str | None:
    idx = WEIGHT_INPUT.get(node.op_type)
    if idx is None or len(node.input) <= idx or node.input[idx] not in inits:
        return None
    return node.input[idx]


def quantized_op_types(recipe: Recipe) -> set[str]:
    """The op types ``recipe`` quantizes (Gemm stands for MatMul in dynamic mode and back)."""
    types = set(recipe.op_types) if recipe.op_types else set(supported_op_types(recipe.mode))
    if recipe.mode == "dynamic" and types & {"MatMul", "Gemm"}:
        types |= {"MatMul", "Gemm"}
    if recipe.mode == "static" and not recipe.op_types:
        # with no op types given, ORT's quantize_static quantizes the QOperator registry's ops
        # too (Add, Mul, Sigmoid, Softmax, GlobalAveragePool ...), whichever the format: their
        # tensors are rounded, so they are units (PP-OCRv4 rec: 73 Adds and 68 Muls of its
        # hardswish and LayerNorm arithmetic quantized, none of them ranked before)
        from onnxruntime.quantization.registry import QLinearOpsRegistry

        types |= set(QLinearOpsRegistry)
    return types


def units(model: onnx.ModelProto, recipe: Recipe) -> list[Unit]:
    """The units of ``model`` that ``recipe`` quantizes, in graph order."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    types = quantized_op_types(recipe)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    out: list[Unit] = []
    taken: set[str] = set()
    for node in graph.node:
        if node.op_type not in types or not node.name or node.name in taken:
            continue
        w = _weight_name(node, inits)
        if node.op_type in WEIGHT_INPUT:
            if w is None:
                continue
            weight = numpy_helper.to_array(inits[w])
            if weight.dtype.kind != "f" or (node.op_type in ("MatMul", "Gather") and weight.ndim != 2):
                continue
        elif recipe.mode == "static" and node.op_type not in PASSTHROUGH | FUSED:
            weight = None
        else:
            continue
        group = [node]
        if recipe.mode == "static":  # Conv + Relu: one output scale, kept float together
            tail = node
            while tail.output and tail.output[0] not in outputs:
                users = consumers.get(tail.output[0], [])
                if len(users) != 1 or users[0].op_type not in FUSED or not users[0].name:
                    break
                tail = users[0]
                group.append(tail)
        taken.update(n.name for n in group)
        out.append(Unit(node, group, weight))
    return out


# --------------------------------------------------------------------------- fake quantization


def fake_activation(x: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """uint8 over ``[lo, hi]`` (the tensor's own range including zero by default), dequantized."""
    lo = min(0.0, float(x.min()) if lo is None else lo)
    hi = max(0.0, float(x.max()) if hi is None else hi)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    return ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(x.dtype)


def fake_weight(w: np.ndarray, recipe: Recipe, axis: int | None) -> np.ndarray:
    """Symmetric int8 (7 bits with reduce_range), per channel along ``axis`` when the recipe is."""
    bits = 7 if recipe.reduce_range else 8
    qmax = 2 ** (bits - 1) - 1
    if recipe.per_channel and axis is not None and w.ndim > 1:
        dims = tuple(d for d in range(w.ndim) if d != axis % w.ndim)
        scale = np.abs(w).max(axis=dims, keepdims=True) / qmax
    else:
        scale = np.abs(w).max(keepdims=True) / qmax
    scale = np.where(scale == 0, 1.0, scale)
    return (np.clip(np.round(w / scale), -qmax, qmax) * scale).astype(w.dtype)


def snr_db(exact: np.ndarray, approx: np.ndarray) -> float:
    exact = np.asarray(exact, np.float64)
    noise = float(((np.asarray(approx, np.float64) - exact) ** 2).sum())
    signal = float((exact ** 2).sum())
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal / noise)) if signal > 0 else -float("inf")


def channel_snr_db(exact: np.ndarray, approx: np.ndarray, axis: int) -> float:
    """The median channel's SNR along ``axis``: a tensor one channel dominates (an outlier
    channel) has a fine SNR as a whole while every other channel is lost; the median sees it."""
    exact = np.moveaxis(np.asarray(exact, np.float64), axis, 0).reshape(exact.shape[axis], -1)
    approx = np.moveaxis(np.asarray(approx, np.float64), axis, 0).reshape(exact.shape[0], -1)
    signal = (exact ** 2).sum(axis=1)
    noise = ((approx - exact) ** 2).sum(axis=1)
    live = signal > 1e-12 * max(float(signal.max()), 1e-30)
    if not live.any():
        return snr_db(exact, approx)
    with np.errstate(divide="ignore"):
        per = 10 * np.log10(signal[live] / np.maximum(noise[live], 1e-300))
    return float(np.median(per))


# --------------------------------------------------------------------------- measuring


def _float_inputs(unit: Unit, inits: dict, produced: set[str]) -> list[str]:
    """The activations a unit reads from outside itself (float tensors, not weights)."""
    inside = {o for n in unit.nodes for o in n.output}
    names = []
    for n in unit.nodes:
        for name in n.input:
            if name and name not in inits and name not in inside and name not in names:
                names.append(name)
    return names


def _exposed_run(prepared: Path, wanted: list[str], data: DataSet, workdir: Path,
                 threads: int | None) -> dict[str, np.ndarray]:
    model = load_model(prepared)
    known = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in known:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    exposed = save_model(model, workdir / "exposed-units.onnx",
                         external_data=model.ByteSize() > 1_500_000_000 or None)
    del model
    try:
        session = make_session(exposed, threads=threads, optimization="disable")
        feeds = data.slice(0, min(len(data), RANK_SAMPLES)) if data.batched else data.inputs
        return dict(zip(wanted, session.run(wanted, feeds)))
    except Exception as exc:
        raise RuntimeFailure(f"could not measure the nodes one by one: {type(exc).__name__}: "
                             f"{first_line(exc, '')}") from exc
    finally:
        for p in workdir.glob("exposed-units.onnx*"):
            p.unlink(missing_ok=True)


def _simulate(unit: Unit, model: onnx.ModelProto, inits: dict, acts: dict[str, np.ndarray],
              recipe: Recipe) -> float:
    """The unit cut out and run alone on fake-quantized inputs, weights and (static) output."""
    inputs = [n for n in _float_inputs(unit, inits, set()) if n in acts]
    tail = unit.nodes[-1]
    outs = [o for o in tail.output[:1] if o in acts]
    if not outs:
        raise RuntimeFailure("output not exposed")
    used = {name for n in unit.nodes for name in n.input if name in inits}
    weight_names = {_weight_name(unit.head, inits)} if unit.weight is not None else set()
    tensors = []
    for name in used:
        arr = numpy_helper.to_array(inits[name])
        if name in weight_names or (unit.head.op_type in ("LSTM", "GRU", "RNN")
                                    and name == unit.head.input[2]):  # R: recurrent weights too
            arr = fake_weight(arr, recipe, CHANNEL_AXIS.get(unit.head.op_type))
        tensors.append(numpy_helper.from_array(arr, name))
    feeds = {}
    quantized = {n for n in inputs if acts[n].dtype.kind == "f"}
    if unit.head.op_type == "Gather":
        quantized = set()  # the indices are integers; only the table is quantized
    if unit.head.op_type in ("LSTM", "GRU", "RNN"):
        quantized &= {unit.head.input[0]}  # X (the state goes in float at step 0)
    for n in inputs:
        # np.asarray: a 0-d activation (Silero's ``sr / 16000``) comes back from numpy as a
        # scalar, which ORT refuses as a feed
        feeds[n] = np.asarray(fake_activation(acts[n]) if n in quantized else acts[n])
    graph = helper.make_graph(
        [n for n in unit.nodes], "unit",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(acts[n].dtype), None)
         for n in inputs],
        [helper.make_empty_tensor_value_info(o) for o in outs], tensors)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    session = make_session(sub, threads=1, optimization="disable")
    got = session.run(outs, feeds)[0]
    if recipe.mode == "static" and got.dtype.kind == "f":
        got = fake_activation(got, float(acts[outs[0]].min()), float(acts[outs[0]].max()))
    exact = acts[outs[0]]
    if exact.ndim < 2:
        return snr_db(exact, got)
    axis = 1 if unit.head.op_type in ("Conv", "ConvTranspose") and exact.ndim >= 3 else -1
    return min(snr_db(exact, got), channel_snr_db(exact, got, axis % exact.ndim))


def rank_units(prepared: Path, recipe: Recipe, data: DataSet, workdir: Path, threads: int | None,
               layers: dict[str, str] | None = None,
               quantize_one: callable | None = None, budget_s: float = 60.0,
               method: str = "auto") -> list[LayerCost]:
    """Every unit's int8 cost, costliest first (simulated where the unit runs alone; else
    ``quantize_one(node names to exclude)`` quantizes the unit alone (every other unit excluded)
    and returns the model's output SNR).

    ``method``: "auto" (simulate, quantize the units that will not run alone), "quantized"
    (every unit quantized alone: what the search re-ranks with when the simulated ranking
    misled it). Each entry's ``method`` says which was used; units left when ``budget_s`` is
    spent are "not measured (time budget)" and rank last.
    """
    if method not in ("auto", "quantized"):
        raise ValueError(f"method must be 'auto' or 'quantized', not {method!r}")
    model = load_model(prepared)
    found = units(model, recipe)
    if not found:
        return []
    inits = {i.name: i for i in model.graph.initializer}
    acts: dict[str, np.ndarray] = {}
    if method == "auto":
        wanted: list[str] = []
        for u in found:
            for name in [*_float_inputs(u, inits, set()), u.nodes[-1].output[0]]:
                if name not in wanted:
                    wanted.append(name)
        acts = _exposed_run(prepared, wanted, data, workdir, threads)
    costs, later = [], []
    for u in found:
        cost = LayerCost(u.head.name, list(u.weight.shape) if u.weight is not None else [],
                         float("nan"), (layers or {}).get(u.head.name) or source_layer(u.head),
                         nodes=u.names, op_type=u.head.op_type, method="simulated")
        try:
            if method != "auto":
                raise RuntimeFailure("quantized on request")
            cost.snr_db = _simulate(u, model, inits, acts, recipe)
        except Exception:  # ORT will not run it alone (or asked): measure it for real below
            cost.method = "quantized"
            later.append(cost)
        costs.append(cost)
    del acts
    start = time.monotonic()
    everything = [n for u in found for n in u.names]
    for cost in later:
        if quantize_one is None or time.monotonic() - start > budget_s:
            cost.method = "not measured (time budget)" if quantize_one else "not measured"
            cost.snr_db = float("inf")
            continue
        keep = [n for n in everything if n not in cost.nodes]
        cost.snr_db = quantize_one(keep)
    costs.sort(key=lambda c: c.snr_db)
    return costs


def with_tensors(ranking: list[LayerCost], model: onnx.ModelProto, recipe: Recipe) -> list[LayerCost]:
    """The ranking again, each unit widened to the quantized nodes that write its inputs or read
    its inputs and outputs: a node kept float alone still reads and writes rounded tensors wherever
    a neighbour is quantized (ORT quantizes a tensor once for all its quantized consumers); with
    its neighbours float too, the unit's tensors stay float. Units keep their order; a node already
    taken by a costlier unit is not repeated."""
    types = quantized_op_types(recipe)
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    by_name = {n.name: n for n in model.graph.node if n.name}
    # a weight or a shared constant (hardswish's 3 read by every Add) ties no nodes together
    constant = {i.name for i in model.graph.initializer}
    constant |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    taken: set[str] = set()
    out = []
    for cost in ranking:
        nodes = list(cost.members)
        for name in cost.members:
            node = by_name.get(name)
            if node is None:
                continue
            tensors = [t for t in [*node.input, *node.output] if t and t not in constant]
            around = [producer[t] for t in node.input if t in producer and t not in constant]
            around += [r for t in tensors for r in readers.get(t, [])]
            nodes += [n.name for n in around if n.name and n.op_type in types]
        fresh = [n for n in dict.fromkeys(nodes) if n not in taken]
        taken.update(fresh)
        out.append(LayerCost(cost.node, cost.weight_shape, cost.snr_db, cost.layer,
                             nodes=fresh or list(cost.members), op_type=cost.op_type, method=cost.method))
    return out


def source_layer(node: onnx.NodeProto) -> str:
    """The source layer: torch's name scope, the TorchScript node path (``/conv2/Conv`` is
    ``conv2``), else the weight's name."""
    name = layer_name(node) if len(node.input) > 1 else node.name
    weight = node.input[1] if len(node.input) > 1 else node.name
    if node.name.startswith("/") and node.name.count("/") >= 2 and (name == weight or not name):
        return ".".join(p for p in node.name.strip("/").split("/")[:-1])
    return name


def output_snr(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    """The worst float output's SNR (for a unit measured by quantizing it alone)."""
    worst = float("inf")
    for name, ref in reference.items():
        ref = np.asarray(ref)
        if ref.dtype.kind != "f" or name not in got:
            continue
        worst = min(worst, snr_db(ref, got[name]))
    return worst




# --------------------------------------------------------------------------- state outputs

#: how converters name a state output after its input: state -> stateN, h0 -> hn, c0 -> cn ...
_STATE_SUFFIXES = ("N", "n", "_out", "_next", "_new", "Out", "_n")


def state_pairs(inputs: list, outputs: list, explicit: dict[str, str] | None = None
                ) -> list[tuple[str, str]]:
    """``[(state input, state output)]``: those given, else paired by name and shape
    (``state``->``stateN``, ``h0``->``hn``, ``c0``->``cn``, ``x_in``->``x_out``, ``past``->``present``)."""
    if explicit:
        return list(explicit.items())
    outs = {o.name: o for o in outputs}
    pairs = []
    for spec in inputs:
        name = spec.name
        names = [name + s for s in _STATE_SUFFIXES]
        if name.endswith("0"):
            names += [name[:-1] + "n", name[:-1] + "N", name[:-1] + "_n"]
        for a, b in (("_in", "_out"), ("in", "out"), ("past", "present"), ("prev", "next")):
            if a in name:
                names.append(name.replace(a, b))
        for cand in names:
            o = outs.get(cand)
            if o is None or (spec.dtype is not None and o.dtype is not None and spec.dtype != o.dtype):
                continue
            if spec.shape is not None and o.shape is not None and len(spec.shape) != len(o.shape):
                continue
            fixed = all(a == b for a, b in zip(spec.shape or [], o.shape or [])
                        if isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0)
            if fixed:
                pairs.append((name, cand))
                break
    return pairs


CHAIN_STEPS = 4
CHAIN_SAMPLES = 64


def chained_outputs(session, feeds: dict[str, np.ndarray], pairs: list[tuple[str, str]],
                    axes: dict[str, int | None], steps: int = CHAIN_STEPS) -> dict[str, np.ndarray]:
    """Run ``steps`` steps, feeding each step's state outputs back as the next state inputs; the
    other batched inputs move on one sample a step (rolled along their batch axis), as a stream's
    next chunk would. Returns the last step's outputs."""
    from ..runtimes import run

    states = {i for i, _ in pairs}
    current = dict(feeds)
    out: dict[str, np.ndarray] = {}
    for t in range(steps):
        step = {k: (np.roll(v, t, axis=axes[k]) if k not in states and axes.get(k) is not None else v)
                for k, v in feeds.items()}
        step.update({k: current[k] for k in states})
        out = run(session, step)
        current.update({i: out[o] for i, o in pairs})
    return out


def per_sample_min_cosine(ref: np.ndarray, got: np.ndarray, axis: int | None) -> float:
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if axis is None or ref.ndim == 0:
        ref, got = ref.reshape(1, -1), got.reshape(1, -1)
    else:
        ref = np.moveaxis(ref, axis, 0).reshape(ref.shape[axis], -1)
        got = np.moveaxis(got, axis, 0).reshape(ref.shape[0], -1)
    num = (ref * got).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.where(den > 0, num / np.where(den > 0, den, 1), 1.0)
    return float(cos.min())


__all__ = ["CHAIN_STEPS", "Unit", "chained_outputs", "channel_snr_db", "fake_activation", "fake_weight",
           "output_snr", "per_sample_min_cosine", "quantized_op_types", "rank_units", "snr_db",
           "source_layer", "state_pairs", "units", "with_tensors"]
