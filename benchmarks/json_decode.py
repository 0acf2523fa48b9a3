"""JSON decoding of a large request: orjson to Python objects vs numbers straight into numpy.

    python benchmarks/json_decode.py [--kind float|tokens|mixed|bool|int32] [--route predict|v2]
                                     [--rows 1024] [--width 256] [--repeats 5] [--fixed]

A body of 1 MiB or more is decoded by ``protocols._decode_arrays`` (long arrays of numbers into
numpy: a float input's into its dtype, the others exactly) instead of ``orjson.loads``, whether
the model's signature bounds a request (``--fixed``: the width is a fixed dim; the body is sized
against the budget first) or not.
This runs ``loads`` + parsing + ``check_feeds`` both ways on one body, in process:

- time, alternated A, B, A (the second A is the A/A control), ``--repeats`` rounds: medians
  and min-max in ms;
- memory: tracemalloc's peak over the body (held before), once each way, as a multiple of the
  body, with the tensors' own bytes for scale.

Kinds (exporter-style signatures): ``float`` x float32 [batch, width]; ``tokens`` input_ids
int64 + attention_mask bool [batch, width] + offset int64 0-d; ``mixed`` x float32 [batch,
width] + lengths int64 [batch]; ``bool`` mask bool [batch, width]; ``int32`` ids int32.
Memory of a real server is tests/test_serve_json_decode.py's (process-tree RSS).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper

from onnxdeploy.environment import environment
from onnxdeploy.serve.model import read_model_info
from onnxdeploy.serve.protocols import (
    json_budget,
    json_number_dtype,
    loads,
    parse_predict,
    parse_v2,
)
from onnxdeploy.serve.validation import check_feeds

DTYPES = {"float": TensorProto.FLOAT, "int64": TensorProto.INT64, "bool": TensorProto.BOOL,
          "int32": TensorProto.INT32}
V2 = {"float": "FP32", "int64": "INT64", "bool": "BOOL", "int32": "INT32"}


def model(path: Path, inputs: list[tuple[str, str, list]]) -> Path:
    """Each input echoed (Identity): the signature is what is measured."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [name + "_out"]) for name, _, _ in inputs], "m",
        [helper.make_tensor_value_info(n, DTYPES[d], shape) for n, d, shape in inputs],
        [helper.make_tensor_value_info(n + "_out", DTYPES[d], shape) for n, d, shape in inputs])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=onnx.IR_VERSION_2021_7_30), path)
    return path


def case(kind: str, rows: int, width: int, fixed: bool):
    """(inputs [(name, dtype, shape)], arrays) for a kind."""
    rng = np.random.default_rng(3)
    w = width if fixed else "width"
    x = np.round(rng.standard_normal((rows, width)), 3)  # "-0.123,": 7 bytes a value
    if kind == "float":
        return [("x", "float", ["batch", w])], {"x": x}
    if kind == "tokens":
        return ([("input_ids", "int64", ["batch", w]), ("attention_mask", "bool", ["batch", w]),
                 ("offset", "int64", [])],
                {"input_ids": rng.integers(0, 30522, (rows, width)),
                 "attention_mask": rng.integers(0, 2, (rows, width)).astype(bool),
                 "offset": np.array(0, np.int64)})
    if kind == "mixed":
        return ([("x", "float", ["batch", w]), ("lengths", "int64", ["batch"])],
                {"x": x, "lengths": np.arange(rows, dtype=np.int64) * 1000})
    if kind == "bool":
        return [("mask", "bool", ["batch", w])], {"mask": rng.integers(0, 2, (rows, width)) > 0}
    return ([("ids", "int32", ["batch", w])],
            {"ids": rng.integers(-2**31, 2**31, (rows, width)).astype(np.int32)})


def body_of(inputs, arrays, route: str) -> bytes:
    opt = orjson.OPT_SERIALIZE_NUMPY
    if route == "predict":
        return orjson.dumps({"inputs": {n: a.item() if a.ndim == 0 else a
                                        for n, a in arrays.items()}}, option=opt)
    return orjson.dumps({"inputs": [
        {"name": n, "datatype": V2[d], "shape": list(arrays[n].shape),
         "data": arrays[n].reshape(-1)} for n, d, _ in inputs]}, option=opt)


def decode(body: bytes, info, route: str, budget, numbers) -> dict:
    payload = loads(body, budget, numbers)
    feeds = (parse_predict(payload, info, max_batch=1 << 30) if route == "predict"
             else parse_v2(payload, b"", info, max_batch=1 << 30)[0])
    del payload
    check_feeds(info.signature, feeds, max_batch=1 << 30)
    return feeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["float", "tokens", "mixed", "bool", "int32"],
                        default="float")
    parser.add_argument("--route", choices=["predict", "v2"], default="predict")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fixed", action="store_true",
                        help="a fixed width: the signature bounds a request (json_budget)")
    args = parser.parse_args()
    inputs, arrays = case(args.kind, args.rows, args.width, args.fixed)
    with tempfile.TemporaryDirectory() as tmp:
        info = read_model_info(str(model(Path(tmp) / "m.onnx", inputs)), "m")
    budget = json_budget(info, args.rows) if args.fixed else json_budget(info, 1024)
    numbers = json_number_dtype(info)
    body = body_of(inputs, arrays, args.route)
    want = {n: np.asarray(a).astype(info.signature.input(n).dtype) for n, a in arrays.items()}
    del arrays
    runs = {"orjson": (budget, None), "numpy": (budget, numbers), "orjson (A/A)": (budget, None)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for label, (b, n) in runs.items():
            t0 = time.perf_counter()
            feeds = decode(body, info, args.route, b, n)
            times[label].append(time.perf_counter() - t0)
            assert all(np.array_equal(feeds[k], v) and feeds[k].dtype == v.dtype
                       for k, v in want.items())
            del feeds
    peaks = {}
    for label in ("orjson", "numpy"):
        b, n = runs[label]
        gc.collect()
        tracemalloc.start()
        feeds = decode(body, info, args.route, b, n)
        peaks[label] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del feeds
    tensors = sum(v.nbytes for v in want.values())
    env = environment()
    print(f"{args.kind} {args.route}: body {len(body) / 2**20:.1f} MiB ({args.rows} rows x "
          f"{args.width}); tensors {tensors / len(body):.2f}x the body; "
          f"{'bounded' if budget is not None else 'unbounded'} signature; "
          f"{env['cpu']} ({env['cores']} cores)")
    for label, t in times.items():
        peak = f"   peak {peaks[label] / len(body):5.2f}x the body" if label in peaks else ""
        print(f"{label:<14} median {statistics.median(t) * 1000:8.1f} ms   "
              f"min-max {min(t) * 1000:.1f}-{max(t) * 1000:.1f}{peak}")


if __name__ == "__main__":
    main()
