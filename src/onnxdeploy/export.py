"""Step 1: a PyTorch model to ONNX with a dynamic batch axis, checked against PyTorch.

``export_model`` resolves the model (a built-in name, ``path/to/file.py:fn`` or
``package.module:fn``), exports it into a temporary directory, post-processes the graph, runs
``onnx.checker``, checks parity (ONNX Runtime against eager PyTorch on the same inputs at batch
sizes 1, the traced batch and one never traced), and only then writes ``out`` atomically. Bad
input raises before anything is written; a failed parity check still writes the file (kept for
inspection) and says ``passed=False`` in the report.

Exporter default: ``dynamo`` (torch's default since 2.9). Both exporters give the built-ins
parity well under 1e-4 here, and ORT's ``quantize_dynamic`` and ``quantize_static`` accept both
results; the TorchScript exporter is deprecated, while the dynamo one names symbolic dimensions
after ``torch.export.Dim`` and keeps being fixed. Its known quantizer trap (stale ``value_info``
making "Inferred shape and existing shape differ", onnxruntime#25890) is avoided by dropping
``value_info`` in post-processing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import modelfile
from .errors import ModelSourceError, OptionError, require
from .inputspec import InputSpec
from .runtimes import make_session
from .sources import LoadedModel, describe_args, load_source

DEFAULT_EXPORTER = "dynamo"
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18  # the dynamo exporter's minimum: the widest runtime compatibility it offers
MIN_DYNAMO_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
BATCH_DIM = "batch"
_CHATTY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript",
                   "torch._export", "torch.utils._sympy")


@dataclass(frozen=True)
class DynamicAxis:
    """One dynamic axis: input name, axis index, symbolic dimension name."""

    input: str
    axis: int
    name: str

    @classmethod
    def parse(cls, text: str) -> DynamicAxis:
        """Parse ``INPUT:AXIS:NAME`` as given to ``--dynamic-axis`` (e.g. ``x:2:height``)."""
        parts = text.split(":")
        if len(parts) != 3 or not parts[0] or not parts[2].isidentifier() or not parts[1].isdigit():
            raise OptionError(
                f"--dynamic-axis {text!r}: expected INPUT:AXIS:NAME with a non-negative "
                "integer AXIS and an identifier NAME, e.g. x:2:height"
            )
        return cls(parts[0], int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.input}:{self.axis}:{self.name}"


@dataclass
class ExportOptions:
    """Options of ``onnxdeploy export``."""

    checkpoint: str | Path | None = None
    #: one example shape (batch axis first) or one per forward argument; None: the model's default
    input_shape: tuple[int, ...] | list[tuple[int, ...]] | None = None
    #: extra dynamic axes (``DynamicAxis`` or ``"x:2:height"``); axis 0 of every input always is
    dynamic_axes: list[DynamicAxis | str] = field(default_factory=list)
    opset: int = DEFAULT_OPSET
    exporter: str = DEFAULT_EXPORTER
    tolerance: float = DEFAULT_TOLERANCE
    cache_dir: str | Path | None = None
    seed: int = 0
    progress: bool = False  # a training progress bar (stderr) when a built-in is not cached
    #: a factory's forward arguments (``InputSpec`` or ``"input_ids:batch,seq:int64"``)
    input_specs: list[InputSpec | str] = field(default_factory=list)
    #: an ``.npz`` of example forward arguments (batch axis first), instead of shapes or specs
    example_inputs: str | Path | None = None
    #: ``[NAME=]LOW:HIGH`` bounds for integer parity inputs
    int_ranges: list[str] = field(default_factory=list)
    #: Hugging Face directories: feature-extraction, sentence-embedding or text-classification
    task: str | None = None


@dataclass
class Parity:
    """ONNX Runtime against eager PyTorch on the same inputs."""

    max_abs_diff: float
    batch_sizes: list[int]
    passed: bool
    tolerance: float
    per_batch: dict[str, float]
    data: str
    #: text models: the tokenizer carried in the file gives the same ids as the directory's
    tokenizer_agrees: bool | None = None


@dataclass
class ExportReport:
    """Report of ``onnxdeploy export``."""

    onnx_path: str
    model: str
    kind: str
    exporter: str
    opset: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    dynamic_axes: list[str]
    size_bytes: int
    parity: Parity
    checkpoint: str | None
    accuracy: dict[str, float] | None
    training: dict[str, Any] | None
    metadata: dict[str, str]
    seconds: dict[str, float]
    #: Hugging Face exports: task, pooling, normalization, max length, input names
    text: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the contract's keys."""
        return asdict(self)


# --------------------------------------------------------------------------- entry point


def export_model(model_ref: str, out: str | Path, options: ExportOptions | None = None) -> ExportReport:
    """Export ``model_ref`` to ``out`` and check it against PyTorch; see the module docstring."""
    opts = options or ExportOptions()
    _check_options(opts)
    if Path(out).is_dir():
        raise OptionError(f"-o {out}: is a directory; expected a path for the .onnx file")
    t0 = time.perf_counter()
    src = load_source(model_ref, checkpoint=opts.checkpoint, input_shape=opts.input_shape,
                      input_specs=opts.input_specs, example_inputs=opts.example_inputs,
                      int_ranges=opts.int_ranges, task=opts.task, cache_dir=opts.cache_dir,
                      seed=opts.seed, progress=opts.progress)
    axes = _dynamic_axes(src, opts.dynamic_axes)
    t1 = time.perf_counter()
    example = src.export_example(seed=opts.seed)
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        _export(src, example, axes, raw, opts)
        model = modelfile.load_model(raw)
        _postprocess(model, src, axes)
        modelfile.check_model(model, name=Path(out).name)
        # parity runs on the post-processed model as it will be saved, before ``out`` exists, so a
        # model ORT cannot load leaves nothing behind
        staged = modelfile.save_model(model, Path(tmp) / "final.onnx")
        t2 = time.perf_counter()
        parity = _parity(src, staged, opts)
        accuracy = _onnx_accuracy(src, staged)
        t3 = time.perf_counter()
        path = modelfile.save_model(model, out)
    sig = modelfile.signature(model)
    return ExportReport(
        onnx_path=str(path),
        model=model_ref,
        kind=src.kind,
        exporter=opts.exporter,
        opset=modelfile.opset_version(model),
        inputs=[s.to_dict() for s in sig.inputs],
        outputs=[s.to_dict() for s in sig.outputs],
        dynamic_axes=[str(a) for a in axes],
        size_bytes=modelfile.model_size(path),
        parity=parity,
        checkpoint=None if opts.checkpoint is None else str(opts.checkpoint),
        accuracy=accuracy,
        training=None if src.train_info is None else src.train_info.to_dict(),
        metadata=_report_metadata(model),
        seconds={"load": round(t1 - t0, 3), "export": round(t2 - t1, 3),
                 "parity": round(t3 - t2, 3), "total": round(time.perf_counter() - t0, 3)},
        text=src.info.get("text"),
    )


def _report_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """Our metadata for the report; the carried tokenizer.json is summarized, not repeated."""
    from .tokenizer import META_TOKENIZER

    meta = {k: v for k, v in modelfile.metadata(model).items() if k.startswith("onnxdeploy.")}
    if META_TOKENIZER in meta:
        meta[META_TOKENIZER] = f"tokenizer.json, {len(meta[META_TOKENIZER]):,} characters"
    return meta


def _check_options(opts: ExportOptions) -> None:
    if opts.exporter not in EXPORTERS:
        raise OptionError(f"--exporter {opts.exporter!r}: expected one of {', '.join(EXPORTERS)}")
    if opts.exporter == "dynamo" and opts.opset < MIN_DYNAMO_OPSET:
        raise OptionError(
            f"--opset {opts.opset}: the dynamo exporter needs opset >= {MIN_DYNAMO_OPSET}; "
            "use --exporter torchscript for older opsets"
        )
    if not opts.tolerance > 0:  # also rejects NaN
        raise OptionError(f"--tolerance {opts.tolerance}: expected a positive number")


def _dynamic_axes(src: LoadedModel, extra: list[DynamicAxis | str]) -> list[DynamicAxis]:
    axes = {(spec.name, i): DynamicAxis(spec.name, i, d)
            for spec in src.specs for i, d in enumerate(spec.dims) if isinstance(d, str)}
    for item in extra:
        ax = item if isinstance(item, DynamicAxis) else DynamicAxis.parse(item)
        if ax.input not in src.input_names:
            raise OptionError(
                f"--dynamic-axis {ax}: the model has no input {ax.input!r}; "
                f"its inputs are {', '.join(src.input_names)}"
            )
        rank = len(src.shapes[src.input_names.index(ax.input)])
        if ax.axis >= rank:
            raise OptionError(f"--dynamic-axis {ax}: input {ax.input!r} has {rank} axes (0..{rank - 1})")
        axes[(ax.input, ax.axis)] = ax
    return list(axes.values())


# --------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet():
    """Silence exporter chatter (progress prints, warnings, registry logs) so the CLI stays clean."""
    loggers = [logging.getLogger(n) for n in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export(src: LoadedModel, example: tuple, axes: list[DynamicAxis], path: Path,
            opts: ExportOptions) -> None:
    torch = require("torch", "torch")
    by_input: dict[str, dict[int, str]] = {name: {} for name in src.input_names}
    for ax in axes:
        by_input[ax.input][ax.axis] = ax.name
    try:
        with _quiet(), torch.no_grad():
            if opts.exporter == "dynamo":
                require("onnxscript", "torch")
                dims = {ax.name: torch.export.Dim(ax.name, max=src.dim_max.get(ax.name))
                        for ax in axes}
                shapes = tuple({i: dims[n] for i, n in by_input[name].items()} for name in src.input_names)
                program = torch.onnx.export(
                    src.module, example, dynamo=True, dynamic_shapes=shapes,
                    input_names=src.input_names, output_names=src.output_names,
                    opset_version=opts.opset, verbose=False, optimize=True,
                )
                program.save(str(path))
            else:
                dynamic = dict(by_input)
                batch = next(iter(sorted(src.batch_dims)), BATCH_DIM)
                for name in src.output_names:
                    dynamic[name] = src.output_axes.get(name, {0: batch})
                torch.onnx.export(
                    src.module, example, str(path), dynamo=False, input_names=src.input_names,
                    output_names=src.output_names, dynamic_axes=dynamic, opset_version=opts.opset,
                )
    except Exception as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ModelSourceError(
            f"{src.ref}: torch.onnx.export ({opts.exporter}) failed: {first.strip()[:300]}"
            + ("; try --exporter torchscript" if opts.exporter == "dynamo" else "")
        ) from exc


def _postprocess(model: onnx.ModelProto, src: LoadedModel, axes: list[DynamicAxis]) -> None:
    """Make the export ours: verified dynamic axes, no stale shapes, our metadata."""
    inputs = {v.name: v for v in model.graph.input}
    for ax in axes:
        value = inputs.get(ax.input)
        dims = value.type.tensor_type.shape.dim if value is not None else []
        if ax.axis < len(dims) and dims[ax.axis].HasField("dim_param"):
            continue
        fixed = dims[ax.axis].dim_value if ax.axis < len(dims) else "?"
        what = "a dynamic batch axis" if ax.axis == 0 else f"--dynamic-axis {ax}"
        raise OptionError(
            f"{src.ref}: the model fixes axis {ax.axis} of input {ax.input!r} to {fixed}, so it "
            f"cannot have {what} (the exporter specialized it)"
        )
    # Stale value_info from the dynamo exporter makes ORT's quantizer fail with "Inferred shape
    # and existing shape differ" (onnxruntime#25890); ORT and the checker re-infer shapes anyway.
    del model.graph.value_info[:]
    # The dynamo exporter's per-value torch provenance is noise in a deployed model.
    for value in (*model.graph.input, *model.graph.output):
        del value.metadata_props[:]
    model.producer_name = "onnxdeploy"
    model.doc_string = f"exported from {src.ref}"
    modelfile.set_metadata(model, src.metadata())


# --------------------------------------------------------------------------- parity


def _parity(src: LoadedModel, path: Path, opts: ExportOptions) -> Parity:
    torch = require("torch", "torch")
    session = make_session(path)
    onnx_names = [i.name for i in session.get_inputs()]
    per_batch: dict[str, float] = {}
    rounds = src.parity_rounds(seed=opts.seed)
    for rnd in rounds:
        try:
            with torch.no_grad():
                expected = _flatten_outputs(src.module(*rnd.args))
        except Exception as exc:
            got = ", ".join(f"{n} {str(t.dtype).removeprefix('torch.')} {list(t.shape)}"
                            for n, t in zip(src.input_names, rnd.args))
            raise ModelSourceError(
                f"{src.ref}: forward raised {type(exc).__name__}: {_first_line(exc)} on parity "
                f"inputs {got} (declared: {describe_args(src.specs)}); bound integer inputs "
                "with --int-range NAME=LOW:HIGH"
            ) from exc
        # by name when the graph kept ours (an unused argument may have been dropped), else in order
        names = src.input_names if set(onnx_names) <= set(src.input_names) else onnx_names
        feeds = {n: t.numpy() for n, t in zip(names, rnd.args) if n in onnx_names}
        got = session.run(None, feeds)
        per_batch[rnd.label] = _max_abs_diff(expected, got)
    worst = max(per_batch.values())
    agrees = src.info.get("tokenizer_agrees")
    return Parity(
        max_abs_diff=worst,
        batch_sizes=[r.batch for r in rounds],
        passed=bool(worst <= opts.tolerance) and agrees is not False,
        tolerance=opts.tolerance,
        per_batch=per_batch,
        data=src.data_name,
        tokenizer_agrees=agrees,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)[:300]


def _flatten_outputs(result) -> list[np.ndarray]:
    items = result if isinstance(result, (tuple, list)) else [result]
    return [t.detach().cpu().numpy() for t in items]


def _max_abs_diff(expected: list[np.ndarray], got: list[np.ndarray]) -> float:
    if len(expected) != len(got):
        return float("inf")
    worst = 0.0
    for a, b in zip(expected, got):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        if a.size == 0:
            continue
        diff = np.abs(a - b)
        # NaN where only one side is NaN counts as an infinite difference; NaN on both as equal
        both_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(both_nan, 0.0, np.nan_to_num(diff, nan=np.inf))
        worst = max(worst, float(diff.max()))
    return worst


def _onnx_accuracy(src: LoadedModel, path: Path) -> dict[str, float] | None:
    """For built-ins: test accuracy of the trained network and of the exported file."""
    if src.train_info is None:
        return None
    from .data import load_data
    from .measure.numeric import top1_accuracy
    from .runtimes import run_dataset

    data = load_data("digits", modelfile.signature(modelfile.load_model(path)))
    onnx_acc = top1_accuracy(run_dataset(make_session(path), data), data.labels)
    return {"torch": src.train_info.accuracy, "onnx": onnx_acc}
