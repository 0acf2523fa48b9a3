"""Accuracy through the HTTP API: the whole labelled set through ``/predict``, in batches."""

from __future__ import annotations

import json

import numpy as np

from ..compare import top1
from ..data import DataSet
from ..errors import ServerError
from ..modelfile import Signature
from .bodies import PREDICT_PATH, predict_body
from .httpclient import request

BATCH = 64


def _predictions(answer: dict) -> np.ndarray | None:
    if "predictions" in answer:
        return np.asarray(answer["predictions"], dtype=np.int64)
    outputs = {k: np.asarray(v, dtype=np.float64) for k, v in answer.get("outputs", {}).items()}
    return top1(outputs)


def api_accuracy(url: str, sig: Signature, data: DataSet, *, batch: int = BATCH) -> float | None:
    """Top-1 accuracy of the served model on ``data`` (None without labels or class scores)."""
    if data.labels is None:
        return None
    correct = total = 0
    for feeds, labels in data.batches(batch):
        try:
            status, body = request(url, "POST", PREDICT_PATH, predict_body(sig, feeds), timeout=60)
        except OSError as exc:
            raise ServerError(f"{url}{PREDICT_PATH}: connection failed during the accuracy pass ({exc})") from exc
        if status != 200:
            raise ServerError(
                f"{url}{PREDICT_PATH}: HTTP {status} during the accuracy pass: {body[:300].decode(errors='replace')}"
            )
        pred = _predictions(json.loads(body))
        if pred is None or len(pred) != len(labels):
            return None
        correct += int(np.sum(pred == labels))
        total += len(labels)
    return correct / total if total else None
