"""Data for every step: ``dataset.py`` (DataSet and its batch axes), ``load.py`` (``--data``:
digits, .npz, random) and ``text.py`` (.txt/.jsonl texts through the model's tokenizer).

``from onnxdeploy.data import load_data, DataSet`` and the other names below are the way in; the
text loaders are imported from ``onnxdeploy.data.text`` (it is loaded only for text sources).
"""

from .dataset import Batched, BatchSizes, DataSet, concat_batches
from .load import (
    BUILTIN_SOURCES,
    DEFAULT_RANDOM_COUNT,
    DEFAULT_SYMBOLIC_DIM,
    DIGITS,
    DIGITS_SCALE,
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION,
    RANDOM,
    RANDOM_INT_HIGH,
    RANDOM_INT_LOW,
    RANDOM_NOTE,
    digits_split,
    load_data,
    parse_dims,
    parse_int_ranges,
)

__all__ = [
    "BUILTIN_SOURCES", "DEFAULT_RANDOM_COUNT", "DEFAULT_SYMBOLIC_DIM", "DIGITS", "DIGITS_SCALE",
    "DIGITS_SPLIT_SEED", "DIGITS_TEST_FRACTION", "RANDOM", "RANDOM_INT_HIGH", "RANDOM_INT_LOW",
    "RANDOM_NOTE", "Batched", "BatchSizes", "DataSet", "concat_batches", "digits_split",
    "load_data", "parse_dims", "parse_int_ranges",
]
