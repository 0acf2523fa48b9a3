"""Text data for a model that carries a tokenizer: ``--data texts.txt`` or ``--data texts.jsonl``.

- ``.txt``: one text a line (UTF-8); blank lines are skipped, no labels.
- ``.jsonl``: one JSON object a line with ``"text"`` (a string) and optionally ``"label"``: an
  integer class index or one of the model's label names (metadata ``onnxdeploy.labels``).
  Either every line has a label or none does; labels make accuracy for classifiers.

``load_text_data`` tokenizes with the tokenizer carried in the model (``tokenizer.TextEncoder``:
truncation at the model's max length, texts past ``max_chars`` refused) and pads every row to the
longest sequence of the set, so the DataSet has one int64 ``[N, L]`` array per model input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..modelfile import META_LABELS, Signature
from ..tokenizer import TextEncoder, _metadata_of, has_tokenizer
from .dataset import DataSet

TEXT_SUFFIXES = (".txt", ".jsonl")


def is_text_source(source: str | Path) -> bool:
    """True when ``source`` names a text data file by its suffix (.txt or .jsonl)."""
    return Path(str(source)).suffix.lower() in TEXT_SUFFIXES


def read_texts(path: str | Path) -> tuple[list[str], list[Any] | None]:
    """The texts of a .txt / .jsonl file and its raw labels (None when it has none)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"--data {path}: no such file; expected a .txt (one text a line) or .jsonl file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--data {path}: cannot be read as UTF-8 text: {exc}") from exc
    texts: list[str] = []
    labels: list[Any] = []
    labelled: bool | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if p.suffix.lower() != ".jsonl":
            texts.append(line)
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"--data {path}: line {number} is not JSON ({exc.args[0][:80]})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError(f"--data {path}: line {number}: expected an object with a string "
                            '"text" (and optionally "label")')
        has = "label" in row
        if labelled is not None and has != labelled:
            raise DataError(f"--data {path}: line {number} {'has' if has else 'lacks'} a label "
                            "unlike the lines before it; label every line or none")
        labelled = has
        texts.append(row["text"])
        if has:
            labels.append(row["label"])
    if not texts:
        raise DataError(f"--data {path}: holds no text")
    return texts, (labels if labelled else None)


def _label_indices(path: Path, raw: list[Any], names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    out = []
    for i, label in enumerate(raw):
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise DataError(f"--data {path}: label {label!r} of text {i + 1}: expected an "
                            "integer class or a label name")
        if isinstance(label, str):
            if label not in index:
                known = ", ".join(names) if names else "none (the model carries no labels)"
                raise DataError(f"--data {path}: label {label!r} of text {i + 1} is not one of "
                                f"the model's labels: {known}")
            label = index[label]
        if names and not 0 <= label < len(names):
            raise DataError(f"--data {path}: label {label} of text {i + 1} is outside 0..{len(names) - 1}")
        out.append(label)
    return np.asarray(out, dtype=np.int64)


def load_text_data(path: str | Path, model: Any, sig: Signature) -> DataSet:
    """A DataSet of tokenized, padded texts (and labels) for ``model`` (ModelProto or metadata)."""
    p = Path(path).expanduser()
    meta = _metadata_of(model)
    if not has_tokenizer(meta):
        raise DataError(f"--data {path}: text data needs a model that carries a tokenizer "
                        "(exported from a Hugging Face directory); this one does not")
    encoder = TextEncoder.from_model(meta)
    names = [s.name for s in sig.inputs]
    missing = [n for n in names if n not in encoder.inputs]
    absent = [n for n in encoder.inputs if n not in names]
    if missing or absent:
        raise DataError(f"--data {path}: the model's inputs ({', '.join(names)}) do not match what "
                        f"its tokenizer makes ({', '.join(encoder.inputs)})")
    texts, raw_labels = read_texts(p)
    try:
        feeds = encoder.encode(texts)
    except DataError as exc:
        raise type(exc)(f"--data {path}: {exc}") from exc
    inputs = {}
    for spec in sig.inputs:
        arr = feeds[spec.name]
        inputs[spec.name] = arr if spec.dtype is None else arr.astype(spec.dtype, copy=False)
    labels = None
    if raw_labels is not None:
        try:
            label_names = [str(x) for x in json.loads(meta.get(META_LABELS, "[]"))]
        except ValueError:
            label_names = []
        labels = _label_indices(p, raw_labels, label_names)
    return DataSet(f"text:{p.name}", inputs, labels, frozenset(names))
