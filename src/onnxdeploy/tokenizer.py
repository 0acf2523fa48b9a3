"""The tokenizer that travels inside an exported text model, and texts -> model feeds.

An export from a Hugging Face directory stores two ``metadata_props``:

- ``onnxdeploy.tokenizer``: the tokenizer.json text (the ``tokenizers`` library's own format),
  so copying the one ``.onnx`` file carries it and every quantized/optimized variant inherits it;
- ``onnxdeploy.text``: JSON ``{"max_length", "pad_id", "pad_token", "inputs"}``, where
  ``inputs`` maps each graph input to the encoding field that feeds it (``ids``,
  ``attention_mask``, ``type_ids``).

``TextEncoder`` needs only the ``tokenizers`` package (no torch, no transformers), so a serving
image can take text. Limits are explicit: a text longer than ``max_chars`` characters is refused
(``TextTooLongError``) before tokenizing, and token sequences are truncated at the model's
``max_length``. Batches are padded on the right to the longest sequence of the call.

For the server::

    encoder = TextEncoder.from_model("model.onnx")        # once per worker
    feeds = encoder.encode(["a text", "another"])          # {"input_ids": int64 [2, L], ...}
    merged, rows = pad_feeds([feeds_a, feeds_b])           # one batch from several requests
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError, ModelLoadError, TextTooLongError, require

META_TOKENIZER = "onnxdeploy.tokenizer"
META_TEXT = "onnxdeploy.text"
#: graph input name -> field of a ``tokenizers.Encoding``
FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
#: longest text accepted, in characters, before any tokenizing (a guard, not a model limit)
DEFAULT_MAX_CHARS = 100_000


def text_metadata(tokenizer_json: str, *, max_length: int, pad_id: int, pad_token: str | None,
                  input_names: list[str]) -> dict[str, str]:
    """The ``metadata_props`` entries that carry a tokenizer inside a model."""
    unknown = [n for n in input_names if n not in FIELDS]
    if unknown:
        raise ValueError(f"inputs {unknown} cannot be produced by a tokenizer")
    config = {"max_length": int(max_length), "pad_id": int(pad_id), "pad_token": pad_token,
              "inputs": {n: FIELDS[n] for n in input_names}}
    return {META_TOKENIZER: tokenizer_json, META_TEXT: json.dumps(config)}


def _metadata_of(source: Any) -> dict[str, str]:
    """``metadata_props`` of a ModelProto, a path to one, or a dict already read."""
    if isinstance(source, dict):
        return source
    from . import modelfile

    if isinstance(source, (str, os.PathLike)):
        source = modelfile.load_model(source, load_external_data=False)
    return modelfile.metadata(source)


def has_tokenizer(source: Any) -> bool:
    """True when the model (ModelProto, path or metadata dict) carries a tokenizer."""
    meta = _metadata_of(source)
    return META_TOKENIZER in meta and META_TEXT in meta


@dataclass
class TextEncoder:
    """Texts -> padded int64 feeds named as the model's inputs."""

    tokenizer: Any  # tokenizers.Tokenizer with truncation at max_length and no padding
    inputs: dict[str, str]  # graph input -> encoding field
    max_length: int
    pad_id: int
    max_chars: int = DEFAULT_MAX_CHARS

    @classmethod
    def from_model(cls, source: Any, *, max_chars: int = DEFAULT_MAX_CHARS,
                   max_length: int | None = None) -> TextEncoder:
        """Build from a ModelProto, a path to one, or its metadata dict.

        ``max_length`` truncates shorter than the model's own limit (never longer).
        """
        meta = _metadata_of(source)
        if not (META_TOKENIZER in meta and META_TEXT in meta):
            raise DataError("the model carries no tokenizer (metadata onnxdeploy.tokenizer); "
                            "export it from a Hugging Face directory to take text")
        tokenizers = require("tokenizers", "hf")
        try:
            config = json.loads(meta[META_TEXT])
            tok = tokenizers.Tokenizer.from_str(meta[META_TOKENIZER])
            inputs = {str(k): str(v) for k, v in config["inputs"].items()}
            model_max, pad_id = int(config["max_length"]), int(config["pad_id"])
        except Exception as exc:
            raise ModelLoadError(f"the model's tokenizer metadata is unreadable: {exc}") from exc
        if max_length is not None and max_length < 1:
            raise DataError(f"max_length {max_length}: expected a positive number of tokens")
        max_length = min(model_max, max_length or model_max)
        tok.no_padding()
        tok.enable_truncation(max_length=max_length)
        return cls(tok, inputs, max_length, pad_id, max_chars)

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    def check_texts(self, texts: Any) -> list[str]:
        """The texts as a list of str, or a DataError / TextTooLongError saying what is wrong."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise DataError(f"texts: expected a list of strings, got {type(texts).__name__}")
        if not texts:
            raise DataError("texts: expected at least one text, got an empty list")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"texts[{i}]: expected a string, got {type(text).__name__}")
            if len(text) > self.max_chars:
                raise TextTooLongError(f"texts[{i}]: {len(text):,} characters; at most "
                                       f"{self.max_chars:,} are accepted")
        return list(texts)

    def encode(self, texts: Any) -> dict[str, np.ndarray]:
        """Tokenize, truncate at ``max_length``, pad to the longest: ``{input: int64 [n, L]}``."""
        texts = self.check_texts(texts)
        encodings = self.tokenizer.encode_batch(texts)
        length = max(1, max(len(e.ids) for e in encodings))
        feeds = {}
        for name, fld in self.inputs.items():
            pad = self.pad_id if fld == "ids" else 0
            arr = np.full((len(texts), length), pad, dtype=np.int64)
            for row, enc in enumerate(encodings):
                values = getattr(enc, fld)
                arr[row, : len(values)] = values
            feeds[name] = arr
        return feeds

    def merge(self, parts: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
        """Several ``encode`` results as one batch padded to the longest; rows per part."""
        return pad_feeds(parts, pad_id=self.pad_id)

    def lengths(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Tokens per row (after truncation), from the attention mask or the non-pad ids."""
        if "attention_mask" in feeds:
            return feeds["attention_mask"].sum(axis=1)
        return (feeds[self.input_names[0]] != self.pad_id).sum(axis=1)


def pad_feeds(parts: list[dict[str, np.ndarray]], *, pad_id: int = 0) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate per-request feeds into one batch padded to the longest; rows per part.

    ``input_ids`` is padded with ``pad_id``, every other input with 0 (mask and type ids).
    """
    if not parts:
        raise ValueError("pad_feeds needs at least one part")
    length = max(arr.shape[1] for part in parts for arr in part.values())
    merged = {}
    for name in parts[0]:
        pad = pad_id if name == "input_ids" else 0
        padded = [np.pad(p[name], ((0, 0), (0, length - p[name].shape[1])), constant_values=pad)
                  for p in parts]
        merged[name] = np.concatenate(padded, axis=0)
    return merged, [int(next(iter(p.values())).shape[0]) for p in parts]


def encode_texts(source: Any, texts: Any) -> dict[str, np.ndarray]:
    """One-shot: feeds for ``texts`` from a model that carries a tokenizer (see TextEncoder)."""
    return TextEncoder.from_model(source).encode(texts)
