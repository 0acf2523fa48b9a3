"""``benchmarks/grpc_floor_app.py``: the do-nothing gRPC server ``benchmarks/grpc.py --floor``
measures as grpcio's ceiling. A floor that fails its calls would still count as HTTP/2 answers
in h2load, so each kind is called here through tritonclient's own gRPC stubs: the call must be
OK and carry a ModelInferResponse shaped like digits-cnn's, from every process, and SIGTERM must
stop them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from onnxdeploy.bench.servers import free_port

grpc = pytest.importorskip("grpc")
pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as tpb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as tpb_grpc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "benchmarks" / "grpc_floor_app.py"


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_the_grpc_floor_answers_every_call_ok_and_stops_on_sigterm(kind):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(APP), str(port), "--kind", kind,
                             "--processes", "2"], env=env, start_new_session=True)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = tpb_grpc.GRPCInferenceServiceStub(channel)
        request = tpb.ModelInferRequest(model_name="m")
        for _ in range(20):
            resp = stub.ModelInfer(request, timeout=10)
            assert resp.model_name == "m"
            assert [o.name for o in resp.outputs] == ["logits"]
            assert list(resp.outputs[0].shape) == [1, 10]
            logits = np.frombuffer(resp.raw_output_contents[0], dtype="<f4")
            assert logits.shape == (10,)
        channel.close()
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 2, children  # one listener per process, as serve's workers
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    time.sleep(0.2)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"floor process {pid} outlived SIGTERM"
