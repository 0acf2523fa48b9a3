"""Quality through the HTTP API, judged by what the model outputs.

- a classifier (labels in the data): accuracy from the served ``predictions`` (``accuracy.py``);
- an embedding model (task ``feature-extraction`` / ``sentence-embedding``): the cosine of each
  served embedding to the float model's in-process embedding of the same input, min and mean over
  the set, and nearest-neighbour agreement within the set. Never a top-1: an embedding has no
  classes.

The in-process side is the baseline's ``measure.Reference`` (its session and output kinds); for
texts it tokenizes each batch exactly as the server does for one request (padded to the batch's
longest text), so a float model served and run in process agree to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import DataSet
from ..errors import ServerError
from ..measure.numeric import DEFAULT_MIN_COSINE, nn_agreement, row_cosines
from ..measure.reference import Reference, build_reference
from ..modelfile import Signature
from ..outputkinds import EMBEDDING, EMBEDDING_TASKS, task_of
from ..runtimes import run
from .accuracy import BATCH, batched_bodies, post_predict

ACCURACY = "accuracy"
COSINE = "cosine"


def quality_kind(meta: dict | None, labelled: bool) -> str | None:
    """``cosine`` for an embedding model, ``accuracy`` for labelled data otherwise, else None."""
    task = task_of(meta or {})
    if task in EMBEDDING_TASKS:
        return COSINE
    return ACCURACY if labelled else None


@dataclass
class InProcess:
    """The baseline model run in this process, to judge served embeddings against."""

    reference: Reference
    encoder: Any = None  # TextEncoder when the requests carry texts

    @classmethod
    def build(cls, path: str, *, data: str | None, dims: dict[str, int], threads: int | None,
              texts: bool) -> InProcess:
        """The float model's Reference on the bench's data (and its tokenizer for texts)."""
        ref = build_reference(path, data=data, dims=dims, threads=threads)
        encoder = None
        if texts:
            from ..tokenizer import TextEncoder

            encoder = TextEncoder.from_model(ref.meta)
        return cls(ref, encoder)

    def outputs(self, data: DataSet, texts: list[str] | None, start: int, stop: int) -> dict[str, np.ndarray]:
        """The in-process outputs for rows ``start:stop``, fed as the server was fed."""
        if texts is not None:
            feeds = self.encoder.encode(texts[start:stop])
            dtypes = {s.name: s.dtype for s in self.reference.signature.inputs}
            feeds = {k: v if dtypes.get(k) is None else v.astype(dtypes[k], copy=False) for k, v in feeds.items()}
        else:
            feeds = data.slice(start, stop)
        return run(self.reference.session, feeds)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def embedding_quality(url: str, sig: Signature, data: DataSet, texts: list[str] | None, baseline: InProcess,
                      *, reference_name: str, batch: int = BATCH,
                      min_cosine: float = DEFAULT_MIN_COSINE) -> dict[str, Any] | None:
    """Served embeddings against the baseline's in-process ones: ``{min_cosine, mean_cosine,
    nn_agreement, passed, outputs{...}}``, or None when the model has no embedding output."""
    kinds = baseline.reference.kinds
    axes = baseline.reference.output_batch_axes
    names = [n for n, k in kinds.items() if k == EMBEDDING]
    if not names:
        return None
    cosines: dict[str, list[np.ndarray]] = {n: [] for n in names}
    pooled: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {n: ([], []) for n in names}
    for start, stop, body in batched_bodies(sig, data, texts, batch):
        answer = post_predict(url, body, "the quality pass")
        expected = baseline.outputs(data, texts, start, stop)
        for name in names:
            if name not in answer.get("outputs", {}):
                raise ServerError(f"{url}: the answer has no output {name!r} (it has "
                                  f"{', '.join(answer.get('outputs', {})) or 'none'})")
            served = np.asarray(answer["outputs"][name], dtype=np.float64)
            want = np.asarray(expected[name])
            if served.shape != want.shape:
                raise ServerError(f"{url}: output {name!r} has shape {list(served.shape)} served and "
                                  f"{list(want.shape)} in process for the same inputs")
            cosines[name].append(row_cosines(want, served, axes.get(name) or 0))
            if want.ndim == 2:  # one vector a sample: neighbours within the whole set
                pooled[name][0].append(want)
                pooled[name][1].append(served)
    outputs: dict[str, dict[str, Any]] = {}
    for name in names:
        per = _finite(np.concatenate(cosines[name])) if cosines[name] else np.array([])
        ref_rows, got_rows = pooled[name]
        outputs[name] = {
            "min_cosine": float(per.min()) if per.size else None,
            "mean_cosine": float(per.mean()) if per.size else None,
            "nn_agreement": nn_agreement(np.concatenate(ref_rows), np.concatenate(got_rows)) if ref_rows else None,
            "samples": int(per.size),
        }
    judged = [n for n in names if outputs[n]["min_cosine"] is not None]
    worst = min(judged, key=lambda n: outputs[n]["min_cosine"]) if judged else names[0]
    head = outputs[worst]
    nn = [o["nn_agreement"] for o in outputs.values() if o["nn_agreement"] is not None]
    return {
        "kind": COSINE, "reference": reference_name, "output": worst, "samples": head["samples"],
        "min_cosine": head["min_cosine"], "mean_cosine": head["mean_cosine"],
        "nn_agreement": min(nn) if nn else None, "min_cosine_bound": min_cosine,
        "passed": None if head["min_cosine"] is None else head["min_cosine"] >= min_cosine,
        "outputs": outputs,
    }
