"""Fixtures that look like third-party models, built at test time (nothing is downloaded).

Each builder returns an ``onnx.ModelProto`` and says which real converter behaviour it imitates.
They are the shapes the issue "any third-party ONNX model through every step" found failing:
scikit-learn models from skl2onnx (ai.onnx.ml, ZipMap), a voice-activity RNN with a state whose
batch axis is not first and a 0-d sample rate, Paddle2ONNX's ``-1`` / ``'?'`` dims, a detection
head that is ~0 on random input, weights in Constant nodes, If/Loop, int32/int64/bool inputs and
outputs of several kinds.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ML_OPSET = 3
RNN_LAYERS, RNN_HIDDEN, RNN_CHUNK = 2, 16, 64
SAMPLE_RATE = 16000


def _model(graph: onnx.GraphProto, *, domains: dict[str, int] | None = None) -> onnx.ModelProto:
    opsets = [helper.make_opsetid(d, v) for d, v in {"": OPSET, **(domains or {})}.items()]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tests.wild")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- scikit-learn


def sklearn_classifier(*, zipmap: bool = True, classes: int = 10) -> onnx.ModelProto:
    """LogisticRegression on the digits, converted by skl2onnx as users do.

    skl2onnx writes ``input [None, 64]`` (an empty dim for the batch), an ``ai.onnx.ml``
    LinearClassifier, ``output_label`` int64 ``[None]`` and, by default, ``output_probability``
    as a ZipMap: a ``seq(map(int64, float))`` output, one dict per sample. ``zipmap=False`` gives
    a plain ``[None, classes]`` float tensor instead.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    from onnxdeploy.data import digits_split

    x, y, _, _ = digits_split()
    keep = y < classes
    clf = LogisticRegression(max_iter=300).fit(x[keep], y[keep])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_sklearn(
            clf, initial_types=[("input", FloatTensorType([None, 64]))],
            options={id(clf): {"zipmap": zipmap}},
            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        )
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- torch RNN


def rnn_with_state(*, fixed_state_batch: bool = False) -> onnx.ModelProto:
    """A voice-activity-style GRU: ``input [batch, 64]``, ``state [2, batch, 16]``, ``sr`` 0-d int64.

    Imitates Silero VAD's interface: the recurrent state carries the batch on axis 1 (the layout
    torch.nn.GRU uses), the sample rate is a 0-d tensor, the outputs are a probability
    ``[batch, 1]`` and the next state. Exported with the TorchScript exporter and
    ``dynamic_axes`` (how such models were exported; the dynamo exporter gives the same
    interface but takes ~10 s here). ``fixed_state_batch=True`` rewrites the state to
    ``[2, 1, 16]``, as an export that forgot the state's dynamic axis writes it: such a model
    only takes batch 1.
    """
    import torch

    class VAD(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = torch.nn.Linear(RNN_CHUNK, RNN_HIDDEN)
            self.gru = torch.nn.GRU(RNN_HIDDEN, RNN_HIDDEN, num_layers=RNN_LAYERS)
            self.out = torch.nn.Linear(RNN_HIDDEN, 1)

        def forward(self, x, state, sr):
            scale = sr.to(torch.float32) / float(SAMPLE_RATE)
            h = torch.relu(self.inp(x * scale)).unsqueeze(0)
            y, new_state = self.gru(h, state)
            return torch.sigmoid(self.out(y[0])), new_state

    torch.manual_seed(0)
    module = VAD().eval()
    args = (torch.randn(3, RNN_CHUNK), torch.zeros(RNN_LAYERS, 3, RNN_HIDDEN), torch.tensor(SAMPLE_RATE))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, buf, input_names=["input", "state", "sr"], output_names=["output", "stateN"],
            dynamic_axes={"input": {0: "batch"}, "state": {1: "batch"},
                          "output": {0: "batch"}, "stateN": {1: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    if fixed_state_batch:
        for value in (*model.graph.input, *model.graph.output):
            if value.name in ("state", "stateN"):
                value.type.tensor_type.shape.dim[1].dim_value = 1
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- Paddle-style dims


def paddle_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every symbolic dim of the graph's inputs, outputs and value_info as Paddle2ONNX does.

    Paddle2ONNX writes the batch as ``dim_value: -1`` and other unknown dims as
    ``dim_param: '?'`` (several unrelated axes sharing that name); the first symbolic dim of each
    tensor becomes -1, the rest '?'. Returns a copy.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in (*out.graph.input, *out.graph.output, *out.graph.value_info):
        if value.type.WhichOneof("value") != "tensor_type":
            continue
        first = True
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if first:
                dim.dim_value = -1
                first = False
            else:
                dim.dim_param = "?"
    return out


def ocr_recognizer(classes: int = 6, seed: int = 4) -> onnx.ModelProto:
    """A text-line recognizer: ``x [-1, 3, 8, '?']`` image -> ``probs [-1, '?', classes]``.

    Imitates a Paddle-converted OCR recognizer: a conv over a 3x8xW line, pooled over height,
    then per-timestep (per column) softmax scores ``[batch, time, classes]``; dims written the
    Paddle2ONNX way (``paddle_dims``), so the width and the time axis are both ``'?'``.
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((classes, 3, 3, 3)) * 0.5).astype(np.float32)
    b = (rng.standard_normal(classes) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("ReduceMean", ["c"], ["m"], axes=[2], keepdims=0),
            helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 1]),
            helper.make_node("Softmax", ["t"], ["probs"], axis=-1),
        ],
        "ocr_rec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, "width"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", "width", classes])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return paddle_dims(_model(graph))


# --------------------------------------------------------------------------- detection head


def detection_head(*, constant_weights: bool = True, seed: int = 5) -> onnx.ModelProto:
    """A sigmoid probability map ``[batch, 1, 16, 16]`` that is ~1e-8 on random input.

    Imitates a text detector's head (DB-style): a conv with a strongly negative bias under a
    sigmoid, so on N(0, 1) noise every pixel is near zero. Its weights sit in Constant nodes,
    as tf2onnx and some older exporters write them, instead of initializers
    (``constant_weights=False`` uses initializers).
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((1, 3, 3, 3)) * 0.05).astype(np.float32)
    b = np.array([-18.0], np.float32)
    nodes, inits = [], []
    for name, arr in (("w", w), ("b", b)):
        if constant_weights:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name)))
        else:
            inits.append(numpy_helper.from_array(arr, name))
    nodes += [
        helper.make_node("Conv", ["x", "w", "b"], ["logit"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["logit"], ["prob_map"]),
    ]
    graph = helper.make_graph(
        nodes, "det_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("prob_map", TensorProto.FLOAT, ["batch", 1, 16, 16])],
        inits,
    )
    return _model(graph)


# --------------------------------------------------------------------------- control flow


def control_flow(seed: int = 6) -> onnx.ModelProto:
    """If on a 0-d bool flag and a Loop over a 0-d int64 count: ``x [batch, 4]`` -> ``y [batch, 4]``.

    Imitates models that branch on a scalar input (Silero's sample-rate If) and loop a number of
    times given at run time: ``y = n * (flag ? 2x : -x) @ w``.
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["batch", 4])])
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["batch", 4])])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "branch"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["batch", 4])])
    graph = helper.make_graph(
        [
            helper.make_node("If", ["flag"], ["branch"], then_branch=then_g, else_branch=else_g),
            helper.make_node("Constant", [], ["true"], value=helper.make_tensor("true", TensorProto.BOOL, [], [True])),
            helper.make_node("Mul", ["x", "zero"], ["acc0"]),
            helper.make_node("Loop", ["n", "true", "acc0"], ["acc"], body=body),
            helper.make_node("MatMul", ["acc", "w"], ["y"]),
        ],
        "control_flow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
         helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    return _model(graph)


# --------------------------------------------------------------------------- several output kinds


def multi_output(vocab: int = 50, dim: int = 8, classes: int = 5, tags: int = 3,
                 seed: int = 7) -> onnx.ModelProto:
    """``tokens`` int32 ``[batch, seq]`` and ``mask`` bool ``[batch, seq]`` -> three kinds of output.

    Imitates a file-type / text classifier with int32 token input and a bool mask whose graph
    exposes class scores ``[batch, classes]``, a mean-pooled embedding ``[batch, dim]`` and
    per-token tag scores ``[batch, seq, tags]``.
    """
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((vocab, dim)).astype(np.float32)
    w_cls = rng.standard_normal((dim, classes)).astype(np.float32)
    w_tag = rng.standard_normal((dim, tags)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["tokens"], ["ids"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
            helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
            helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
            helper.make_node("MatMul", ["masked", "w_tag"], ["token_scores"]),
            helper.make_node("ReduceMean", ["masked"], ["embedding"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["embedding", "w_cls"], ["class_scores"]),
        ],
        "multi_output",
        [helper.make_tensor_value_info("tokens", TensorProto.INT32, ["batch", "seq"]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"])],
        [helper.make_tensor_value_info("class_scores", TensorProto.FLOAT, ["batch", classes]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim]),
         helper.make_tensor_value_info("token_scores", TensorProto.FLOAT, ["batch", "seq", tags])],
        [numpy_helper.from_array(a, n) for a, n in
         ((table, "table"), (w_cls, "w_cls"), (w_tag, "w_tag"), (np.array([2], np.int64), "last"))],
    )
    return _model(graph)


# --------------------------------------------------------------------------- transformer


def sentence_embedding(vocab: int = 100, hidden: int = 32, outlier: float | None = None,
                       init_range: float = 0.02) -> onnx.ModelProto:
    """A tiny BERT with mean pooling: ``input_ids``, ``attention_mask`` int64 ``[batch, sequence]``.

    Imitates a sentence-transformers model exported for ONNX Runtime: randomly initialised from a
    ``BertConfig`` (no download), mean-pooled under the attention mask inside the graph,
    ``sentence_embedding [batch, 32]``; TorchScript exporter with dynamic batch and sequence axes,
    as FIELD-NOTES' MiniLM measurement used. Importing transformers takes ~15 s here: it is in
    ``SLOW_BUILDERS``, not ``BUILDERS``.

    ``outlier``: the "outlier feature" trained transformers have (a few channels far larger than
    the rest, which is what makes their activations hard to quantize), put in the last layer's
    FFN: one intermediate channel is scaled up by this factor and the output projection's weights
    for it scaled down, so the float model barely changes while the FFN's second MatMul reads an
    input whose range one channel dominates.
    """
    import torch
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=64,
                     initializer_range=init_range)
    torch.manual_seed(0)
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    if outlier is not None:
        layer = bert.encoder.layer[-1]
        with torch.no_grad():
            layer.intermediate.dense.weight[3] *= outlier
            layer.intermediate.dense.bias[3] = abs(float(layer.intermediate.dense.bias[3])) * outlier
            layer.output.dense.weight[:, 3] /= outlier

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    args = (torch.randint(0, vocab, (2, 7)), torch.ones(2, 7, dtype=torch.int64))
    axes = {0: "batch", 1: "sequence"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MeanPooled().eval(), args, buf, input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "sentence_embedding": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(model, {"onnxdeploy.task": "sentence-embedding"})
    return model


#: name -> builder of every fixture class, for tests that run each step over all of them
BUILDERS = {
    "sklearn-zipmap": lambda: sklearn_classifier(zipmap=True),
    "sklearn-tensor": lambda: sklearn_classifier(zipmap=False),
    "rnn-state": rnn_with_state,
    "rnn-state-batch1": lambda: rnn_with_state(fixed_state_batch=True),
    "ocr-paddle-dims": ocr_recognizer,
    "detection-constant-weights": detection_head,
    "control-flow": control_flow,
    "multi-output": multi_output,
}
#: fixtures that take long to build (a transformers import): test them once, not in every loop
SLOW_BUILDERS = {"sentence-embedding": sentence_embedding}


def save_fixture(name: str, directory):
    """Build fixture ``name`` and save it as ``directory/<name>.onnx`` (for steps that take paths)."""
    from pathlib import Path

    from onnxdeploy.modelfile import save_model

    return save_model(BUILDERS[name](), Path(directory) / f"{name}.onnx")
