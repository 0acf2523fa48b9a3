"""Load over gRPC (``bench --protocol grpc``, ``--url grpc://HOST:PORT``): a grpc.aio client.

Requests are encoded once, before the run: each ``/predict`` body of the target's request set
becomes a ``ModelInferRequest`` with ``raw_input_contents`` (the fast form; what Triton's clients
send), serialized to bytes, and the client sends those bytes as they are (no serializer in the
loop). Closed loop only: ``concurrency`` coroutines each send again when answered, spread over
``channels`` channels of their own (each its own TCP connection, so a server's workers all get
connections; gRPC's global subchannel pool would otherwise put every channel on one).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson

from ..errors import OptionError, ServerError
from ..modelfile import Signature
from .engines.native import DEFAULT_TIMEOUT_S, ERROR_TEXT_BYTES, LoadResult

INFER = "/inference.GRPCInferenceService/ModelInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"
SCHEME = "grpc://"
#: channels (TCP connections) per run: as many as coroutines, up to this
MAX_CHANNELS = 8


def is_grpc_url(url: str) -> bool:
    return url.startswith(SCHEME)


def split_grpc_url(url: str) -> str:
    """``grpc://HOST:PORT`` -> ``HOST:PORT`` (OptionError when the port is missing)."""
    rest = url[len(SCHEME):].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise OptionError(f"--url {url}: expected grpc://HOST:PORT")
    return rest


def _pb():
    try:
        from ..wire.proto import grpc_service_pb2 as pb
    except ImportError as exc:  # protobuf missing
        raise OptionError("--protocol grpc needs grpcio and protobuf; install them with: "
                          "pip install 'onnxdeploy[serve]'") from exc
    return pb


def encode_infer(bodies, sig: Signature, model: str, *, texts: bool) -> list[bytes]:
    """``/predict`` JSON bodies as serialized ``ModelInferRequest`` messages (raw contents)."""
    from ..wire import v2_datatype

    pb = _pb()
    out = []
    for body in bodies:
        inputs = orjson.loads(body)["inputs"]
        req = pb.ModelInferRequest(model_name=model)
        if texts:
            items = inputs["text"] if isinstance(inputs, dict) else inputs
            raw = [t.encode() for t in items]
            req.inputs.add(name="text", datatype="BYTES", shape=[len(raw)])
            req.raw_input_contents.append(b"".join(len(r).to_bytes(4, "little") + r
                                                   for r in raw))
        else:
            named = inputs if isinstance(inputs, dict) else {sig.inputs[0].name: inputs}
            for spec in sig.inputs:
                arr = np.asarray(named[spec.name], dtype=spec.dtype)
                req.inputs.add(name=spec.name, datatype=v2_datatype(arr.dtype), shape=arr.shape)
                req.raw_input_contents.append(arr.astype(arr.dtype.newbyteorder("<"),
                                                         copy=False).tobytes())
        out.append(req.SerializeToString())
    return out


def served_model(target: str, name: str | None) -> tuple[str, dict]:
    """The served model's name and its v2 metadata (as the REST JSON has it), over gRPC."""
    import grpc

    pb = _pb()
    with grpc.insecure_channel(target) as channel:
        meta_call = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata",
                                        request_serializer=pb.ModelMetadataRequest.SerializeToString,
                                        response_deserializer=pb.ModelMetadataResponse.FromString)
        try:
            channel.unary_unary(LIVE)(pb.ServerLiveRequest().SerializeToString(), timeout=5)
            if name is None:  # the protocol lists no models: ask for none, read the name offered
                try:
                    meta_call(pb.ModelMetadataRequest(name=""), timeout=5)
                except grpc.RpcError as exc:
                    import re

                    found = re.search(r"this server serves '([^']+)'", exc.details() or "")
                    if found is None:
                        raise ServerError(f"grpc://{target}: cannot tell which model it serves "
                                          "; give --name") from None
                    name = found.group(1)
            meta = meta_call(pb.ModelMetadataRequest(name=name), timeout=5)
        except grpc.RpcError as exc:
            raise ServerError(f"grpc://{target}: {exc.code().name}: {exc.details()}") from None
    tensors = {key: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                     for t in getattr(meta, key)] for key in ("inputs", "outputs")}
    return meta.name, {"name": meta.name, **tensors}


async def _closed(target: str, requests: list[bytes], concurrency: int, total: int | None,
                  duration_s: float | None, timeout_s: float, path: str):
    import grpc

    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(min(concurrency, MAX_CHANNELS))]
    calls = [ch.unary_unary(path) for ch in channels]
    for ch in channels:
        await ch.channel_ready()
    lat: list[int] = []
    errors: dict[str, int] = {}
    first: list[str] = []
    issued = [0]
    t0 = time.perf_counter_ns()
    deadline = t0 + int(duration_s * 1e9) if duration_s is not None else None
    last = [t0]

    async def worker(i: int) -> None:
        call = calls[i % len(calls)]
        n = len(requests)
        while True:
            if total is not None:
                if issued[0] >= total:
                    return
            elif time.perf_counter_ns() >= deadline:
                return
            k = issued[0]
            issued[0] += 1
            start = time.perf_counter_ns()
            try:
                await call(requests[k % n], timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                kind = f"grpc_{exc.code().name.lower()}"
                errors[kind] = errors.get(kind, 0) + 1
                if not first:
                    first.append(f"{exc.code().name}: {exc.details()}"[:ERROR_TEXT_BYTES])
                continue
            now = time.perf_counter_ns()
            lat.append((now - start) // 1000)
            last[0] = now

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    cpu = time.process_time() - cpu0
    for ch in channels:
        await ch.close()
    return lat, errors, (first[0] if first else None), t0, last[0], cpu, len(channels)


def run_grpc_load(target: str, requests: list[bytes], *, concurrency: int,
                  total: int | None = None, duration_s: float | None = None,
                  rate: float | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                  path: str = INFER) -> LoadResult:
    """One closed-loop run of serialized requests against ``HOST:PORT``."""
    if rate is not None:
        raise OptionError("--rate and --slo over gRPC are not supported yet; use --concurrency "
                          "(closed loop), or --protocol http")
    if (total is None) == (duration_s is None):
        raise OptionError("give exactly one of a request count or a duration")
    loop = asyncio.new_event_loop()
    try:
        lat, errors, first, t0, end, cpu, channels = loop.run_until_complete(
            _closed(target, requests, concurrency, total, duration_s, timeout_s, path))
    finally:
        loop.close()
    return LoadResult(latencies_us=np.asarray(lat, dtype=np.int64), errors=errors,
                      elapsed_s=max(1e-9, (end - t0) / 1e9), cpu_s=cpu, connections=channels,
                      mode="closed", first_error=first)
