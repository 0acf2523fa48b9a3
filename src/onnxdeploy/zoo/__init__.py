"""Built-in models: digits classifiers trained on scikit-learn's digits (shipped, no download).

``NAMES`` lists them; ``get_entry`` describes one (no torch needed); ``load_trained`` returns the
trained network, training it once per cache directory and seed (see ``zoo.train``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .entry import DIGIT_LABELS, DIGITS_INPUT_SCALING, ZooEntry

CACHE_ENV = "ONNXDEPLOY_CACHE"
DEFAULT_CACHE = Path("~/.cache/onnxdeploy")

_ENTRIES = (
    ZooEntry(
        name="digits-cnn",
        description="conv net: 3× Conv+BatchNorm+ReLU, max-pool, linear head",
        builder="DigitsCNN",
        input_shape=(1, 1, 8, 8),
        epochs=25,
        lr=3e-3,
        weight_decay=1e-4,
    ),
    ZooEntry(
        name="digits-mlp",
        description="wide MLP 64→2048→2048→10 (memory-bound, int8-friendly)",
        builder="DigitsMLP",
        input_shape=(1, 64),
        epochs=8,
        lr=2e-3,
        batch_size=128,  # fewer, larger steps: the Adam update over 4.3M weights dominates
    ),
)

NAMES: tuple[str, ...] = tuple(e.name for e in _ENTRIES)
_BY_NAME = {e.name: e for e in _ENTRIES}


def get_entry(name: str) -> ZooEntry:
    """The built-in called ``name``, or ModelLoadError listing the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown built-in model {name!r}; known: {', '.join(NAMES)} "
            "(or give a factory as path/to/file.py:fn or package.module:fn)"
        ) from None


def cache_dir(option: str | os.PathLike | None = None) -> Path:
    """Where trained weights live: ``option``, else ``$ONNXDEPLOY_CACHE``, else ``~/.cache/onnxdeploy``."""
    chosen = option if option else os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser()


_resolve_cache = cache_dir  # the keyword argument ``cache_dir`` below shadows the function


def load_trained(name: str, *, cache_dir: str | os.PathLike | None = None, seed: int = 0,
                 progress: bool = True):
    """``(module in eval mode, TrainInfo)`` for a built-in, trained on first use and cached."""
    from .train import load_trained as _load

    return _load(get_entry(name), _resolve_cache(cache_dir), seed=seed, progress=progress)


def cached_info(name: str, *, cache_dir: str | os.PathLike | None = None, seed: int = 0):
    """The cached training record of a built-in as a dict, or None when not trained yet."""
    from .train import read_record

    return read_record(get_entry(name), _resolve_cache(cache_dir), seed)


def describe(name: str, *, cache_dir: str | os.PathLike | None = None, seed: int = 0,
             train: bool = False, progress: bool = True) -> dict[str, Any]:
    """A built-in's listing row; accuracy from the cache (None if untrained unless ``train``)."""
    from .train import count_params

    entry = get_entry(name)
    if train:
        module, info = load_trained(name, cache_dir=cache_dir, seed=seed, progress=progress)
        record: dict[str, Any] | None = info.to_dict()
    else:
        module, record = entry.build(), cached_info(name, cache_dir=cache_dir, seed=seed)
    return {
        "name": entry.name,
        "description": entry.description,
        "input_name": entry.input_name,
        "input_shape": ["batch", *entry.input_shape[1:]],
        "params": count_params(module),
        "trained": record is not None,
        "accuracy": None if record is None else float(record["accuracy"]),
        "train_seconds": None if record is None else record.get("train_seconds"),
        "labels": list(entry.labels),
    }


__all__ = ["DIGITS_INPUT_SCALING", "DIGIT_LABELS", "NAMES", "ZooEntry", "get_entry", "cache_dir", "load_trained", "cached_info", "describe"]
