"""The served model: facts read from the file at once, the ORT session created per process.

A model that carries a tokenizer also gets its ``TextEncoder`` here, built in the same place as
the session (once per process), so every route tokenizes with one object.

The session is created lazily and remembers the pid that created it. An ORT session created
before a fork silently loses its thread pool (or hangs with ORT_PARALLEL), so a session
inherited across ``fork`` is never reused: the process builds its own. The granian front calls
``load()`` in each worker (``Front.__rsgi_init__``) so it is warm before it serves.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import modelfile
from ..data import load_data
from ..errors import DataError, MissingDependencyError, OptionError
from ..tokenizer import DEFAULT_MAX_CHARS
from .text import TextInfo, text_info

log = logging.getLogger("onnxdeploy.serve")


@dataclass(frozen=True)
class ModelInfo:
    """What the service knows about the model without running it."""

    name: str
    path: Path
    signature: modelfile.Signature
    classifier: modelfile.ClassifierInfo | None
    opset: int
    text: TextInfo | None = None  # set when the model carries a tokenizer
    #: the runtime the session runs on and the precision asked of it: ``--runtime``, else the
    #: file's ``onnxdeploy.runtime`` / ``onnxdeploy.precision``, else ONNX Runtime as written
    runtime: str = "onnxruntime"
    precision: str | None = None

    @property
    def output_names(self) -> list[str]:
        """Output names in graph order."""
        return [o.name for o in self.signature.outputs]


def read_model_info(path: str | os.PathLike, name: str | None = None, *,
                    runtime: str | None = None) -> ModelInfo:
    """Parse the file (never executing anything in it) and collect signature and metadata.

    ``runtime`` (``--runtime``) overrides the file's ``onnxdeploy.runtime``; the file's precision
    applies only on the runtime it was written for.
    """
    model = modelfile.load_model(path, load_external_data=False)
    sig = modelfile.signature(model)
    meta = modelfile.metadata(model)
    written = meta.get(modelfile.META_RUNTIME) or "onnxruntime"
    chosen = runtime or written
    if chosen not in RUNTIMES:
        raise OptionError(f"runtime {chosen!r}{'' if runtime else f' (in {Path(path).name} metadata)'}: "
                          f"expected one of {', '.join(RUNTIMES)}")
    return ModelInfo(
        name=name or Path(path).stem,
        path=Path(path),
        signature=sig,
        classifier=modelfile.classifier_info(model),
        opset=modelfile.opset_version(model),
        text=text_info(meta, [s.name for s in sig.inputs]),
        runtime=chosen,
        precision=meta.get(modelfile.META_PRECISION) if chosen == written else None,
    )


#: what ``serve --runtime`` takes (``runtimes.RUNTIMES``, named here so the parent process never
#: imports the runtimes package)
RUNTIMES = ("onnxruntime", "openvino")


class SessionHolder:
    """One ORT session per process, created on first use (or by ``load``) and warmed up once."""

    def __init__(self, info: ModelInfo, *, ort_threads: int, max_chars: int = DEFAULT_MAX_CHARS):
        self.info = info
        self.ort_threads = ort_threads
        self.max_chars = max_chars
        self._lock = threading.Lock()
        self._session = None
        self._encoder = None
        self._pid: int | None = None
        self.warmup_seconds: float | None = None

    @property
    def ready(self) -> bool:
        """True once this process has created and warmed up its own session."""
        return self._session is not None and self._pid == os.getpid()

    def load(self):
        """Create and warm up this process's session (idempotent, thread-safe)."""
        if self.ready:
            return self._session
        with self._lock:
            if self.ready:
                return self._session
            from ..runtimes import make_session

            self._encoder = self._make_encoder()
            # One session per process here, so ORT's spinning pool threads steal from nobody;
            # measured on one worker with 2 ORT threads under a 128-connection burst, spinning
            # off cut the share of fast 503s from ~40% to ~10% and doubled health latency.
            session = make_session(self.info.path, threads=self.ort_threads, spinning=True,
                                   runtime=self.info.runtime, precision=self.info.precision)
            t0 = time.perf_counter()
            self._warm_up(session)
            self.warmup_seconds = time.perf_counter() - t0
            self._session, self._pid = session, os.getpid()
            log.info("worker %d: session ready for %s (%s, %d threads%s, warm-up %.1f ms)",
                     os.getpid(), self.info.path.name, self.info.runtime, self.ort_threads,
                     f", precision {session.precision}" if hasattr(session, "precision") else "",
                     self.warmup_seconds * 1e3)
            return session

    def encoder(self):
        """This process's TextEncoder (None for a model without a tokenizer, or no library)."""
        self.load()
        return self._encoder

    def _make_encoder(self):
        if self.info.text is None:
            return None
        from ..tokenizer import TextEncoder

        try:
            return TextEncoder.from_model(self.info.text.metadata, max_chars=self.max_chars)
        except MissingDependencyError as exc:  # token ids still serve; texts get a 501
            log.warning("the model carries a tokenizer but %s; texts will be refused", exc)
            return None

    def _warm_up(self, session) -> None:
        # First runs allocate arenas and pick kernels; do that before reporting ready.
        try:
            if self._encoder is not None:  # random ids could fall outside the vocabulary
                feeds = self._encoder.encode(["warm up the model", "and its tokenizer"])
            else:
                feeds = load_data("random", self.info.signature, count=1).inputs
            for _ in range(2):
                session.run(None, feeds)
        except Exception as exc:  # a model needing particular dims still serves
            log.warning("warm-up inference failed (%s); serving without warm-up", exc)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """All outputs in graph order; ORT refusing valid-looking input becomes DataError."""
        session = self.load()
        if self.info.runtime == "openvino":
            try:
                return session.run(None, feeds)
            except (RuntimeError, ValueError) as exc:  # ValueError: our own dtype/shape checks
                log.warning("openvino refused a request: %s", str(exc).strip())
                raise DataError(f"the model rejected the input: {client_message(str(exc))}") from exc
        import onnxruntime as ort

        state = ort.capi.onnxruntime_pybind11_state
        try:
            return session.run(None, feeds)
        except (state.InvalidArgument, state.Fail, state.RuntimeException) as exc:
            # ORT's text names source files and C++ functions: the full text goes to the log,
            # the client gets what it can act on.
            log.warning("onnxruntime refused a request: %s", str(exc).strip())
            raise DataError(f"the model rejected the input: {client_message(str(exc))}") from exc


_PREFIX = re.compile(r"^\s*\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_DIMS = re.compile(r"Got invalid dimensions for input: (\S+) for the following indices\s+"
                   r"index: (\d+) Got: (\d+) Expected: (\d+)")
_RANK = re.compile(r"Invalid rank for input: (\S+) Got: (\d+) Expected: (\d+)")
_DTYPE = re.compile(r"Unexpected input data type\. Actual: \(tensor\((\w+)\)\)\s*,\s*"
                    r"expected: \(tensor\((\w+)\)\)")
_NODE = re.compile(r"Non-zero status code returned while running (\w+) node\. Name:'(.*?)' "
                   r"Status Message: (.*)", re.S)
_SOURCE = re.compile(r"\S*[/\\]\S+\.(?:cc|cpp|h|hpp|cu)(?::\d+)?")
_CPP = re.compile(r"\S*::\S*(?:\([^)]*\))?")


def client_message(text: str) -> str:
    """ORT's error text reduced to what a client can act on: the input, expected vs got.

    No source paths, C++ names or node internals: a sentence about the input, or about the
    operator that failed on it.
    """
    text = _PREFIX.sub("", text.strip())
    if m := _DIMS.search(text):
        name, axis, got, want = m.groups()
        return f"input '{name}': axis {axis} is {got}; expected {want}"
    if m := _RANK.search(text):
        name, got, want = m.groups()
        return f"input '{name}' has rank {got}; expected rank {want}"
    if m := _DTYPE.search(text):
        got, want = m.groups()
        return f"an input has dtype {got}; expected {want}"
    op = None
    if m := _NODE.search(text):
        op, text = m.group(1), m.group(3)
    text = " ".join(text.split())
    cleaned = _CPP.sub("", _SOURCE.sub("", text)).strip(" .,:;")
    cleaned = " ".join(cleaned.split())
    if "was false." in cleaned:  # an ORT_ENFORCE: the condition is internal, the rest may help
        cleaned = cleaned.split("was false.", 1)[1].strip()
    if not cleaned or "was false" in cleaned or len(cleaned) > 200:
        cleaned = "the input's values or shapes do not fit the model"
    where = f" (in a {op} node)" if op else ""
    return f"{cleaned}{where}"
