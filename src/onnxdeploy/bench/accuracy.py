"""Accuracy through the HTTP API: the whole labelled set through ``/predict``, in batches.

The bodies are the ones the load sent, batched: tensors cut from the data set, or the data
file's texts for a text model (the server tokenizes them, as it does under load).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from ..data import DataSet
from ..errors import ServerError
from ..measure.numeric import top1
from ..modelfile import Signature
from .bodies import PREDICT_PATH, predict_body, text_body
from .httpclient import request

BATCH = 64


def post_predict(url: str, body: bytes, what: str) -> dict:
    """POST one body to ``/predict`` and return its JSON; ServerError names ``what`` failed."""
    try:
        status, answer = request(url, "POST", PREDICT_PATH, body, timeout=60)
    except OSError as exc:
        raise ServerError(f"{url}{PREDICT_PATH}: connection failed during {what} ({exc})") from exc
    if status != 200:
        raise ServerError(
            f"{url}{PREDICT_PATH}: HTTP {status} during {what}: {answer[:300].decode(errors='replace')}")
    try:
        return json.loads(answer)
    except ValueError as exc:
        raise ServerError(f"{url}{PREDICT_PATH}: answer is not JSON during {what} ({answer[:80]!r})") from exc


def batched_bodies(sig: Signature, data: DataSet, texts: list[str] | None, batch: int
                   ) -> Iterator[tuple[int, int, bytes]]:
    """``(start, stop, body)`` per batch of ``data``: its texts when given (row i of ``data`` is
    ``texts[i]``), else its tensors."""
    for start, stop in data.ranges(batch):
        if texts is not None:
            yield start, stop, text_body(texts[start:stop])
        else:
            yield start, stop, predict_body(sig, data.slice(start, stop))


def _predictions(answer: dict, *, served_only: bool = False) -> np.ndarray | None:
    """The answer's classes: its ``predictions``, else (unless ``served_only``) the top-1 of a
    ``[batch, classes]`` output."""
    if "predictions" in answer:
        return np.asarray(answer["predictions"], dtype=np.int64)
    if served_only:
        return None
    outputs = {k: np.asarray(v, dtype=np.float64) for k, v in answer.get("outputs", {}).items()}
    return top1(outputs)


def api_accuracy(url: str, sig: Signature, data: DataSet, *, batch: int = BATCH,
                 texts: list[str] | None = None) -> float | None:
    """Top-1 accuracy of the served model on ``data`` (None without labels or class scores).

    For a classifier only: the caller decides that (an embedding has no top-1). With texts the
    server must say it is a classifier (``predictions`` in its answer): a running server's model
    could be an embedder whose vectors have no top-1.
    """
    if data.labels is None:
        return None
    correct = total = 0
    for start, stop, body in batched_bodies(sig, data, texts, batch):
        labels = data.labels[start:stop]
        pred = _predictions(post_predict(url, body, "the accuracy pass"), served_only=texts is not None)
        if pred is None or len(pred) != len(labels):
            return None
        correct += int(np.sum(pred == labels))
        total += len(labels)
    return correct / total if total else None
