"""KServe's Python model server with one ``kserve.Model`` running an ONNX Runtime session.

The comparison server of ``benchmarks/grpc.py --h2load``: it runs in a separate venv that has
``kserve`` (never onnxdeploy's), e.g.

    python -m venv /work/venv-kserve
    /work/venv-kserve/bin/pip install 'kserve==0.21.*' onnxruntime -c constraints.txt
    /work/venv-kserve/bin/python benchmarks/kserve_app.py MODEL.onnx --name m \
        --http-port 8080 --grpc-port 8081

One intra-op thread per session and KServe's own defaults otherwise (one worker process).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# benchmarks/grpc.py, beside this file, would shadow the grpc package KServe imports
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402


class OrtModel(Model):
    """The Open Inference Protocol's ``predict`` through one ORT session."""

    def __init__(self, name: str, path: str, threads: int):
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        feeds = {inp.name: np.asarray(inp.as_numpy()) for inp in payload.inputs}
        results = self.session.run(None, feeds)
        outputs = []
        for name, value in zip(self.outputs, results):
            out = InferOutput(name=name, shape=list(value.shape), datatype="FP32")
            out.set_data_from_numpy(value.astype(np.float32, copy=False), binary_data=True)
            outputs.append(out)
        return InferResponse(model_name=self.name, infer_outputs=outputs,
                             response_id=payload.id)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--name", default="m")
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--grpc-port", type=int, default=8081)
    ap.add_argument("--ort-threads", type=int, default=1)
    args = ap.parse_args()
    model = OrtModel(args.name, args.model, args.ort_threads)
    sys.argv = [sys.argv[0]]  # KServe parses the command line itself
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start([model])


if __name__ == "__main__":
    main()
