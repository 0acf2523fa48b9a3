"""JSON decoding of a large /predict body: orjson to Python objects vs numbers straight into numpy.

    python benchmarks/json_decode.py [--rows 1024] [--width 256] [--repeats 5]

For a model whose signature cannot bound a request (x: [batch, features], features open), the
server decodes a body of 1 MiB or more with ``protocols._decode_arrays`` (long arrays of numbers
into float32) instead of ``orjson.loads``. This times ``loads`` + ``parse_predict`` both ways,
in process, alternated A, B, A (the second A is the A/A control), ``--repeats`` rounds; medians
and min-max in ms, and the CPU. Memory is tests/test_serve_hostile.py's (process-tree RSS).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper

from onnxdeploy.environment import environment
from onnxdeploy.serve.model import read_model_info
from onnxdeploy.serve.protocols import json_budget, json_number_dtype, loads, parse_predict


def row_mean_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=1)], "row_mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=onnx.IR_VERSION_2021_7_30), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        info = read_model_info(str(row_mean_model(Path(tmp) / "row_mean.onnx")), "m")
    assert json_budget(info, 1024) is None  # the case the numpy decoding is for
    numbers = json_number_dtype(info)
    x = np.round(np.random.default_rng(3).standard_normal((args.rows, args.width)), 3)
    body = orjson.dumps({"inputs": x.tolist()})
    want = x.astype(np.float32)
    runs = {"orjson": None, "numpy": numbers, "orjson (A/A)": None}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for label, dtype in runs.items():
            t0 = time.perf_counter()
            feeds = parse_predict(loads(body, None, dtype), info, max_batch=1 << 20)
            times[label].append(time.perf_counter() - t0)
            assert np.array_equal(feeds["x"], want)
    env = environment()
    print(f"body {len(body) / 2**20:.1f} MiB ({args.rows} rows x {args.width} values); "
          f"{env['cpu']} ({env['cores']} cores)")
    for label, t in times.items():
        print(f"{label:<14} median {statistics.median(t) * 1000:8.1f} ms   "
              f"min-max {min(t) * 1000:.1f}-{max(t) * 1000:.1f}")


if __name__ == "__main__":
    main()
