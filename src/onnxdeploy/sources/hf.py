"""Hugging Face model directories as export sources (transformers + tokenizers, offline).

``load_hf(DIR, task=...)`` reads a local directory only (``HF_HUB_OFFLINE=1``,
``local_files_only=True``): ``config.json``, weights and tokenizer files, or a
sentence-transformers directory (``modules.json`` naming a Transformer module, ``1_Pooling``
and optionally ``Normalize``). It wraps the model into a module whose positional inputs are the
tokenizer's own names (``input_ids``, ``attention_mask``, and ``token_type_ids`` only when both
the tokenizer gives them and the model takes them) and whose one output is named after the task:

==================== ===================== ==============================================
task                 output                metadata ``onnxdeploy.task``
==================== ===================== ==============================================
feature-extraction   ``last_hidden_state`` ``feature-extraction``
sentence-embedding   ``sentence_embedding`` ``sentence-embedding`` (pooling, normalization
                                           in the graph)
text-classification  ``logits``            ``classification`` (+ labels from id2label)
==================== ===================== ==============================================

The tokenizer travels in the model (``tokenizer.text_metadata``). Parity runs on real text,
tokenized by the carried tokenizer, at several (batch, length) shapes with padding and one text
truncated at the maximum length; the carried tokenizer must give the same ids as the
directory's own (``tokenizer_agrees``).
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelSourceError, OptionError, require
from ..inputspec import InputSpec
from ..modelfile import META_SOURCE, META_TASK, classifier_metadata
from ..tokenizer import FIELDS, TextEncoder, text_metadata
from .model import LoadedModel, ParityRound

TASKS = ("feature-extraction", "sentence-embedding", "text-classification")
#: the task vocabulary of metadata (DESIGN: text-classification is classification with a tokenizer)
META_TASKS = {"feature-extraction": "feature-extraction", "sentence-embedding": "sentence-embedding",
              "text-classification": "classification"}
OUTPUTS = {"feature-extraction": "last_hidden_state", "sentence-embedding": "sentence_embedding",
           "text-classification": "logits"}
META_POOLING = "onnxdeploy.pooling"
#: sentence-transformers' pooling flags, in the order it concatenates them
POOLING_FLAGS = (("cls", "pooling_mode_cls_token"), ("max", "pooling_mode_max_tokens"),
                 ("mean", "pooling_mode_mean_tokens"), ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
                 ("weightedmean", "pooling_mode_weightedmean_tokens"), ("lasttoken", "pooling_mode_lasttoken"))
DEFAULT_POOLING = ("mean",)  # sentence-transformers' default for a plain transformers directory
BATCH, SEQUENCE = "batch", "sequence"
#: files a tokenizer is built from (fast tokenizer.json, WordPiece, BPE, SentencePiece)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
#: a tokenizer's model_max_length above this is transformers' "no limit" placeholder
_NO_LIMIT = 1_000_000
PARITY_TEXTS = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog!",
    "ONNX Runtime runs exported transformer models on a CPU, in one process or behind a server.",
    "Ünïcode, numbers 12 345 and punctuation: (a, b) -> c?",
    "short",
    "A sentence embedding model turns each text into one vector; similar texts get similar vectors.",
    "Padding, truncation and attention masks must agree between the tokenizer and the graph.",
)


@dataclass
class Layout:
    """What a directory holds: where the transformer lives, its pooling and normalization."""

    model_dir: Path
    sentence_transformers: bool
    pooling: tuple[str, ...] | None  # None: no Pooling module
    normalize: bool
    max_seq_length: int | None


def is_hf_dir(ref: str) -> bool:
    """True when ``ref`` is a directory holding ``config.json`` or ``modules.json``."""
    p = Path(ref).expanduser()
    return p.is_dir() and ((p / "config.json").is_file() or (p / "modules.json").is_file())


def read_layout(root: Path) -> Layout:
    """Read ``modules.json`` (sentence-transformers) or take ``root`` as a transformers dir."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return Layout(root, False, None, False, None)
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise ModelSourceError(f"{modules_file}: expected a JSON list of modules")
    model_dir, pooling, normalize = None, None, False
    for mod in modules:
        kind = str(mod.get("type", "")) if isinstance(mod, dict) else ""
        where = root / str(mod.get("path", "")) if isinstance(mod, dict) else root
        short = kind.rpartition(".")[2]
        if short == "Transformer":
            model_dir = where
        elif short == "Pooling":
            pooling = _pooling_modes(where / "config.json")
        elif short == "Normalize":
            normalize = True
        else:
            raise ModelSourceError(
                f"{modules_file}: module {kind or mod!r} is not supported in an export "
                "(supported: Transformer, Pooling, Normalize)"
            )
    if model_dir is None:
        raise ModelSourceError(f"{modules_file}: names no sentence_transformers.models.Transformer module")
    st_config = model_dir / "sentence_bert_config.json"
    max_seq = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    return Layout(model_dir, True, pooling, normalize, int(max_seq) if max_seq else None)


def _pooling_modes(path: Path) -> tuple[str, ...]:
    config = _read_json(path)
    modes = tuple(name for name, flag in POOLING_FLAGS if config.get(flag))
    if not modes:
        raise ModelSourceError(f"{path}: no pooling mode is switched on")
    return modes


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{path}: cannot be read as JSON: {exc}") from exc


# --------------------------------------------------------------------------- the graph's module


def _pool(hidden, mask, modes: tuple[str, ...], normalize: bool):
    """sentence-transformers' pooling (right padding), concatenated in its order; L2 if asked."""
    torch = require("torch", "torch")
    m = mask.unsqueeze(-1).to(hidden.dtype)
    counts = m.sum(1).clamp(min=1e-9)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(hidden.masked_fill(m == 0, -1e9).max(1).values)
        elif mode == "mean":
            parts.append((hidden * m).sum(1) / counts)
        elif mode == "mean_sqrt_len":
            parts.append((hidden * m).sum(1) / counts.sqrt())
        elif mode == "weightedmean":
            w = torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype, device=hidden.device)
            w = w.view(1, -1, 1) * m
            parts.append((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9))
        elif mode == "lasttoken":
            last = (mask.sum(1) - 1).clamp(min=0).long()
            parts.append(hidden[torch.arange(hidden.shape[0]), last])
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return torch.nn.functional.normalize(out, p=2, dim=1) if normalize else out


def _text_module(model, task: str, modes: tuple[str, ...] | None, normalize: bool, with_types: bool):
    """The exported module: positional token inputs in, the task's one output out."""
    torch = require("torch", "torch")

    def run(input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = model(**kwargs)
        if task == "text-classification":
            return out.logits
        hidden = out.last_hidden_state
        if task == "sentence-embedding":
            return _pool(hidden, attention_mask, modes or DEFAULT_POOLING, normalize)
        return hidden

    class TextModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return run(input_ids, attention_mask)

    class TextModelWithTypes(TextModel):
        def forward(self, input_ids, attention_mask, token_type_ids):
            return run(input_ids, attention_mask, token_type_ids)

    return (TextModelWithTypes if with_types else TextModel)().eval()


# --------------------------------------------------------------------------- loading


def load_hf(ref: str, *, task: str | None = None, seed: int = 0):
    """A LoadedModel for the Hugging Face directory ``ref`` (see the module docstring)."""
    if task is not None and task not in TASKS:
        raise OptionError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    # before transformers is imported: nothing may try the network, weights come from DIR only
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    transformers = require("transformers", "hf")
    root = Path(ref).expanduser()
    layout = read_layout(root)
    config = _pretrained(transformers.AutoConfig, layout.model_dir, ref, "config")
    task = task or _default_task(layout, config)
    if task == "text-classification" and not getattr(config, "id2label", None):
        raise ModelSourceError(f"{ref}: config.json has no id2label; it is not a classifier")
    if not any((layout.model_dir / f).is_file() for f in TOKENIZER_FILES):
        # transformers 5 quietly builds an empty tokenizer (special tokens only) without them
        raise ModelSourceError(f"{ref}: cannot load the tokenizer: {layout.model_dir} holds none of "
                               f"{', '.join(TOKENIZER_FILES)}")
    tokenizer = _pretrained(transformers.AutoTokenizer, layout.model_dir, ref, "tokenizer")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelSourceError(f"{ref}: the tokenizer is not a fast (tokenizers) one; the export "
                               "needs tokenizer.json or files transformers can convert to it")
    auto = (transformers.AutoModelForSequenceClassification if task == "text-classification"
            else transformers.AutoModel)
    model, loading = _pretrained(auto, layout.model_dir, ref, "model", output_loading_info=True)
    _check_weights(ref, task, loading)
    model.eval()
    names = _input_names(ref, tokenizer, model)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise ModelSourceError(f"{ref}: the tokenizer has {len(tokenizer)} tokens but the model's "
                               f"embedding only {vocab}; they do not belong together")
    max_length = _max_length(tokenizer, config, layout)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    modes = (layout.pooling or DEFAULT_POOLING) if task == "sentence-embedding" else None
    normalize = layout.normalize if task == "sentence-embedding" else False

    meta = text_metadata(backend.to_str(), max_length=max_length, pad_id=pad_id,
                         pad_token=tokenizer.pad_token, input_names=names)
    if task == "text-classification":
        labels = [str(config.id2label[i]) for i in sorted(int(k) for k in config.id2label)]
        meta.update(classifier_metadata(labels=labels, input_scaling={}, source=str(root)))
    else:
        meta.update({META_TASK: META_TASKS[task], META_SOURCE: str(root)})
    if modes:
        meta[META_POOLING] = json.dumps({"modes": list(modes), "normalize": normalize})

    module = _text_module(model, task, modes, normalize, "token_type_ids" in names)
    encoder = TextEncoder.from_model(meta)
    specs = [InputSpec(n, (BATCH, SEQUENCE), "int64") for n in names]
    src = LoadedModel(ref, "huggingface", module, specs, [OUTPUTS[task]])
    src.extra_metadata = meta
    src.output_axes = {OUTPUTS[task]: {0: BATCH, 1: SEQUENCE} if task == "feature-extraction" else {0: BATCH}}
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 1:
        src.dim_max = {SEQUENCE: positions}
    texts = parity_texts(max_length)
    example = encoder.encode(list(texts[1:3]))
    src.example = _tensors(example, names)
    src.rounds, agrees = _rounds(tokenizer, encoder, names, texts, max_length)
    src.data_label = "text"
    src.info = {"tokenizer_agrees": agrees, "text": {
        "task": task, "inputs": names, "max_length": max_length, "pad_id": pad_id,
        "pooling": list(modes) if modes else None, "normalize": normalize,
        "sentence_transformers": layout.sentence_transformers, "model_type": config.model_type,
    }}
    return src


def _check_weights(ref: str, task: str, loading: dict) -> None:
    """Refuse weights transformers had to initialize at random: the export would be noise."""
    missing = [k for k in loading.get("missing_keys", ())
               # the pooler feeds only the classification head; other tasks never use it
               if task == "text-classification" or ".pooler." not in f".{k}"]
    mismatched = [str(k[0] if isinstance(k, (tuple, list)) else k) for k in loading.get("mismatched_keys", ())]
    if missing or mismatched:
        keys = sorted(missing) + sorted(mismatched)
        shown = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        hint = ("; the directory holds no classification head: use --task feature-extraction or "
                "sentence-embedding" if task == "text-classification" else "")
        raise ModelSourceError(f"{ref}: the weights lack {shown} (transformers would initialize "
                               f"them at random){hint}")


def _pretrained(cls, where: Path, ref: str, what: str, **kwargs):
    from transformers.utils import logging as hf_logging

    # progress bars and load reports on stderr are noise in a CLI that prints its own report
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(str(where), local_files_only=True, **kwargs)
    except Exception as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ModelSourceError(f"{ref}: cannot load the {what} from {where}: {first[:300]}") from exc


def _default_task(layout: Layout, config) -> str:
    if layout.sentence_transformers:
        return "sentence-embedding"
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "text-classification"
    return "feature-extraction"


def _input_names(ref: str, tokenizer, model) -> list[str]:
    """The tokenizer's inputs the model takes, in the order input_ids, attention_mask, token_type_ids."""
    given = set(getattr(tokenizer, "model_input_names", None) or ())
    try:
        takes = set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        takes = set(FIELDS)
    for needed in ("input_ids", "attention_mask"):
        if needed not in given or needed not in takes:
            raise ModelSourceError(f"{ref}: the tokenizer gives {sorted(given)} and the model takes "
                                   f"{sorted(takes & set(FIELDS))}; both need {needed}")
    return [n for n in FIELDS if n in given and n in takes]


def _max_length(tokenizer, config, layout: Layout) -> int:
    """The sequence limit: sentence-transformers' max_seq_length, else the tokenizer's and model's."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < _NO_LIMIT:
        limits.append(tok_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    if layout.max_seq_length:
        limits.append(layout.max_seq_length)
    return min(limits) if limits else 512


def parity_texts(max_length: int) -> tuple[str, ...]:
    """The parity texts plus one long enough to be truncated at ``max_length`` tokens."""
    long = " ".join(["tokens"] * (max_length + 8))
    return (*PARITY_TEXTS, long)


def _tensors(feeds: dict[str, np.ndarray], names: list[str]) -> tuple:
    torch = require("torch", "torch")
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names)


def _rounds(tokenizer, encoder: TextEncoder, names: list[str], texts: tuple[str, ...],
            max_length: int):
    """Parity rounds (batch 1, 2 with padding, 8 with a truncated text) and the tokenizer check."""
    groups = [[texts[0]], [texts[4], texts[2]], list(texts)]
    rounds, agrees = [], True
    for group in groups:
        feeds = encoder.encode(group)
        theirs = tokenizer(group, padding=True, truncation=True, max_length=max_length,
                           return_tensors="np")
        for n in names:
            if n not in theirs or theirs[n].shape != feeds[n].shape or not np.array_equal(theirs[n], feeds[n]):
                agrees = False
        batch, length = feeds[names[0]].shape
        rounds.append(ParityRound(f"{batch}x{length}", int(batch), _tensors(feeds, names)))
    return rounds, agrees
