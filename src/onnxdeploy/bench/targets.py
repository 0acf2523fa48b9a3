"""Bench targets: a name, a URL, the model's signature, and the requests built for it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import DataSet, load_data
from ..data.text import is_text_source, read_texts
from ..errors import DataError, OptionError, ServerError
from ..modelfile import Signature, TensorSpec, load_model, metadata, signature, with_batch_axes
from ..tokenizer import has_tokenizer
from .bodies import TEXTS, TOKENS, RequestSet, build_requests, build_text_requests
from .httpclient import get_json, request, split_url

#: the input a server that tokenizes lists for a text model in v2 metadata (BYTES, shape [-1])
TEXT_INPUT = "text"

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
    #: the model file's metadata_props (None for --url targets)
    meta: dict | None = field(default=None, repr=False)
    #: the data file's texts when the requests carry texts
    texts: list[str] | None = field(default=None, repr=False)
    #: HOST:PORT of the server's gRPC service when load goes over gRPC (``--protocol grpc``)
    grpc: str | None = None
    #: the model's name on the server (``--url grpc://``: read from it), when not ``name``
    served: str | None = None

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
        # consumer of a Signature reads as dynamic today (data/load.py's random data took -1 as a size)
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


def serves_text(sig: Signature | None) -> bool:
    """True when a served model's v2 metadata lists the BYTES ``text`` input (the server tokenizes)."""
    return sig is not None and any(s.name == TEXT_INPUT and s.dtype is None for s in sig.inputs)


def send_mode(send: str, data_source: str | None, meta: dict | None, *, served_text: bool = False) -> str:
    """``texts`` or ``tokens``: what the requests carry for this model and data (``auto`` decides).

    Texts need a text data file (.txt/.jsonl) and a model that takes them: a model file that
    carries a tokenizer, or (``--url``) a server whose metadata lists the ``text`` input. Auto picks
    them whenever both hold, since that is what a client of a text endpoint sends.
    """
    text_file = data_source is not None and is_text_source(data_source)
    texts_possible = text_file and ((bool(meta) and has_tokenizer(meta)) or served_text)
    if send == "auto":
        return TEXTS if texts_possible else TOKENS
    if send == TEXTS and not texts_possible:
        why = ("a model file that carries a tokenizer, or a server whose model takes texts (v2 input "
               "'text', BYTES)" if text_file else f"--data a .txt/.jsonl text file (got {data_source or 'none'})")
        raise OptionError(f"--send texts needs {why}; use --send tokens to send tensors")
    if send not in (TEXTS, TOKENS):
        raise OptionError(f"--send {send}: expected one of auto, texts, tokens")
    return send


def _served_labels(path: str, raw: list | None) -> np.ndarray | None:
    """Class indices of a .jsonl for a running server (its label names are not known here)."""
    if raw is None:
        return None
    for i, label in enumerate(raw):
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"--data {path}: label {label!r} of text {i + 1}: with --url give class indices "
                            "(label names need the model file)")
    return np.asarray(raw, dtype=np.int64)


def prepare(target: Target, data_source: str | None, dims: dict[str, int], send: str = "auto") -> None:
    """Load the data for the target's signature and encode its requests once (texts or tensors)."""
    meta = None
    if target.model:  # a text data file needs the tokenizer the model carries
        meta = metadata(load_model(target.model, load_external_data=False))
    target.meta = meta
    served_text = target.model is None and serves_text(target.sig)
    mode = send_mode(send, data_source, meta, served_text=served_text)
    if served_text and mode == TEXTS:
        # a running server that tokenizes: nothing to tokenize here, the texts are the data
        target.texts, raw = read_texts(data_source)
        target.data = DataSet(f"text:{Path(data_source).name}", {TEXT_INPUT: np.asarray(target.texts, dtype=object)},
                              _served_labels(data_source, raw), frozenset({TEXT_INPUT}))
        target.requests = build_text_requests(target.texts)
        return
    try:
        target.data = load_data(data_source, target.sig, dims=dims, meta=meta)
    except DataError as exc:
        raise DataError(f"{target.name}: {exc}") from exc
    if mode == TEXTS:
        # the same texts load_data tokenized, in the same order: row i of data is texts[i]
        target.texts, _ = read_texts(data_source)
        target.requests = build_text_requests(target.texts)
    else:
        target.texts = None
        target.requests = build_requests(target.sig, target.data)
