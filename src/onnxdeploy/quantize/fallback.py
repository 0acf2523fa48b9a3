"""Mixed precision: when every full-int8 candidate misses the quality bound (or the fastest ones
do), keep the nodes whose quantization costs the most in float, and quantize the rest.

The ranking of nodes of any kind (Conv, Gemm, LSTM, Gather ... and their fused activations) is
``quantize/partial.py``; this module holds the search both use and its record. ``rank_matmuls``
below is the MatMul-only ranking the outlier split reads its activations with.

Two measurements, both on the run's own data:

1. **Layer by layer** (``rank_matmuls``): one float run of the prepared model with every weight
   MatMul's input exposed as an output. For each MatMul the int8 product is simulated the way
   the dynamic quantizer computes it (uint8 asymmetric activations over the whole tensor, int8
   weights per channel or per tensor, 7 bits with reduce_range) and compared to the float
   product: the noise-to-signal ratio (``snr_db``) says how much that one layer's quantization
   costs. Simulating is what makes this cheap: one run instead of one quantized model a layer.
2. **End to end** (``search``): the top-k MatMuls are kept float (``nodes_to_exclude``) for
   k = 1, 2, 4 ... and then bisected; every try is a real quantized model judged against the
   float reference by the step's own criterion. The smallest k that passes wins; the tries,
   and what they cost, are in the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..data import DataSet
from ..errors import RuntimeFailure, first_line
from ..modelfile import load_model, save_model
from ..runtimes import make_session
from .recipes import Recipe

#: samples whose activations rank the layers (one batch: the ranking needs a sample, not all)
RANK_SAMPLES = 32
#: at most this share of the quantizable MatMuls is kept float before the search gives up
MAX_FLOAT_SHARE = 0.5
MIXED_SUFFIX = "-mixed"


@dataclass
class LayerCost:
    """What quantizing one MatMul alone costs at its own output."""

    node: str
    weight_shape: list[int]
    snr_db: float  # signal-to-noise of the simulated int8 product against the float one
    #: the source module when the exporter recorded it (torch's name scopes), else the weight's name
    layer: str = ""
    #: every node kept float with this one (a Conv and its fused Relu); empty: just ``node``
    nodes: list[str] = field(default_factory=list)
    op_type: str = "MatMul"
    #: how the cost was measured: "simulated" (the node alone on fake-quantized inputs) or
    #: "quantized" (the real quantizer on that node alone, the whole model compared)
    method: str = "simulated"

    @property
    def members(self) -> list[str]:
        return self.nodes or [self.node]

    def to_dict(self) -> dict[str, Any]:
        snr = float(self.snr_db)
        return {"node": self.node, "layer": self.layer, "weight_shape": self.weight_shape,
                "op_type": self.op_type, "nodes": self.members, "method": self.method,
                "snr_db": round(snr, 2) if np.isfinite(snr) else None}  # None: exact in int8


@dataclass
class Try:
    """One end-to-end try: the top ``kept_float`` units float, the rest int8."""

    kept_float: int
    admissible: bool
    min_cosine: float | None
    error: float | None
    failures: list[str] = field(default_factory=list)
    #: the nodes that try kept float (a unit may be several nodes), and the seconds it took
    nodes: list[str] = field(default_factory=list)
    seconds: float | None = None
    #: state outputs over chained steps ({output: min cosine}), when the model carries a state
    chained: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kept_float": self.kept_float, "admissible": self.admissible,
                "min_cosine": self.min_cosine, "error": self.error, "failures": self.failures,
                "nodes": self.nodes, "seconds": self.seconds, "chained_min_cosine": self.chained}


@dataclass
class Fallback:
    """The search and its outcome (``kept`` empty when no try within the limit passed)."""

    base: str
    quantizable: int
    ranking: list[LayerCost]
    tries: list[Try]
    kept: list[str] = field(default_factory=list)
    candidate: str | None = None
    summary: str = ""
    #: the full-int8 base candidate's quality, for "what keeping them float bought"
    base_min_cosine: float | None = None
    base_error: float | None = None
    #: the chosen model's min cosine over the even and the odd samples, and what their gap says
    halves_min_cosine: list[float] | None = None
    warning: str = ""
    #: the kept units (head node, layer, op type), their count, how the ranking measured
    kept_units: list[dict[str, Any]] = field(default_factory=list)
    #: the base's speed when the search started (worst speedup vs float over the batch sizes)
    base_speedup: dict[str, float] = field(default_factory=dict)
    #: the base's calibration (static bases): method and samples
    calibration: dict[str, Any] | None = None
    seconds: float = 0.0
    stopped: str = ""
    #: "nodes": each unit's own nodes kept float; "tensors": with the quantized nodes that read
    #: or write its tensors (partial.with_tensors), so those tensors stay float too
    grouping: str = "nodes"
    #: an earlier search from the same base that missed (the node-only one before "tensors")
    earlier: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        ops = sorted({c.op_type for c in self.ranking})
        return {"base": self.base, "base_min_cosine": self.base_min_cosine,
                "base_error": self.base_error, "quantizable_matmuls": self.quantizable,
                "quantizable_units": self.quantizable, "op_types": ops,
                "methods": sorted({c.method for c in self.ranking}),
                "base_speedup": self.base_speedup, "calibration": self.calibration,
                "halves_min_cosine": self.halves_min_cosine, "warning": self.warning or None,
                "ranking": [c.to_dict() for c in self.ranking], "tries": [t.to_dict() for t in self.tries],
                "kept_float": self.kept, "kept_units": self.kept_units, "candidate": self.candidate,
                "summary": self.summary, "seconds": round(self.seconds, 2), "stopped": self.stopped or None,
                "grouping": self.grouping, "earlier": self.earlier}


def weight_matmuls(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    """The MatMul nodes with a constant 2-D weight as second input (what the quantizer turns int8)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            weight = numpy_helper.to_array(inits[node.input[1]])
            if weight.ndim == 2 and weight.dtype.kind == "f" and node.name:
                out.append((node, weight))
    return out


def _quant_activation(x: np.ndarray) -> np.ndarray:
    """DynamicQuantizeLinear then dequantize: uint8, range over the tensor including zero."""
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def _quant_weight(w: np.ndarray, recipe: Recipe) -> np.ndarray:
    """The weight as the recipe stores it, dequantized (per output column with per_channel)."""
    bits = 7 if recipe.reduce_range else 8
    axis = 0 if recipe.per_channel else None
    if recipe.weight_type == "int8":  # symmetric
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(w).max(axis=axis, keepdims=True) / qmax
        scale = np.where(scale == 0, 1.0, scale)
        return np.clip(np.round(w / scale), -qmax, qmax) * scale
    levels = 2 ** bits - 1
    lo = np.minimum(w.min(axis=axis, keepdims=True), 0.0)
    hi = np.maximum(w.max(axis=axis, keepdims=True), 0.0)
    scale = np.where(hi - lo == 0, 1.0, (hi - lo) / levels)
    zero = np.round(-lo / scale)
    return (np.clip(np.round(w / scale) + zero, 0, levels) - zero) * scale


def layer_name(node: onnx.NodeProto) -> str:
    """Where a node came from: torch.onnx's innermost module scope, else its weight's name."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(prop.value) if isinstance(s, str) and s]
            except (ValueError, SyntaxError):
                break
            modules = [s for s in scopes if "." in s or s.isidentifier()]
            if len(modules) >= 2:
                return modules[-2]  # the last scope is the call itself (linear_11)
    return node.input[1]


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {}
    for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def matmul_inputs(prepared: Path, data: DataSet, workdir: Path, threads: int | None
                  ) -> tuple[list[tuple[onnx.NodeProto, np.ndarray]], dict[str, np.ndarray]]:
    """One float run on the first ``RANK_SAMPLES`` samples with every weight MatMul's input
    exposed: ``([(node, weight)], {input name: activation})``."""
    model = load_model(prepared)
    matmuls = weight_matmuls(model)
    if not matmuls:
        return [], {}
    names = list(dict.fromkeys(node.input[0] for node, _ in matmuls))
    known = {o.name for o in model.graph.output}
    types = _value_types(model)
    for name in names:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(
                name, types.get(name, onnx.TensorProto.FLOAT), None))
    exposed = save_model(model, workdir / "exposed.onnx",
                         external_data=model.ByteSize() > 1_500_000_000 or None)
    del model
    try:
        session = make_session(exposed, threads=threads)
        feeds = data.slice(0, min(len(data), RANK_SAMPLES)) if data.batched else data.inputs
        acts = dict(zip(names, session.run(names, feeds)))
    except Exception as exc:  # an exposed tensor ORT cannot return: no measurement
        raise RuntimeFailure(f"could not measure the MatMuls layer by layer: {type(exc).__name__}: "
                             f"{first_line(exc, '')}") from exc
    finally:
        for p in workdir.glob("exposed.onnx*"):
            p.unlink(missing_ok=True)
    return matmuls, acts


def rank_matmuls(prepared: Path, recipe: Recipe, data: DataSet, workdir: Path,
                 threads: int | None, layers: dict[str, str] | None = None) -> list[LayerCost]:
    """Every weight MatMul's simulated int8 cost on the first samples, costliest first.

    ``layers`` names each node's source layer (from the model before pre-processing, which
    drops the exporter's node metadata); node names survive pre-processing.
    """
    matmuls, acts = matmul_inputs(prepared, data, workdir, threads)
    if not matmuls:
        return []
    costs = []
    for node, weight in matmuls:
        a = np.asarray(acts[node.input[0]], dtype=np.float64)
        w = weight.astype(np.float64)
        exact = a @ w
        approx = _quant_activation(a) @ _quant_weight(w, recipe)
        signal = float((exact ** 2).sum())
        noise = float(((approx - exact) ** 2).sum())
        snr = float("inf") if noise == 0 else (float(10 * np.log10(signal / noise)) if signal > 0
                                                else -float("inf"))
        costs.append(LayerCost(node.name, list(weight.shape), snr,
                               (layers or {}).get(node.name) or layer_name(node)))
    costs.sort(key=lambda c: c.snr_db)
    return costs


def search(base: Recipe, ranking: list[LayerCost], judge: Callable[[Recipe], Any],
           max_float: int | None = None, *, budget_s: float | None = None,
           noun: str = "MatMuls", probe_limit: bool = False) -> tuple[Fallback, Recipe | None]:
    """Keep the top-k units float for growing k, then bisect; ``judge(recipe)`` builds and
    scores one try and returns a CandidateResult-like object (``admissible``, ``min_cosine``,
    ``error``, ``failures``). Returns the record and the smallest passing recipe (or None).

    A unit is every node of ``LayerCost.members`` (a Conv and its fused Relu go together).
    ``budget_s``: no new try starts after this many seconds; the best passing k so far stands.
    ``probe_limit``: once k = 1, 2, 4 have failed, try the limit itself before doubling on; if
    even that misses, stop there (the loss is spread over the model, not in a few units: the
    tries in between would all miss and each costs a quantize and an evaluation).
    """
    n = len(ranking)
    limit = max(1, int(n * MAX_FLOAT_SHARE)) if max_float is None else min(n, max_float)
    record = Fallback(base.name, n, ranking, [])
    recipes: dict[int, Recipe] = {}
    start = time.monotonic()

    def out_of_time() -> bool:
        if budget_s is not None and time.monotonic() - start > budget_s:
            record.stopped = f"time budget of {budget_s:g} s spent after {len(record.tries)} tries"
            return True
        return False

    def attempt(k: int):
        nodes = tuple(dict.fromkeys(m for c in ranking[:k] for m in c.members))
        recipe = replace(base, name=base.name + MIXED_SUFFIX, nodes_to_exclude=nodes)
        t0 = time.monotonic()
        result = judge(recipe)
        recipes[k] = recipe
        record.tries.append(Try(k, bool(result.admissible), result.min_cosine, result.error,
                                list(result.failures), list(nodes), round(time.monotonic() - t0, 2),
                                getattr(result, "chained", None)))
        return result.admissible

    low, high, k = 0, None, 1
    while k <= limit:
        if out_of_time():
            break
        if probe_limit and 4 < k < limit:
            if attempt(limit):  # the limit passes: bisect between the last miss and it
                high = limit
                break
            record.stopped = (f"keeping {limit} float (the limit) missed too (min cosine "
                              f"{record.tries[-1].min_cosine}): the loss is spread over the model, "
                              "not in a few nodes")
            break
        if attempt(k):
            high = k
            break
        low = k
        k = limit if k < limit < 2 * k else 2 * k
    if high is None:
        tried = max((t.kept_float for t in record.tries), default=0)
        record.summary = (f"keeping up to {tried if record.stopped else limit} of {n} {noun} "
                          f"float did not reach the bound{'; ' + record.stopped if record.stopped else ''}; "
                          "no mixed-precision model")
        record.seconds = time.monotonic() - start
        return record, None
    while high - low > 1 and not out_of_time():  # the smallest k that passes
        mid = (low + high) // 2
        if attempt(mid):
            high = mid
        else:
            low = mid
    recipe = recipes[high]
    record.kept = list(recipe.nodes_to_exclude)
    record.kept_units = [{"node": c.node, "layer": c.layer, "op_type": c.op_type, "nodes": c.members,
                          "method": c.method} for c in ranking[:high]]
    record.candidate = recipe.name
    record.seconds = time.monotonic() - start
    return record, recipe
