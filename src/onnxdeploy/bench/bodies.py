"""Request bodies built once from ``--data`` (one sample a request), and their raw HTTP/1.1 bytes.

Two kinds: ``tokens`` (tensors, one row along each input's batch axis) and ``texts`` (for a model
that carries a tokenizer and a .txt/.jsonl data file: ``{"inputs": ["a text"]}``, tokenized by
the server, as a client of a text endpoint sends them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..data import DataSet
from ..modelfile import Signature

PREDICT_PATH = "/predict"
TOKENS = "tokens"
TEXTS = "texts"
#: what ``--send`` takes: texts for a text model with text data (auto), or forced either way
SEND_MODES = ("auto", TEXTS, TOKENS)
#: at most this many distinct bodies are kept; the engines cycle through them
MAX_BODIES = 1024


def _dumps(obj) -> bytes:
    try:
        import orjson

        return orjson.dumps(obj)
    except ImportError:  # pragma: no cover - orjson is in the bench extra
        return json.dumps(obj, separators=(",", ":")).encode()


def predict_body(sig: Signature, feeds: dict[str, np.ndarray]) -> bytes:
    """The ``/predict`` JSON for some feeds: a bare batch for one input, a dict for several.

    ``tolist`` of a 0-d array is a bare number, so a scalar input stays a scalar in the JSON.
    """
    if len(sig.inputs) == 1:
        return _dumps({"inputs": np.asarray(feeds[sig.inputs[0].name]).tolist()})
    return _dumps({"inputs": {name: np.asarray(arr).tolist() for name, arr in feeds.items()}})


def text_body(texts: list[str]) -> bytes:
    """The ``/predict`` JSON of some texts: ``{"inputs": ["a text", ...]}``."""
    return _dumps({"inputs": list(texts)})


def _sample_axis(sig: Signature, name: str, arr: np.ndarray) -> int:
    """The axis one sample is cut from: the input's batch axis when the array has it, else 0."""
    try:
        axis = sig.input(name).batch_axis
    except (KeyError, ValueError):
        axis = None
    return axis if axis is not None and 0 <= axis < arr.ndim else 0


def sample_feeds(sig: Signature, data: DataSet, index: int) -> dict[str, np.ndarray]:
    """The feeds of sample ``index``: batched inputs cut along their batch axis (kept, size 1),
    the others (0-d scalars, fixed state) passed as they are, never reshaped."""
    out = {}
    for name, arr in data.inputs.items():
        arr = np.asarray(arr)
        if name in data.batched and arr.ndim > 0:
            axis = _sample_axis(sig, name, arr)
            out[name] = np.take(arr, [index % arr.shape[axis]], axis=axis)
        else:
            out[name] = arr
    return out


def sample_count(sig: Signature, data: DataSet) -> int:
    """How many samples the data holds along the batch axes (1 when nothing is batched)."""
    for name in sorted(data.batched):
        arr = np.asarray(data.inputs[name])
        if arr.ndim > 0:
            return int(arr.shape[_sample_axis(sig, name, arr)])
    return 1


@dataclass(frozen=True)
class RequestSet:
    """Pre-encoded request bodies for one model, and the labels of the data they came from."""

    bodies: tuple[bytes, ...]
    path: str = PREDICT_PATH
    #: ``tokens`` (tensors) or ``texts`` (strings the server tokenizes)
    kind: str = TOKENS

    def __len__(self) -> int:
        return len(self.bodies)


def build_requests(sig: Signature, data: DataSet, *, limit: int = MAX_BODIES) -> RequestSet:
    """One body per sample (the first ``limit`` samples), each a batch of one row."""
    n = min(sample_count(sig, data), limit)
    bodies = tuple(predict_body(sig, sample_feeds(sig, data, i)) for i in range(n))
    return RequestSet(bodies)


def build_text_requests(texts: list[str], *, limit: int = MAX_BODIES) -> RequestSet:
    """One body per text (the first ``limit`` texts), each a batch of one text."""
    return RequestSet(tuple(text_body([t]) for t in texts[:limit]), kind=TEXTS)


def http_request(method: str, path: str, host: str, body: bytes = b"") -> bytes:
    """The raw bytes of one keep-alive HTTP/1.1 request."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
    if method in ("POST", "PUT"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode("ascii") + b"\r\n" + body


def encode_all(requests: RequestSet, host: str) -> list[bytes]:
    """Every body of a request set as complete POST requests for ``host``."""
    return [http_request("POST", requests.path, host, body) for body in requests.bodies]
