"""Outlier channels: full int8 for MatMuls whose input has a few huge channels.

Trained transformers carry "outlier features": a few channels of the hidden state, and of the
FFN's inner activations, run 10-30x the size of the rest. Dynamic int8 takes one uint8 range per
activation tensor, so those few channels set the quantization step for all the others. The split
computes each such MatMul's outlier channels in float and the rest in int8:

    y = (x * keep) @ W_rest  +  x[..., outliers] @ W[outliers, :]

``keep`` zeroes the outlier channels and ``W_rest`` their rows. The rewrite is exact in float.
After quantization only the small ``[k, N]`` products stay float (``float_nodes``, passed to the
quantizer as ``nodes_to_exclude``).

- **Which channels:** one float run on the first samples with every weight MatMul's input
  exposed (the fallback's measurement). A channel is an outlier when its largest |x| exceeds
  ``RATIO`` times the median channel's, with at most ``MAX_CHANNELS`` a MatMul.
- **Weights need 7 bits where the CPU has no VNNI:** once the outliers are gone, the activations
  fill the whole uint8 range, and AVX2's u8 x s8 kernels sum pairs in int16, which saturates. On
  all-MiniLM-L6-v2 the split with 8-bit weights lost quality (min cosine 0.9867 -> 0.9811),
  while with 7-bit weights it gave 0.9944 (docs/quantize.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..data import DataSet
from ..modelfile import load_model, save_model
from .fallback import layer_name, matmul_inputs

#: a channel is an outlier when its largest |x| exceeds this many times the median channel's
RATIO = 6.0
#: at most this many float channels a MatMul (the float product's cost grows with them)
MAX_CHANNELS = 8
#: a MatMul with fewer input channels than this is left as it is
MIN_CHANNELS = 32
OUTLIER_SUFFIX = "/outlier_channels"


@dataclass
class SplitLayer:
    node: str
    layer: str
    channels: list[int]
    channel_max: list[float]
    median_max: float

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "layer": self.layer, "channels": self.channels,
                "channel_max": [round(v, 3) for v in self.channel_max],
                "median_channel_max": round(self.median_max, 3)}


@dataclass
class Split:
    """What the split did: the MatMuls split, and the float products to keep out of int8."""

    layers: list[SplitLayer] = field(default_factory=list)
    matmuls: int = 0

    @property
    def float_nodes(self) -> list[str]:
        return [s.node + OUTLIER_SUFFIX for s in self.layers]

    def summary(self) -> str:
        if not self.layers:
            return (f"no weight MatMul input has a channel above {RATIO:g}x the median channel's "
                    "range; nothing to split")
        channels = sum(len(s.channels) for s in self.layers)
        return (f"{channels} outlier channel(s) in the inputs of {len(self.layers)} of "
                f"{self.matmuls} weight MatMuls computed in float, the rest int8")

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": RATIO, "max_channels": MAX_CHANNELS, "weight_matmuls": self.matmuls,
                "split": [s.to_dict() for s in self.layers], "summary": self.summary()}


def outlier_channels(x: np.ndarray, *, ratio: float = RATIO, max_channels: int = MAX_CHANNELS
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """The outlier channels (last axis) of an activation: ``(indices, their max |x|, median)``."""
    peak = np.abs(np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])).max(axis=0)
    median = float(np.median(peak))
    if x.shape[-1] < MIN_CHANNELS or median <= 0:
        return np.zeros(0, np.int64), np.zeros(0), median
    top = np.argsort(-peak, kind="stable")[:max_channels]
    idx = np.sort(top[peak[top] > ratio * median]).astype(np.int64)
    return idx, peak[idx], median


def split_outliers(prepared: Path, out: Path, data: DataSet, workdir: Path, threads: int | None,
                   layers: dict[str, str] | None = None) -> Split:
    """Write ``prepared`` with its outlier channels split off into ``out``; what was split.

    Nothing is written when no MatMul has outlier channels (``Split.layers`` empty).
    """
    matmuls, acts = matmul_inputs(prepared, data, workdir, threads)
    split = Split(matmuls=len(matmuls))
    plan: dict[str, np.ndarray] = {}
    for node, weight in matmuls:
        x = acts[node.input[0]]
        if weight.dtype != np.float32 or np.asarray(x).dtype != np.float32:
            continue
        idx, peaks, median = outlier_channels(np.asarray(x))
        if idx.size:
            plan[node.name] = idx
            split.layers.append(SplitLayer(node.name, (layers or {}).get(node.name) or layer_name(node),
                                           idx.tolist(), peaks.tolist(), median))
    del acts
    if not plan:
        return split
    model = load_model(prepared)
    _rewrite(model, plan)
    save_model(model, out, external_data=model.ByteSize() > 1_500_000_000 or None)
    return split


def _bias_add(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], inits: dict,
              outputs: set[str]) -> onnx.NodeProto | None:
    """The ``Add`` of a constant bias that is the MatMul's only consumer, if there is one.

    The outlier product is added after it, so ONNX Runtime can still fuse MatMul and bias into
    one int8 kernel (``MatMulIntegerToFloat`` with its bias): one pass over the output less.
    """
    out = node.output[0]
    users = consumers.get(out, [])
    if out in outputs or len(users) != 1 or users[0].op_type != "Add":
        return None
    add = users[0]
    other = add.input[1] if add.input[0] == out else add.input[0]
    return add if other in inits and len(inits[other].dims) <= 1 else None


def _rewrite(model: onnx.ModelProto, plan: dict[str, np.ndarray]) -> None:
    """Replace each planned MatMul by its int8 part, its float outlier part and their sum."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    #: a bias Add (by its output: names are unique in a graph) -> the outlier product after it
    after_bias: dict[str, tuple[str, str]] = {}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Add" and node.output and node.output[0] in after_bias:
            y_outliers, prefix = after_bias[node.output[0]]
            bias = onnx.NodeProto()
            bias.CopyFrom(node)
            final = list(bias.output)
            del bias.output[:]
            bias.output.append(f"{prefix}/y_rest_bias")
            nodes += [bias, helper.make_node("Add", [f"{prefix}/y_rest_bias", y_outliers], final,
                                             name=f"{node.name or prefix}/add_outliers")]
            continue
        idx = plan.get(node.name)
        if idx is None:
            nodes.append(node)
            continue
        x, w_name = node.input[0], node.input[1]
        weight = numpy_helper.to_array(inits[w_name])
        keep = np.ones(weight.shape[0], weight.dtype)
        keep[idx] = 0
        rest = weight.copy()
        rest[idx, :] = 0
        p = f"onnxdeploy_split/{node.name}"
        graph.initializer.extend([
            numpy_helper.from_array(keep, f"{p}/keep"),
            numpy_helper.from_array(idx, f"{p}/channels"),
            numpy_helper.from_array(rest, f"{p}/weight_rest"),
            numpy_helper.from_array(np.ascontiguousarray(weight[idx, :]), f"{p}/weight_outliers"),
        ])
        bias = _bias_add(node, consumers, inits, outputs)
        # with a bias Add after it, the MatMul keeps its output name and the sum goes after the
        # bias; without, the sum takes the MatMul's place
        y_rest = node.output[0] if bias is not None else f"{p}/y_rest"
        main = helper.make_node("MatMul", [f"{p}/x_rest", f"{p}/weight_rest"], [y_rest],
                                name=node.name)
        main.metadata_props.extend(node.metadata_props)  # the layer name survives
        nodes += [
            helper.make_node("Mul", [x, f"{p}/keep"], [f"{p}/x_rest"], name=f"{node.name}/keep"),
            helper.make_node("Gather", [x, f"{p}/channels"], [f"{p}/x_outliers"], axis=-1,
                             name=f"{node.name}/gather_outliers"),
            main,
            helper.make_node("MatMul", [f"{p}/x_outliers", f"{p}/weight_outliers"],
                             [f"{p}/y_outliers"], name=node.name + OUTLIER_SUFFIX),
        ]
        if bias is not None:
            after_bias[bias.output[0]] = (f"{p}/y_outliers", p)
        else:
            nodes.append(helper.make_node("Add", [y_rest, f"{p}/y_outliers"], list(node.output),
                                          name=f"{node.name}/sum"))
        uses[w_name] -= 1
    unused = {name for name, n in uses.items() if n == 0 and name in inits}
    kept = [i for i in graph.initializer if i.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
