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
