"""Issue 26: JSON numbers of every input dtype decode into numpy, not Python objects.

A model whose signature cannot bound a request (an open sequence or feature axis) takes bodies
up to ``--max-body-mb``; decoded by orjson, a body of numbers became Python ints/floats/bools
and lists: 13-18x the body (tracemalloc), before the array was made. ``protocols.loads`` now
decodes long arrays (and arrays of rows) straight into numpy for integer, boolean and mixed
signatures too (a float input's arrays into its dtype, every other array exactly: as numpy
reads its values, then validation casts or refuses it as it did orjson's lists). Checked here:

- the two paths give the same answer, status and message on a table of valid and hostile
  bodies (out of range, fractional, NaN tokens, ragged, mixed types, malformed text...), for
  models built the way exporters write them (int64 ``input_ids [batch, sequence]``, a bool
  mask, a 0-d int input, float + int inputs, int32, a text model's token ids);
- the peak of decoding (tracemalloc, in process) is the tensors plus a small multiple of the
  body; a real server's process-tree RSS grows by a small multiple of the body;
- int64 values past 2**53 go through a real model exactly.

Nothing here asserts on time.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import tracemalloc

import numpy as np
import onnx
import orjson
import pytest
from builders import save
from onnx import TensorProto, helper, numpy_helper
from test_serve_hostile import post_measured
from test_serve_server import Server

from onnxdeploy.serve.model import read_model_info
from onnxdeploy.serve.protocols import (
    ARRAY_DECODE_MIN_BYTES,
    ARRAY_PIECE_BYTES,
    json_number_dtype,
    loads,
    parse_predict,
    parse_v2,
)
from onnxdeploy.serve.text import TextInfo, Texts
from onnxdeploy.serve.validation import ApiError, check_feeds

#: trailing whitespace that takes any body over the size from which arrays decode into numpy
PAD = b" " * ARRAY_DECODE_MIN_BYTES
#: what one piece of text being decoded may hold at once: its Python objects (36 bytes an int
#: for "12345,", 8 bytes a slot for "1,"), its array, its comma positions
PIECE_OBJECTS = 16 * ARRAY_PIECE_BYTES
BIG = 1 << 30  # --max-batch in process: no request here is refused for its rows
WIDTH = 300  # values a row: every row's text is over ARRAY_MIN_TEXT


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                             ir_version=onnx.IR_VERSION_2021_7_30)


def tokens_model() -> onnx.ModelProto:
    """As a token model is exported: ``input_ids`` int64 [batch, sequence], ``attention_mask``
    bool [batch, sequence], ``offset`` int64 0-d -> ``total`` = each row's ids summed + offset
    (int64, exact), ``first`` = the mask's first column as int64. Small outputs, so a server's
    memory is the request's."""
    axis1 = numpy_helper.from_array(np.array([1], np.int64), "axis1")
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    return _model(
        [helper.make_node("ReduceSum", ["input_ids", "axis1"], ["row"], keepdims=0),
         helper.make_node("Add", ["row", "offset"], ["total"]),
         helper.make_node("Slice", ["attention_mask", "zero", "one", "axis1"], ["col"]),
         helper.make_node("Cast", ["col"], ["first"], to=TensorProto.INT64)],
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.BOOL, ["batch", "sequence"]),
         helper.make_tensor_value_info("offset", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("total", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("first", TensorProto.INT64, ["batch", 1])],
        [axis1, zero, one])


def echo_model() -> onnx.ModelProto:
    """The tokens model's inputs -> ``ids`` = input_ids + offset where the mask is true, else 0
    (int64 Add and Where: exact; ONNX Runtime's int64 ReduceSum is not past 2**53)."""
    zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
    return _model(
        [helper.make_node("Add", ["input_ids", "offset"], ["shifted"]),
         helper.make_node("Where", ["attention_mask", "shifted", "zero"], ["ids"])],
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.BOOL, ["batch", "sequence"]),
         helper.make_tensor_value_info("offset", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [zero])


def mixed_model() -> onnx.ModelProto:
    """``x`` float [batch, features] and ``lengths`` int64 [batch] -> ``y`` = each row of x
    summed + lengths (float), ``lengths_out`` = lengths (int64, exact)."""
    axis1 = numpy_helper.from_array(np.array([1], np.int64), "axis1")
    return _model(
        [helper.make_node("ReduceSum", ["x", "axis1"], ["row"], keepdims=0),
         helper.make_node("Cast", ["lengths"], ["lf"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["row", "lf"], ["y"]),
         helper.make_node("Identity", ["lengths"], ["lengths_out"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"]),
         helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("lengths_out", TensorProto.INT64, ["batch"])],
        [axis1])


def one_input_model(dtype: int, name: str = "input_ids", sequence="sequence") -> onnx.ModelProto:
    """One input [batch, sequence] of ``dtype``, echoed."""
    return _model([helper.make_node("Identity", [name], ["out"])],
                  [helper.make_tensor_value_info(name, dtype, ["batch", sequence])],
                  [helper.make_tensor_value_info("out", dtype, ["batch", sequence])])


@pytest.fixture(scope="module")
def infos(tmp_path_factory):
    root = tmp_path_factory.mktemp("json_decode")
    out = {
        "tokens": read_model_info(save(tokens_model(), root / "tokens.onnx"), "tokens"),
        "mixed": read_model_info(save(mixed_model(), root / "mixed.onnx"), "mixed"),
        "int32": read_model_info(save(one_input_model(TensorProto.INT32), root / "i32.onnx"),
                                 "i32"),
    }
    out["float"] = read_model_info(save(one_input_model(TensorProto.FLOAT, "x"),
                                        root / "f32.onnx"), "f32")
    ids_only = read_model_info(save(one_input_model(TensorProto.INT64), root / "ids.onnx"), "t")
    # a text model's token ids: what parsing reads of the model is its signature and ``text``
    out["text"] = dataclasses.replace(ids_only, text=TextInfo(16, 0, ("input_ids",)))
    return out


# --------------------------------------------------------------------------- the two paths


def outcome(info, body: bytes, route: str, numbers) -> tuple:
    """What the server makes of ``body``: the feeds (dtype, shape, bytes) and v2 options, the
    checked texts, or the refusal (status, message)."""
    try:
        payload = loads(body, None, numbers)
        if route == "predict":
            feeds, options = parse_predict(payload, info, max_batch=BIG), None
        else:
            feeds, options = parse_v2(payload, b"", info, max_batch=BIG)
        if isinstance(feeds, Texts):
            return ("texts", feeds.items, feeds.where, options)
        check_feeds(info.signature, feeds, max_batch=BIG)
        return ("ok", {n: (a.dtype.str, a.shape, a.tobytes()) for n, a in feeds.items()},
                options)
    except ApiError as exc:
        return ("refused", exc.status, exc.message)


def arrays_in(tree) -> int:
    """How many numpy arrays a decoded payload holds."""
    count, stack = 0, [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, np.ndarray):
            count += 1
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _rows(values, n=2, width=WIDTH):
    rng = np.random.default_rng(len(str(values)))
    rows = rng.integers(0, 30522, (n, width)).tolist()
    for (i, j), v in values.items():
        rows[i][j] = v
    return rows


def _mask(n=2, width=WIDTH):
    return (np.arange(n * width).reshape(n, width) % 3 != 0).tolist()


def _tokens(ids=None, mask=None, offset=0, route="predict", shape=None, extra=None):
    """A body for the tokens model (``ids``/``mask`` as nested rows), as JSON text; Python's
    json writes what orjson will not (2**64, NaN)."""
    ids = _rows({}) if ids is None else ids
    mask = _mask() if mask is None else mask
    if route == "predict":
        payload = {"inputs": {"input_ids": ids, "attention_mask": mask, "offset": offset}}
    else:
        flat = np.asarray(ids, dtype=object).reshape(-1).tolist() if _rect(ids) else ids
        payload = {"inputs": [
            {"name": "input_ids", "datatype": "INT64", "data": flat,
             "shape": shape if shape is not None else [len(ids), len(ids[0])]},
            {"name": "attention_mask", "datatype": "BOOL", "shape": [len(mask), len(mask[0])],
             "data": np.asarray(mask, dtype=object).reshape(-1).tolist()},
            {"name": "offset", "datatype": "INT64", "shape": [], "data": [offset]}]}
    payload.update(extra or {})
    return json.dumps(payload).encode()


def _rect(rows) -> bool:
    return all(isinstance(r, list) for r in rows) and len({len(r) for r in rows}) == 1


def _cases() -> list[tuple[str, str, str, bytes]]:
    """(label, model, route, body without the padding): valid bodies first (label "valid ...")."""
    cases = []
    for route in ("predict", "v2"):
        t = functools.partial(_tokens, route=route)
        cases += [
            ("valid tokens", "tokens", route, t()),
            ("valid 2**62+1", "tokens", route, t(ids=_rows({(0, 5): 2**62 + 1, (1, 0): -2**62}))),
            ("valid int64 extremes", "tokens", route,
             t(ids=_rows({(0, 1): 2**63 - 1, (1, 2): -2**63}))),
            ("valid 7.0 in ints", "tokens", route, t(ids=_rows({(1, 7): 7.0}))),
            ("valid a float past 2**53 with a fraction-free float", "tokens", route,
             t(ids=_rows({(0, 3): 2**53 + 1, (0, 4): 2.0}))),
            ("valid true among ints", "tokens", route, t(ids=_rows({(1, 9): True}))),
            ("valid all-false mask", "tokens", route, t(mask=[[False] * WIDTH] * 2)),
            ("2**63", "tokens", route, t(ids=_rows({(0, 5): 2**63}))),
            ("2**63 with a negative", "tokens", route, t(ids=_rows({(0, 5): 2**63, (0, 6): -1}))),
            ("2**64-1 row", "tokens", route, t(ids=[[2**64 - 1] * WIDTH, [1] * WIDTH])),
            ("-2**63-1", "tokens", route, t(ids=_rows({(1, 5): -2**63 - 1}))),
            ("2**64", "tokens", route, t(ids=_rows({(0, 0): 2**64}))),
            ("10**30", "tokens", route, t(ids=_rows({(0, 0): 10**30}))),
            ("1.5", "tokens", route, t(ids=_rows({(1, 299): 1.5}))),
            ("-0.0 and 1e-300", "tokens", route, t(ids=_rows({(0, 0): -0.0, (0, 1): 1e-300}))),
            ("null", "tokens", route, t(ids=_rows({(0, 8): None}))),
            ("all booleans for ids", "tokens", route, t(ids=[[True] * WIDTH, [False] * WIDTH])),
            ("a string", "tokens", route, t(ids=_rows({(0, 8): "7"}))),
            ("an object in a row", "tokens", route, t(ids=_rows({(0, 8): {"a": 1}}))),
            ("a list in a row", "tokens", route, t(ids=_rows({(0, 8): [1, 2]}))),
            ("ragged", "tokens", route, t(ids=[[1] * WIDTH, [1] * (WIDTH + 1)])),
            ("an empty row", "tokens", route, t(ids=[[1] * WIDTH, []])),
            ("empty rows", "tokens", route, t(ids=[[]] * 200)),
            ("one row", "tokens", route, t(ids=[[5] * WIDTH], mask=[[True] * WIDTH])),
            ("3-D", "tokens", route, t(ids=[_rows({})])),
            ("NaN token", "tokens", route, t(ids=_rows({(0, 8): float("nan")}))),
            ("Infinity token", "tokens", route, t(ids=_rows({(0, 8): float("inf")}))),
            ("mask 0/1", "tokens", route, t(mask=[[0, 1] * (WIDTH // 2)] * 2)),
            ("mask true and 1", "tokens", route, t(mask=[[True, 1] * (WIDTH // 2)] * 2)),
            ("mask null", "tokens", route, t(mask=[[True] * (WIDTH - 1) + [None]] * 2)),
            ("mask 1.0", "tokens", route, t(mask=[[1.0] * WIDTH] * 2)),
            ("0-d offset given rows", "tokens", route, t(offset=list(range(WIDTH)))),
            ("0-d offset 1.5", "tokens", route, t(offset=1.5)),
            ("a long array outside the data", "tokens", route,
             t(extra={"parameters": {"binary_data_output": [1] * WIDTH}, "id": "x"})),
            ("a broken long array outside the data", "tokens", route,
             t(extra={"parameters": {"p": [1] * WIDTH}}).replace(b"1]}", b"1,]}")),
            ("a payload that is a long array", "tokens", route, json.dumps(_rows({})).encode()),
            ("inputs a matrix of numbers", "tokens", route,
             json.dumps({"inputs": _rows({})}).encode()),
            ("inputs a long flat list", "tokens", route,
             json.dumps({"inputs": [1] * WIDTH}).encode()),
        ]
        good = _tokens(route=route)
        cases += [
            ("trailing comma in a row", "tokens", route, good.replace(b"]", b",]", 1)),
            ("truncated", "tokens", route, good[:-1]),
            ("1e400", "tokens", route, _in_row(good, b", ", b", 1e400, ")),
            ("a row cut by a space", "tokens", route, _in_row(good, b", ", b" ")),
            ("a bare minus in a row", "tokens", route, _in_row(good, b", ", b", -, ")),
        ]
        x = np.round(np.random.default_rng(1).standard_normal((WIDTH, 64)), 3)
        lengths = list(range(WIDTH))

        def m(x=x, lengths=lengths, route=route):
            xs = x.tolist() if isinstance(x, np.ndarray) else x
            if route == "predict":
                return json.dumps({"inputs": {"x": xs, "lengths": lengths}}).encode()
            return json.dumps({"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [WIDTH, 64],
                 "data": np.asarray(xs, dtype=object).reshape(-1).tolist() if _rect(xs) else xs},
                {"name": "lengths", "datatype": "INT64", "shape": [len(lengths)],
                 "data": lengths}]}).encode()

        cases += [
            ("valid mixed", "mixed", route, m()),
            ("valid ints among floats", "mixed", route, m(x=_with(x, {(0, 1): 3, (5, 5): -7}))),
            ("valid int rows for floats", "mixed", route, m(x=[[1] * 64] * WIDTH)),
            ("valid true among floats", "mixed", route, m(x=_with(x, {(2, 2): True}))),
            ("valid lengths 2**62+1", "mixed", route, m(lengths=[2**62 + 1] * WIDTH)),
            ("valid float lengths 3.0", "mixed", route, m(lengths=[3.0] * WIDTH)),
            ("lengths 1.5", "mixed", route, m(lengths=[1.5] + lengths[1:])),
            ("lengths booleans", "mixed", route, m(lengths=[True] * WIDTH)),
            ("x all booleans", "mixed", route, m(x=[[True] * 64] * WIDTH)),
            ("x 1e39", "mixed", route, m(x=_with(x, {(3, 3): 1e39}))),
            ("x null", "mixed", route, m(x=_with(x, {(3, 3): None}))),
            ("x ragged", "mixed", route, m(x=x.tolist()[:-1] + [[0.5] * 65])),
            ("x 2**64", "mixed", route, m(x=_with(x, {(3, 3): 2**64}))),
            ("x 2**63 row", "mixed", route, m(x=[[2**63] * 64] * WIDTH)),
            ("valid floats", "float", route, _one("x", "FP32", x.tolist(), route)),
            ("valid ints among floats, float model", "float", route,
             _one("x", "FP32", _with(x, {(0, 1): 3, (5, 5): 2**40 + 1}), route)),
            ("valid int rows, float model", "float", route,
             _one("x", "FP32", [[2**24 + 1] * 64] * WIDTH, route)),
            ("valid a true among floats, float model", "float", route,
             _one("x", "FP32", _with(x, {(2, 2): True}), route)),
            ("all booleans, float model", "float", route,
             _one("x", "FP32", [[True] * 64] * WIDTH, route)),
            ("a boolean row, float model", "float", route,
             _one("x", "FP32", [[True] * 64] + x.tolist()[1:], route)),
            ("1e39, float model", "float", route, _one("x", "FP32", _with(x, {(3, 3): 1e39}),
                                                      route)),
            ("null, float model", "float", route, _one("x", "FP32", _with(x, {(3, 3): None}),
                                                      route)),
            ("ragged, float model", "float", route,
             _one("x", "FP32", x.tolist()[:-1] + [[0.5] * 65], route)),
            ("2**64, float model", "float", route, _one("x", "FP32", _with(x, {(3, 3): 2**64}),
                                                       route)),
            ("trailing comma in a row, float model", "float", route,
             _in_row(_one("x", "FP32", x.tolist(), route), b"]", b",]")),
            ("a bare minus in a row, float model", "float", route,
             _in_row(_one("x", "FP32", x.tolist(), route), b", ", b", -, ")),
            ("valid int32", "int32", route, _one("input_ids", "INT32", _rows({}), route)),
            ("int32 2**31", "int32", route, _one("input_ids", "INT32", _rows({(1, 1): 2**31}),
                                                 route)),
            ("int32 -2**31-1", "int32", route,
             _one("input_ids", "INT32", _rows({(1, 1): -2**31 - 1}), route)),
            ("valid text model token ids", "text", route,
             _one("input_ids", "INT64", _rows({}), route)),
        ]
    ids = _rows({})
    cases += [  # a text model: texts or token ids, told apart by the shape of 'inputs'
        ("text: a flat list of numbers as texts", "text", "predict",
         json.dumps({"inputs": ids[0]}).encode()),
        ("text: 'text' holding numbers", "text", "predict",
         json.dumps({"inputs": {"text": ids[0]}}).encode()),
        ("text: rows then a text", "text", "predict",
         json.dumps({"inputs": [ids[0], "a text"]}).encode()),
        ("text: a text then rows", "text", "predict",
         json.dumps({"inputs": ["a text", ids[0]]}).encode()),
        ("text: BYTES data of numbers", "text", "v2", json.dumps({"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [WIDTH], "data": ids[0]}]}).encode()),
        ("text: BYTES data of rows", "text", "v2", json.dumps({"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": ids}]}).encode()),
        ("v2: a long shape", "tokens", "v2", _tokens(route="v2", shape=[1] * WIDTH)),
        ("v2: data one value short", "tokens", "v2",
         _tokens(route="v2", shape=[2, WIDTH + 1])),
        ("v2: nested data", "tokens", "v2", json.dumps({"inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [2, WIDTH], "data": ids},
            {"name": "attention_mask", "datatype": "BOOL", "shape": [2, WIDTH], "data": _mask()},
            {"name": "offset", "datatype": "INT64", "shape": [], "data": 3}]}).encode()),
        ("v2: wrong datatype", "tokens", "v2",
         _tokens(route="v2").replace(b'"INT64"', b'"FP32"', 1)),
    ]
    return cases


def _in_row(body: bytes, old: bytes, new: bytes) -> bytes:
    """``body`` with the first ``old`` inside the first input's values replaced."""
    at = body.index(b"[[") if b"[[" in body else body.index(b'"data": [')
    at = body.index(old, at)
    return body[:at] + new + body[at + len(old):]


def _with(x: np.ndarray, changes: dict) -> list:
    rows = x.tolist()
    for (i, j), v in changes.items():
        rows[i][j] = v
    return rows


def _one(name: str, datatype: str, rows: list, route: str) -> bytes:
    if route == "predict":
        return json.dumps({"inputs": rows}).encode()
    return json.dumps({"inputs": [{"name": name, "datatype": datatype,
                                   "shape": [len(rows), len(rows[0])],
                                   "data": [v for r in rows for v in r]}]}).encode()


CASES = _cases()


@pytest.mark.parametrize(("label", "model", "route", "body"), CASES,
                         ids=[f"{c[2]}-{c[1]}-{c[0]}" for c in CASES])
def test_numpy_decoding_answers_what_orjson_decoding_answers(infos, label, model, route, body):
    info = infos[model]
    numbers = json_number_dtype(info)
    assert numbers is not None
    body += PAD
    want = outcome(info, body, route, None)  # orjson's lists, as before
    got = outcome(info, body, route, numbers)
    assert got[:1] == want[:1], (got[:3], want[:3])
    assert got == want
    if label.startswith("valid"):
        assert want[0] in ("ok", "texts"), want
        # and the numbers did go into arrays (orjson's lists before, for these models)
        assert arrays_in(loads(body, None, numbers)) > 0
    print(f"{route} {model} {label}: {want[0]} {want[1] if want[0] == 'refused' else ''} "
          f"{want[2][:90] if want[0] == 'refused' else ''}")


def test_the_table_covers_refusals_of_each_kind(infos):
    # the comparison above means something only if the table holds refusals of each kind
    messages = []
    for _, model, route, body in CASES:
        got = outcome(infos[model], body + PAD, route, None)
        if got[0] == "refused":
            messages.append(got[2])
    for fragment in ("out of range for int64", "non-integer", "ragged or mixed",
                     "ragged nested lists", "expected booleans", "malformed JSON",
                     "out of range for float32", "out of range for int32", "expected a string",
                     "(rank 1)", "(rank 300)", "needs 602", "datatype 'FP32'",
                     "got a number; expected a string", "got a list; expected a string",
                     "dimension 'batch' is 200"):
        assert any(fragment in m for m in messages), fragment


def test_int64_past_2_53_is_exact_and_arrays_are_what_validation_casts(infos):
    info = infos["tokens"]
    ids = _rows({(0, 5): 2**62 + 1, (1, 9): -(2**62) - 3})
    for route in ("predict", "v2"):
        payload = loads(_tokens(ids=ids, route=route) + PAD, None, json_number_dtype(info))
        feeds = (parse_predict(payload, info, max_batch=BIG) if route == "predict"
                 else parse_v2(payload, b"", info, max_batch=BIG)[0])
        assert feeds["input_ids"].dtype == np.int64
        assert feeds["input_ids"][0, 5] == 2**62 + 1 and feeds["input_ids"][1, 9] == -(2**62) - 3
        assert feeds["input_ids"].tolist() == ids
        assert feeds["attention_mask"].dtype == np.bool_
        assert feeds["attention_mask"].tolist() == _mask()
        assert feeds["offset"].shape == ()
        # 2**63 is past int64: refused (a float64 2**63 once passed the range check and wrapped)
        big = loads(_tokens(ids=_rows({(0, 5): 2**63, (0, 6): -1}), route=route) + PAD, None,
                    json_number_dtype(info))
        with pytest.raises(ApiError, match="input 'input_ids': values out of range for int64"):
            feeds = (parse_predict(big, info, max_batch=BIG) if route == "predict"
                     else parse_v2(big, b"", info, max_batch=BIG)[0])


# --------------------------------------------------------------------------- memory, in process


def _peak(info, body: bytes, route: str, numbers) -> tuple[int, int]:
    """tracemalloc's peak while ``body`` (already held) is decoded, parsed and checked, and the
    bytes of the feeds it gave."""
    gc.collect()
    tracemalloc.start()
    try:
        payload = loads(body, None, numbers)
        feeds = (parse_predict(payload, info, max_batch=BIG) if route == "predict"
                 else parse_v2(payload, b"", info, max_batch=BIG)[0])
        del payload
        check_feeds(info.signature, feeds, max_batch=BIG)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, sum(a.nbytes for a in feeds.values())


def _token_arrays(rows: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.integers(0, 30522, (rows, seq)), rng.integers(0, 2, (rows, seq)).astype(bool)


def _mixed_arrays(rows: int, features: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.round(np.random.default_rng(6).standard_normal((rows, features)), 3)
    return x, np.arange(rows, dtype=np.int64) * 1000


def _big_tokens(rows: int, seq: int, route: str) -> bytes:
    ids, mask = _token_arrays(rows, seq)
    if route == "predict":
        return orjson.dumps({"inputs": {"input_ids": ids, "attention_mask": mask, "offset": 0}},
                            option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps({"inputs": [
        {"name": "input_ids", "datatype": "INT64", "shape": [rows, seq], "data": ids.reshape(-1)},
        {"name": "attention_mask", "datatype": "BOOL", "shape": [rows, seq],
         "data": mask.reshape(-1)},
        {"name": "offset", "datatype": "INT64", "shape": [], "data": [0]}]},
        option=orjson.OPT_SERIALIZE_NUMPY)


def _big_mixed(rows: int, features: int, route: str) -> bytes:
    x, lengths = _mixed_arrays(rows, features)
    if route == "predict":
        return orjson.dumps({"inputs": {"x": x, "lengths": lengths}},
                            option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [rows, features], "data": x.reshape(-1)},
        {"name": "lengths", "datatype": "INT64", "shape": [rows], "data": lengths}]},
        option=orjson.OPT_SERIALIZE_NUMPY)


@pytest.mark.parametrize("route", ["predict", "v2"])
@pytest.mark.parametrize("kind", ["tokens", "mixed", "int32"])
def test_decoding_peaks_at_the_tensors_plus_a_small_multiple_of_the_body(infos, kind, route):
    # orjson's lists of a token body peaked at ~18x the body (ints past 256 are 28-byte
    # objects plus an 8-byte slot, for ~6 bytes of text); numpy's arrays at the tensors (the
    # int64 ids are 8 bytes a value) plus the pieces being decoded
    info = infos[kind]
    if kind == "tokens":
        body = _big_tokens(1024, 1024, route)
    elif kind == "mixed":
        body = _big_mixed(1024, 1024, route)
    else:
        ids = np.random.default_rng(7).integers(-2**31, 2**31, (512, 1024))
        body = _one("input_ids", "INT32", ids.tolist(), route)
    before, tensors = _peak(info, body, route, None)
    peak, same = _peak(info, body, route, json_number_dtype(info))
    assert same == tensors
    print(f"{kind} {route}: body {len(body) / 2**20:.1f} MiB, tensors {tensors / len(body):.2f}x;"
          f" peak orjson {before / len(body):.2f}x, numpy {peak / len(body):.2f}x")
    assert peak < tensors + len(body) + PIECE_OBJECTS, (peak, tensors, len(body))
    assert before > tensors + 4 * len(body)  # the Python objects this is about


def test_a_bool_body_peaks_under_the_body(infos, tmp_path):
    info = read_model_info(save(one_input_model(TensorProto.BOOL, "mask"), tmp_path / "b.onnx"))
    mask = np.random.default_rng(8).integers(0, 2, (1024, 2048)).astype(bool)
    for route in ("predict", "v2"):
        body = _one("mask", "BOOL", mask.tolist(), route)
        before, tensors = _peak(info, body, route, None)
        peak, _ = _peak(info, body, route, json_number_dtype(info))
        print(f"bool {route}: body {len(body) / 2**20:.1f} MiB, peak orjson "
              f"{before / len(body):.2f}x, numpy {peak / len(body):.2f}x")
        assert peak < len(body) and before > 4 * len(body)


def test_a_bounded_model_decodes_into_numpy_too(tmp_path):
    # a fixed sequence (1024): the signature bounds a request, the body is sized against that
    # budget first; its numbers then decode into arrays as an open signature's do (orjson's
    # lists were 16x the body)
    from onnxdeploy.serve.protocols import json_budget

    info = read_model_info(save(one_input_model(TensorProto.INT64, sequence=1024),
                                tmp_path / "fixed.onnx"))
    budget = json_budget(info, 1024)
    assert budget is not None
    ids = np.random.default_rng(9).integers(0, 30522, (1024, 1024))
    body = orjson.dumps({"inputs": ids}, option=orjson.OPT_SERIALIZE_NUMPY)
    payload = loads(body, budget, json_number_dtype(info))
    assert isinstance(payload["inputs"], np.ndarray) and payload["inputs"].dtype == np.int64
    assert np.array_equal(parse_predict(payload, info, max_batch=1024)["input_ids"], ids)
    gc.collect()
    tracemalloc.start()
    try:
        feeds = parse_predict(loads(body, budget, json_number_dtype(info)), info, max_batch=1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"bounded int64: body {len(body) / 2**20:.1f} MiB, peak {peak / len(body):.2f}x")
    assert peak < feeds["input_ids"].nbytes + len(body) + PIECE_OBJECTS
    with pytest.raises(ApiError) as err:  # the budget still holds first
        loads(b"[" + b"1," * budget + b"1]", budget, json_number_dtype(info))
    assert err.value.status == 413


# --------------------------------------------------------------------------- a real server


@pytest.mark.parametrize("route", ["predict", "v2"])
@pytest.mark.parametrize("kind", ["tokens", "mixed"])
def test_a_server_decodes_a_big_json_body_at_a_small_multiple_of_it(tmp_path, kind, route):
    import onnxruntime as ort

    path = save(tokens_model() if kind == "tokens" else mixed_model(), tmp_path / f"{kind}.onnx")
    if kind == "tokens":
        body = _big_tokens(1024, 3072, route)
        ids, mask = _token_arrays(1024, 3072)
        feeds = {"input_ids": ids, "attention_mask": mask, "offset": np.array(0, np.int64)}
    else:
        body = _big_mixed(1024, 4096, route)
        x, lengths = _mixed_arrays(1024, 4096)
        feeds = {"x": x.astype(np.float32), "lengths": lengths}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    del feeds
    name = path.stem
    url = "/predict" if route == "predict" else f"/v2/models/{name}/infer"
    server = Server(path, "--workers", "1", "--name", name, "--max-body-mb", "64",
                    "--body-timeout", "60", tmp=tmp_path)
    try:
        answer, growth = post_measured(server, url, body, f"{kind} {route}")
        assert answer is not None and answer[0] == 200, answer and answer[2][:300]
        got = json.loads(answer[2])
        outs = ({o["name"]: o["data"] for o in got["outputs"]} if route == "v2"
                else got["outputs"])
        if kind == "tokens":
            assert np.asarray(outs["total"]).reshape(-1).tolist() == want[0].tolist()
        else:
            assert np.allclose(np.asarray(outs["y"], np.float32).reshape(-1), want[0], rtol=1e-5)
        # orjson's lists: ~10x the body and more; the tensors here are 0.6-0.8x of it
        assert growth < 4, growth
    finally:
        server.stop()


def test_int64_past_2_53_round_trips_through_a_served_model(tmp_path):
    path = save(echo_model(), tmp_path / "exact.onnx")
    server = Server(path, "--workers", "1", "--name", "exact", tmp=tmp_path)
    try:
        ids = [[0] * 4096, [0] * 4096]
        ids[0][7], ids[1][0] = 2**62 + 1, -(2**62) - 1
        mask = [[True] * 4096, [True] * 4095 + [False]]
        body = orjson.dumps({"inputs": {"input_ids": ids, "attention_mask": mask,
                                        "offset": 2**40}})
        body += PAD  # decoded into arrays
        status, _, answer = server.request("POST", "/predict", body,
                                           {"Content-Type": "application/json"})
        assert status == 200, answer
        want = np.where(np.asarray(mask), np.asarray(ids) + 2**40, 0)
        got = orjson.loads(answer)["outputs"]["ids"]
        assert got[0][7] == 2**62 + 1 + 2**40 and got[1][0] == -(2**62) - 1 + 2**40
        assert got == want.tolist()
        v2 = orjson.dumps({"inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [2, 4096],
             "data": [v for r in ids for v in r]},
            {"name": "attention_mask", "datatype": "BOOL", "shape": [2, 4096],
             "data": [True] * 8192},
            {"name": "offset", "datatype": "INT64", "shape": [], "data": [0]}]}) + PAD
        status, _, answer = server.request("POST", "/v2/models/exact/infer", v2,
                                           {"Content-Type": "application/json"})
        assert status == 200, answer
        data = orjson.loads(answer)["outputs"][0]["data"]
        assert data[7] == 2**62 + 1 and data[4096] == -(2**62) - 1
        assert data == [v for r in ids for v in r]
        # past int64: the same 400 as before, naming the input
        ids[0][7] = 2**63
        status, _, answer = server.request(
            "POST", "/predict", orjson.dumps({"inputs": {"input_ids": ids,
                                                         "attention_mask": mask,
                                                         "offset": 0}}) + PAD,
            {"Content-Type": "application/json"})
        assert status == 400 and b"input 'input_ids'" in answer and b"int64" in answer, answer
    finally:
        server.stop()
