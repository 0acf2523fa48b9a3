"""A do-nothing gRPC ModelInfer server for ``benchmarks/grpc.py --h2load --floor``: grpcio's own cost.

    python benchmarks/grpc_floor_app.py PORT [--kind sync|aio] [--processes 2]

Every ModelInfer is answered OK with one fixed ``ModelInferResponse`` the size of digits-cnn's
(ten FP32 logits as raw output contents), in ``--processes`` processes sharing PORT with
``SO_REUSEPORT`` as ``onnxdeploy serve``'s workers do. Nothing is parsed, validated, run or
counted. ``--kind sync`` is grpcio's thread-pool server (what serve's workers run), ``aio`` its
asyncio server on uvloop (what KServe runs). What it serves is the ceiling of any server built
on grpcio on this machine: no Python gRPC server here can answer faster than its floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from concurrent import futures
from pathlib import Path

# benchmarks/grpc.py, beside this file, would shadow the grpc package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import grpc  # noqa: E402

from onnxdeploy.wire.proto import grpc_service_pb2 as pb  # noqa: E402

METHOD = "ModelInfer"
SERVICE = "inference.GRPCInferenceService"


def answer() -> bytes:
    resp = pb.ModelInferResponse(model_name="m", model_version="1")
    out = resp.outputs.add(name="logits", datatype="FP32")
    out.shape.extend([1, 10])
    resp.raw_output_contents.append(bytes(40))
    return resp.SerializeToString()


def same(raw: bytes) -> bytes:
    return raw


def serve_sync(port: int, body: bytes) -> None:
    def infer(raw, context):
        return body

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        METHOD: grpc.unary_unary_rpc_method_handler(infer, same, same)})
    server = grpc.server(futures.ThreadPoolExecutor(8), handlers=[handler],
                         options=[("grpc.so_reuseport", 1)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(0)


def serve_aio(port: int, body: bytes) -> None:
    import uvloop

    async def infer(raw, context):
        return body

    async def main():
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.unary_unary_rpc_method_handler(infer, same, same)})
        server = grpc.aio.server(handlers=[handler], options=[("grpc.so_reuseport", 1)])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(0)

    uvloop.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--kind", choices=("sync", "aio"), default="sync")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    body = answer()
    serve = serve_sync if args.kind == "sync" else serve_aio
    children = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            if args.kind == "aio":  # the event loop takes its signals itself
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
            serve(args.port, body)
            os._exit(0)
        children.append(pid)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
