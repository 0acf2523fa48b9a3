"""Bench targets: a name, a URL, the model's signature, and the requests built for it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import DataSet, load_data
from ..errors import DataError, ServerError
from ..modelfile import Signature, TensorSpec, load_model, metadata, signature, with_batch_axes
from .bodies import RequestSet, build_requests
from .httpclient import get_json, request, split_url

_V2_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


@dataclass
class Target:
    """One thing under load."""

    name: str
    url: str
    model: str | None
    sig: Signature | None = None
    data: DataSet | None = None
    requests: RequestSet | None = field(default=None, repr=False)

    @property
    def host_port(self) -> tuple[str, int]:
        return split_url(self.url)

    def to_dict(self) -> dict:
        return {"name": self.name, "url": self.url, "model": self.model}


def default_names(models: list[str]) -> list[str]:
    """Names from file names (``a.int8.onnx`` -> ``a.int8``), made unique with A/B suffixes."""
    stems = [Path(m).name.removesuffix(".onnx") or "model" for m in models]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{stem}-{chr(ord('A') + i)}" for i, stem in enumerate(stems)]


def file_signature(path: str | os.PathLike) -> Signature:
    """The signature of a model file (ModelLoadError if it is not one)."""
    return signature(load_model(path, load_external_data=False))


def signature_from_metadata(meta: dict) -> Signature:
    """A Signature from Open Inference Protocol model metadata (-1 marks a variable dimension)."""

    def spec(t: dict) -> TensorSpec:
        dtype = _V2_DTYPES.get(str(t.get("datatype", "")).upper())
        # -1 is the protocol's "variable"; '?' says the same (dynamic, unnamed) in a form every
        # consumer of a Signature reads as dynamic today (data.py's random data took -1 as a size)
        shape = tuple("?" if int(d) < 0 else int(d) for d in t.get("shape", []))
        return TensorSpec(t["name"], None if dtype is None else np.dtype(dtype), shape)

    try:
        return with_batch_axes([spec(t) for t in meta["inputs"]],
                               [spec(t) for t in meta.get("outputs", [])])
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(f"model metadata without a usable 'inputs' list ({exc})") from exc


def url_signature(url: str, name: str | None) -> tuple[str, Signature]:
    """Find the served model's name and signature from ``/v2/models/{name}`` (or ``GET /v2``)."""
    candidates = [name] if name else []
    if not candidates:
        server = get_json(url, "/v2")
        listed = server.get("models") or []
        candidates = [m if isinstance(m, str) else m.get("name") for m in listed]
        if not candidates and isinstance(server.get("model"), str):
            candidates = [server["model"]]
        if not candidates:
            candidates = _name_from_404(url)
    for cand in candidates:
        try:
            meta = get_json(url, f"/v2/models/{cand}")
        except ServerError:
            continue
        return cand, signature_from_metadata(meta)
    raise DataError(
        f"{url}: cannot find the served model's metadata at /v2/models/NAME; "
        "give the served model's name with --name"
    )


def _name_from_404(url: str) -> list[str]:
    """onnxdeploy serve names its model in the 404 for an unknown one; other servers may not."""
    try:
        status, body = request(url, "GET", "/v2/models/__onnxdeploy_probe__", timeout=10)
    except OSError:
        return []
    match = re.search(r"serves '([^']+)'", body.decode(errors="replace")) if status == 404 else None
    return [match.group(1)] if match else []


def prepare(target: Target, data_source: str | None, dims: dict[str, int]) -> None:
    """Load the data for the target's signature and encode its requests once."""
    meta = None
    if target.model:  # a text data file needs the tokenizer the model carries
        meta = metadata(load_model(target.model, load_external_data=False))
    try:
        target.data = load_data(data_source, target.sig, dims=dims, meta=meta)
    except DataError as exc:
        raise DataError(f"{target.name}: {exc}") from exc
    target.requests = build_requests(target.sig, target.data)
