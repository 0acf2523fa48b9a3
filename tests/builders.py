"""Small ONNX models built with onnx.helper, so tests do not depend on torch or on each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxdeploy.modelfile import classifier_metadata, save_model, set_metadata

OPSET = 17


def _model(graph: onnx.GraphProto, opset: int = OPSET) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp_classifier(hidden: int = 32, seed: int = 0, classes: int = 10) -> onnx.ModelProto:
    """``x: [batch, 64] float -> logits: [batch, classes]`` through Gemm/Relu/Gemm, marked a classifier."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((hidden, 64)).astype(np.float32) * 0.2
    b1 = rng.standard_normal(hidden).astype(np.float32) * 0.1
    w2 = rng.standard_normal((classes, hidden)).astype(np.float32) * 0.2
    b2 = rng.standard_normal(classes).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"], transB=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = _model(graph)
    set_metadata(
        model,
        classifier_metadata(
            labels=[str(i) for i in range(classes)],
            input_scaling={"scale": 1 / 16, "offset": 0.0},
            source="tests.mlp_classifier",
        ),
    )
    return model


def two_input_int_model(seed: int = 0) -> onnx.ModelProto:
    """``x: [batch, 4] float, idx: [batch] int64 -> y: [batch, 3] float`` (an embedding lookup + MatMul)."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((10, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "idx"], ["emb"], axis=0),
            helper.make_node("Add", ["x", "emb"], ["s"]),
            helper.make_node("MatMul", ["s", "w"], ["y"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")],
    )
    return _model(graph)


def save(model: onnx.ModelProto, path: Path, **kwargs) -> Path:
    """Save a built model and return its path."""
    return save_model(model, path, **kwargs)


def _bn_params(rng: np.random.Generator, channels: int) -> dict[str, np.ndarray]:
    return {
        "bn_scale": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        "bn_bias": rng.standard_normal(channels).astype(np.float32),
        "bn_mean": rng.standard_normal(channels).astype(np.float32) * 0.1,
        "bn_var": rng.uniform(0.5, 1.5, channels).astype(np.float32),
    }


def conv_bias_bn_deadend(channels: int = 4, seed: int = 0, classes: int = 10) -> onnx.ModelProto:
    """``x: [batch, 1, 8, 8] -> logits: [batch, classes]``: Conv without bias, a separate bias Add,
    BatchNormalization, Relu, pooling and a Gemm head, plus a dead-end branch (Sigmoid -> Neg) off
    the Conv output that reaches no graph output. Marked a classifier."""
    rng = np.random.default_rng(seed)
    arrays = {
        "conv_w": rng.standard_normal((channels, 1, 3, 3)).astype(np.float32) * 0.5,
        "conv_b": rng.standard_normal((1, channels, 1, 1)).astype(np.float32) * 0.1,
        **_bn_params(rng, channels),
        "fc_w": rng.standard_normal((classes, channels)).astype(np.float32) * 0.5,
        "fc_b": rng.standard_normal(classes).astype(np.float32) * 0.1,
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "conv_w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["c", "conv_b"], ["cb"]),
            helper.make_node("BatchNormalization",
                             ["cb", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"]),
            helper.make_node("Relu", ["bn"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
            helper.make_node("Sigmoid", ["c"], ["dead_1"]),
            helper.make_node("Neg", ["dead_1"], ["dead_2"]),
        ],
        "conv_bias_bn_deadend",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    model = _model(graph)
    set_metadata(model, classifier_metadata(
        labels=[str(i) for i in range(classes)], input_scaling={"scale": 1 / 16, "offset": 0.0},
        source="tests.conv_bias_bn_deadend"))
    return model


def conv_bn_constant_params(channels: int = 4, seed: int = 1) -> onnx.ModelProto:
    """``x: [batch, 1, 8, 8] -> y: [batch, channels, 8, 8]``: Conv -> BatchNormalization whose four
    parameters arrive through Constant nodes instead of initializers (as some converters emit)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32) * 0.5
    b = rng.standard_normal(channels).astype(np.float32) * 0.1
    params = _bn_params(rng, channels)
    constants = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(a, name + "_t"))
                 for name, a in params.items()]
    graph = helper.make_graph(
        [
            *constants,
            helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", *params], ["y"]),
        ],
        "conv_bn_constant_params",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", channels, 8, 8])],
        [numpy_helper.from_array(w, "conv_w"), numpy_helper.from_array(b, "conv_b")],
    )
    return _model(graph)


def if_subgraph_model(seed: int = 2) -> onnx.ModelProto:
    """``x: [batch, 4] -> y: [batch, 4]``: an If on ``sum(x) > 0`` whose branches read an outer-scope
    weight (MatMul) or negate; the then-branch holds an Identity a pass can remove."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    out = helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, None)
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Identity", ["mm"], ["branch_out"])],
        "then", [], [out])
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["branch_out"])], "else", [], [out])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["cond"]),
            helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch),
        ],
        "if_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    return _model(graph)


def ml_domain_model() -> onnx.ModelProto:
    """``x: [batch, 3] -> y: [batch, 3]``: an ai.onnx.ml Scaler followed by Identity and Relu."""
    graph = helper.make_graph(
        [
            helper.make_node("Scaler", ["x"], ["scaled"], domain="ai.onnx.ml",
                             offset=[0.5, -1.0, 2.0], scale=[2.0, 0.5, 1.5]),
            helper.make_node("Identity", ["scaled"], ["ident"]),
            helper.make_node("Relu", ["ident"], ["y"]),
        ],
        "ml_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp_constant_weights(hidden: int = 64, seed: int = 3, classes: int = 10) -> onnx.ModelProto:
    """``x: [batch, 64] -> logits: [batch, classes]``: MatMul/Add/Relu/MatMul/Add whose weights and
    biases all arrive through Constant nodes (``quantize_dynamic`` refuses such weights as they are)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "w1": rng.standard_normal((64, hidden)).astype(np.float32) * 0.2,
        "b1": rng.standard_normal(hidden).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((hidden, classes)).astype(np.float32) * 0.2,
        "b2": rng.standard_normal(classes).astype(np.float32) * 0.1,
    }
    constants = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(a, name + "_t"))
                 for name, a in arrays.items()]
    graph = helper.make_graph(
        [
            *constants,
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["hr"]),
            helper.make_node("MatMul", ["hr", "w2"], ["o"]),
            helper.make_node("Add", ["o", "b2"], ["logits"]),
        ],
        "mlp_constant_weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
    )
    return _model(graph)


def mlp_opset(opset: int, hidden: int = 32, seed: int = 4) -> onnx.ModelProto:
    """``mlp_classifier`` (Gemm/Relu/Gemm) declared at an older ``opset`` (e.g. 9, below what
    int8 quantization needs)."""
    model = mlp_classifier(hidden=hidden, seed=seed)
    model.opset_import[0].version = opset
    onnx.checker.check_model(model)
    return model


def with_stale_value_info(model: onnx.ModelProto, name: str, shape: list) -> onnx.ModelProto:
    """A copy of ``model`` with a wrong ``value_info`` shape for tensor ``name`` (as stale
    annotations from an exporter would be)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    return out


def mlp_with_extra_work(work: int = 40, hidden: int = 32, seed: int = 0) -> onnx.ModelProto:
    """``mlp_classifier`` with the same outputs plus ``work`` extra 256x256 MatMuls on a side branch
    that is added back times zero: a model made slower on purpose, computing the same logits."""
    model = mlp_classifier(hidden=hidden, seed=seed)
    g = model.graph
    rng = np.random.default_rng(seed + 1)
    g.initializer.append(numpy_helper.from_array(
        (rng.standard_normal((64, 256)) * 0.05).astype(np.float32), "up"))
    g.initializer.append(numpy_helper.from_array(
        (rng.standard_normal((256, 256)) * 0.05).astype(np.float32), "sq"))
    g.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    nodes = [helper.make_node("MatMul", ["x", "up"], ["chain0"])]
    for i in range(work):
        nodes.append(helper.make_node("MatMul", [f"chain{i}", "sq"], [f"chain{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"chain{work}"], ["wsum"], keepdims=1),
        helper.make_node("Mul", ["wsum", "zero"], ["wzero"]),
    ]
    # logits = Gemm(...) + 0 * sum(chain): rename the last Gemm's output and add the branch
    last = g.node[-1]
    last.output[0] = "logits_raw"
    nodes.append(helper.make_node("Add", ["logits_raw", "wzero"], ["logits"]))
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    return model
