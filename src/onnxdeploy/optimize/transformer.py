"""ONNX Runtime's transformer optimizer as one optimize step: fusions counted, its log kept.

Only the public API is used: ``onnxruntime.transformers.optimizer.optimize_model`` with
``opt_level=0`` (ORT's own session optimizations off, so the saved graph holds only the Python
fusions and stays portable across CPUs) and ``get_fused_operator_statistics()``. That API counts
the nodes of each fused op type in the *result*; a graph can hold some of them before (a dynamo
export writes ``LayerNormalization`` itself), so a fusion's count here is the increase over the
input. ORT's loggers are captured for the step instead of printing, and when Attention does not
fuse the report says so, with what ORT logged and what the graph shows.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from ..errors import OptionError, first_line
from ..modelfile import op_counts, save_model

#: ``--transformer`` values: ``auto`` reads the model's config / graph; ``bert`` is ORT's
#: optimizer for BERT-style encoders (BERT, DistilBERT, RoBERTa, MiniLM ... all use it)
TRANSFORMER_TYPES = ("auto", "bert")
STEP_PREFIX = "transformer_"
#: Hugging Face ``model_type`` values ORT's ``bert`` optimizer is meant for
ENCODER_MODEL_TYPES = frozenset({"bert", "distilbert", "roberta", "xlm-roberta", "camembert",
                                 "electra", "albert", "mpnet", "minilm"})
ATTENTION_OPS = ("Attention", "MultiHeadAttention")
#: ORT logs one line per failed pattern match in these loggers; the rest are kept from INFO up
_REASON_LOGGERS = ("fusion_attention",)
_MAX_LOG = 60
#: ORT compares the producer name with the exporter it expects; ours says "onnxdeploy"
_PRODUCER_WARNING = "Model producer not matched"


@dataclass
class TransformerSettings:
    """What the fusion step runs with, and where each value came from."""

    model_type: str
    num_heads: int
    hidden_size: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "num_heads": self.num_heads,
                "hidden_size": self.hidden_size, "source": self.source}


@dataclass
class FusionResult:
    """The fused model and what the fusion did."""

    model: onnx.ModelProto
    #: op type -> nodes the fusion created (non-zero ones, and Attention always)
    fusions: dict[str, int]
    attention_fused: bool
    note: str
    log: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _hf_config(meta: dict[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    """The Hugging Face config of the directory the model was exported from, when it is still there."""
    source = meta.get("onnxdeploy.source")
    if not source:
        return None, None
    path = Path(source) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    return (config, str(path)) if isinstance(config, dict) else (None, None)


def looks_like_encoder(ops: dict[str, int]) -> bool:
    """Softmax attention with layer normalization: the graph a BERT-style encoder exports to."""
    return ("Softmax" in ops and "MatMul" in ops
            and any(op in ops for op in ("LayerNormalization", "ReduceMean")))


def resolve(choice: str, model: onnx.ModelProto, meta: dict[str, str], *, num_heads: int = 0,
            hidden_size: int = 0, name: str = "the model") -> TransformerSettings:
    """The fusion settings for ``--transformer CHOICE``; OptionError for a value or model that cannot work."""
    if choice not in TRANSFORMER_TYPES:
        raise OptionError(f"--transformer {choice!r}: expected one of {', '.join(TRANSFORMER_TYPES)}")
    for flag, value in (("--num-heads", num_heads), ("--hidden-size", hidden_size)):
        if not isinstance(value, int) or value < 0:
            raise OptionError(f"{flag} {value!r}: expected a whole number >= 0 (0 = let ORT detect it)")
    if num_heads and hidden_size and hidden_size % num_heads:
        raise OptionError(f"--hidden-size {hidden_size} is not a multiple of --num-heads {num_heads}")
    config, config_path = _hf_config(meta)
    model_type = choice
    if choice == "auto":
        hf_type = (config or {}).get("model_type")
        if isinstance(hf_type, str) and hf_type:
            if hf_type not in ENCODER_MODEL_TYPES:
                raise OptionError(
                    f"--transformer auto: {name} is a {hf_type!r} model ({config_path}); onnxdeploy "
                    f"fuses BERT-style encoders ({', '.join(sorted(ENCODER_MODEL_TYPES))}); "
                    "give --transformer bert to try anyway")
        elif not looks_like_encoder(op_counts(model)):
            raise OptionError(
                f"--transformer auto: {name} does not look like a transformer encoder (no Softmax "
                "attention with LayerNormalization in the graph); give --transformer bert to try anyway")
        model_type = "bert"
    sources = []
    if not num_heads and config:
        num_heads = _int(config, "num_attention_heads", "n_heads")
        sources += [f"num_heads from {config_path}"] if num_heads else []
    if not hidden_size and config:
        hidden_size = _int(config, "hidden_size", "dim")
        sources += [f"hidden_size from {config_path}"] if hidden_size else []
    if not num_heads or not hidden_size:
        sources.append("ORT detects " + " and ".join(
            n for n, v in (("num_heads", num_heads), ("hidden_size", hidden_size)) if not v)
            + " from the graph")
    return TransformerSettings(model_type, num_heads, hidden_size, "; ".join(sources) or "given")


def _int(config: dict[str, Any], *keys: str) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, int, str]] = []
        #: what the tools printed (some failures are only printed, e.g. shape inference's)
        self.printed: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.INFO or record.name in _REASON_LOGGERS:
            self.lines.append((record.name, record.levelno, record.getMessage()))


@contextlib.contextmanager
def _captured_ort_log() -> Iterator[_Collect]:
    """Route the loggers of ORT's transformer tools into a list, and their prints nowhere.

    The tools import each other as top-level modules (``fusion_attention``, ``onnx_model``), so
    their loggers are found by the folder their modules live in. stdout/stderr are process-wide:
    this is for the CLI and scripts, not for a thread of a server.
    """
    import onnxruntime.transformers.optimizer as ort_optimizer

    folder = Path(ort_optimizer.__file__).parent
    names = [n for n, mod in list(sys.modules.items())
             if getattr(mod, "__file__", None) and Path(mod.__file__).parent == folder]
    handler = _Collect()
    saved = []
    for n in names:
        lg = logging.getLogger(n)
        saved.append((lg, lg.level, lg.propagate, list(lg.handlers)))
        lg.handlers = [handler]
        lg.propagate = False
        lg.setLevel(logging.DEBUG if n in _REASON_LOGGERS else logging.INFO)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield handler
    finally:
        handler.printed = [line.strip() for line in (out.getvalue() + err.getvalue()).splitlines()
                           if line.strip()]
        for lg, level, propagate, handlers in saved:
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)


def _count(ops: dict[str, int], op: str) -> int:
    return ops.get(op, 0) + ops.get(f"com.microsoft.{op}", 0)


def fusion_counts(before: dict[str, int], stats: dict[str, int]) -> dict[str, int]:
    """Nodes each fusion created: ORT's count in the result minus what the input already held.

    Only non-zero counts are kept, except Attention, which is always there (0 says it did not fuse).
    """
    out = {}
    for op, n in stats.items():
        created = int(n) - _count(before, op)
        if created > 0 or op == "Attention":
            out[op] = max(created, 0)
    out.setdefault("Attention", 0)
    return out


def attention_hint(model: onnx.ModelProto) -> str | None:
    """What the graph shows where ORT looks for attention, when it is not ``Softmax -> MatMul``.

    Every BERT attention pattern ORT matches (``fusion_attention.py``) has Softmax feeding the
    MatMul with V directly; torch's decomposed scaled_dot_product_attention puts a NaN guard
    (IsNaN, Where) between them.
    """
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    seen = set()
    for node in model.graph.node:
        if node.op_type == "Softmax":
            ops = consumers.get(node.output[0], [])
            if "MatMul" not in ops:
                seen.add("/".join(sorted(set(ops))) or "nothing")
    if not seen:
        return None
    why = (" (torch's decomposed scaled_dot_product_attention guards it against NaN rows)"
           if any("IsNaN" in ops for ops in seen) else "")
    return (f"in this graph Softmax feeds {', '.join(sorted(seen))} rather than the MatMul with V"
            f"{why}, and every BERT attention pattern ORT matches has Softmax feeding that MatMul "
            "directly")


def _attention_note(model: onnx.ModelProto, settings: TransformerSettings,
                    reasons: list[str]) -> str:
    text = "Attention did not fuse: ORT found no attention subgraph it recognizes in this export"
    if reasons:
        text += "; ORT says: " + "; ".join(list(dict.fromkeys(reasons))[:3])
    else:
        text += " (ORT logged no reason)"
    hint = attention_hint(model)
    if hint:
        text += f"; {hint}"
    if not (settings.num_heads and settings.hidden_size):
        text += "; num_heads/hidden_size were left for ORT to detect"
    return text


def fuse(model: onnx.ModelProto, settings: TransformerSettings, workdir: Path) -> FusionResult:
    """Run ORT's transformer optimizer on ``model`` (opt_level 0) and account for what it fused.

    A failure inside ORT's optimizer skips the step (the input comes back unchanged, with a
    warning): it is ORT's limit, not the user's mistake.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    before = op_counts(model)
    src = save_model(model, workdir / "fuse_in.onnx")
    with _captured_ort_log() as captured:
        try:
            optimizer = optimize_model(str(src), model_type=settings.model_type,
                                       num_heads=settings.num_heads, hidden_size=settings.hidden_size,
                                       opt_level=0, use_gpu=False)
            stats = optimizer.get_fused_operator_statistics()
            new = optimizer.model
        except Exception as exc:  # ORT's fusion code raises assorted types (AssertionError, KeyError ...)
            failure = first_line(exc, type(exc).__name__)
        else:
            failure = None
    log = ([f"{name} {logging.getLevelName(level)}: {msg}" for name, level, msg in captured.lines
            if not msg.startswith(_PRODUCER_WARNING)] + [f"printed: {line}" for line in captured.printed])
    log = log[:_MAX_LOG]
    # what ORT warned or printed is why a fusion it usually does did not happen (SkipLayerNormalization
    # needs ORT's symbolic shape inference, which only prints when it fails): the report says it
    warned = list(dict.fromkeys(
        [f"{msg} ({name})" for name, level, msg in captured.lines
         if level >= logging.WARNING and not msg.startswith(_PRODUCER_WARNING)]
        + [f"it printed {line!r}" for line in captured.printed]))
    if failure is not None:
        note = f"skipped: ORT's transformer optimizer failed ({failure})"
        return FusionResult(model, {}, False, note, log,
                            [f"{STEP_PREFIX}{settings.model_type}: ORT's transformer optimizer failed "
                             f"({failure}); the step was skipped"])
    fusions = fusion_counts(before, stats)
    fused = sum(_count(op_counts(new), op) - _count(before, op) for op in ATTENTION_OPS) > 0
    parts = [f"{n} {op}" for op, n in fusions.items() if n]
    note = ("fused " + ", ".join(parts)) if parts else "ORT fused nothing"
    warnings = []
    if warned:
        said = "ORT warned: " + "; ".join(warned[:4])
        note += f"; {said}"
        warnings.append(f"{STEP_PREFIX}{settings.model_type}: {said}")
    if not fused:
        reasons = [msg for name, _, msg in captured.lines
                   if name in _REASON_LOGGERS or ("num_heads" in msg or "hidden_size" in msg)]
        sentence = _attention_note(model, settings, reasons)
        note += f"; {sentence}"
        warnings.append(sentence)
    return FusionResult(new, fusions, fused, note, log, warnings)
