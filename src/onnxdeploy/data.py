"""Data sources for every step: the built-in digits set, a user ``.npz``, or random inputs.

``--data SOURCE`` is one of:
- ``digits``: scikit-learn's handwritten digits (shipped inside scikit-learn, no download), the
  fixed test split used by the built-in models, scaled to [0, 1], with labels. It fits any model
  with one floating-point input whose sample has 64 values (``N×64``, ``N×1×8×8``, ``N×8×8``).
- a path to an ``.npz`` file: one array per model input, named after the input (a one-input model
  also accepts a file holding a single array), and optionally an integer array ``labels``.
- ``random``: generated from the model's signature with the right dtypes: floats from N(0, 1),
  integers from [0, 10), booleans fair coins. A symbolic first axis takes ``count`` (default
  ``DEFAULT_RANDOM_COUNT``) samples; any other symbolic axis takes ``DEFAULT_SYMBOLIC_DIM`` unless
  set with ``--dim NAME=VALUE``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import DataError, OptionError
from .modelfile import Signature, TensorSpec

DIGITS = "digits"
RANDOM = "random"
BUILTIN_SOURCES = (DIGITS, RANDOM)

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0
DIGITS_SCALE = 1.0 / 16.0  # pixel values are 0..16

DEFAULT_RANDOM_COUNT = 64
DEFAULT_SYMBOLIC_DIM = 8
RANDOM_INT_HIGH = 10


@dataclass
class DataSet:
    """Named input arrays plus optional labels.

    Arrays of inputs whose first axis is a batch axis are split along it; the other arrays
    (scalars, fixed-shape inputs) are passed whole with every batch.
    """

    name: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    batched: frozenset[str]

    def __len__(self) -> int:
        for key in self.batched:
            return int(self.inputs[key].shape[0])
        return 1

    def slice(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The feeds for samples ``start:stop``."""
        return {
            k: (v[start:stop] if k in self.batched else v) for k, v in self.inputs.items()
        }

    def batches(self, size: int):
        """Yield ``(feeds, labels_or_None)`` for consecutive batches of ``size`` samples."""
        n = len(self)
        step = n if not self.batched else max(1, size)
        for start in range(0, n, step):
            stop = min(n, start + step)
            labels = None if self.labels is None else self.labels[start:stop]
            yield self.slice(start, stop), labels

    def feeds(self, size: int) -> dict[str, np.ndarray]:
        """Feeds of exactly ``size`` samples, repeating the data when it holds fewer."""
        if not self.batched:
            return dict(self.inputs)
        n = len(self)
        idx = np.arange(size) % n
        return {k: (v[idx] if k in self.batched else v) for k, v in self.inputs.items()}


# --------------------------------------------------------------------------- digits


@lru_cache(maxsize=2)
def digits_split(seed: int = DIGITS_SPLIT_SEED):
    """``(x_train, y_train, x_test, y_test)``: digits as float32 ``N×64`` in [0, 1], int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data.astype(np.float32) * np.float32(DIGITS_SCALE)).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=seed, stratify=y
    )
    for arr in (x_tr, x_te, y_tr, y_te):
        arr.setflags(write=False)
    return x_tr, y_tr, x_te, y_te


def _digits_for(sig: Signature) -> DataSet:
    if len(sig.inputs) != 1:
        names = ", ".join(s.name for s in sig.inputs)
        raise DataError(
            f"data 'digits' feeds a model with one input; this model has {len(sig.inputs)} ({names}); "
            "use --data FILE.npz or --data random"
        )
    spec = sig.inputs[0]
    if spec.dtype is None or spec.dtype.kind != "f":
        raise DataError(
            f"data 'digits' is float pixels; input '{spec.name}' is {spec.dtype}; use --data FILE.npz or random"
        )
    _, _, x, y = digits_split()
    sample = _sample_shape_for_size(spec, 64)
    if sample is None:
        raise DataError(
            f"data 'digits' has 64 pixels a sample; input '{spec.name}' has shape {_fmt(spec.shape)}; "
            "use --data FILE.npz or random"
        )
    arr = x.reshape((x.shape[0], *sample)).astype(spec.dtype)
    return DataSet(DIGITS, {spec.name: arr}, y.copy(), frozenset([spec.name]))


def _sample_shape_for_size(spec: TensorSpec, size: int) -> tuple[int, ...] | None:
    if not spec.shape or not spec.has_batch_axis:
        return None
    rest = spec.shape[1:]
    fixed = [d for d in rest if isinstance(d, int)]
    free = [i for i, d in enumerate(rest) if not isinstance(d, int)]
    known = int(np.prod(fixed)) if fixed else 1
    if not free:
        return tuple(fixed) if known == size else None
    if len(free) == 1 and size % known == 0:
        dims = [d if isinstance(d, int) else size // known for d in rest]
        return tuple(dims)
    if known == size:
        return tuple(d if isinstance(d, int) else 1 for d in rest)
    if len(rest) == 2 and all(not isinstance(d, int) for d in rest) and size == 64:
        return (8, 8)
    return None


# --------------------------------------------------------------------------- npz


def _npz_for(path: Path, sig: Signature) -> DataSet:
    if not path.exists():
        raise DataError(f"--data {path}: no such file; expected 'digits', 'random' or an .npz file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"--data {path}: not a readable .npz file ({exc})") from exc
    labels = arrays.pop("labels", None)
    names = [s.name for s in sig.inputs]
    if len(sig.inputs) == 1 and names[0] not in arrays and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(
            f"--data {path}: no array for input(s) {', '.join(missing)}; "
            f"the file has {', '.join(sorted(arrays)) or 'no arrays'}, the model needs {', '.join(names)}"
        )
    extra = sorted(set(arrays) - set(names))
    if extra:
        raise DataError(
            f"--data {path}: array(s) {', '.join(extra)} match no model input; the model needs {', '.join(names)}"
        )
    inputs: dict[str, np.ndarray] = {}
    batched: set[str] = set()
    for spec in sig.inputs:
        arr = _fit_array(path, spec, arrays[spec.name])
        inputs[spec.name] = arr
        if spec.has_batch_axis:
            batched.add(spec.name)
    sizes = {inputs[k].shape[0] for k in batched}
    if len(sizes) > 1:
        raise DataError(f"--data {path}: inputs disagree on the number of samples ({sorted(sizes)})")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"--data {path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        if sizes and labels.shape[0] != next(iter(sizes)):
            raise DataError(
                f"--data {path}: {labels.shape[0]} labels for {next(iter(sizes))} samples"
            )
        labels = labels.astype(np.int64)
    return DataSet(path.name, inputs, labels, frozenset(batched))


_KIND_OK = {"f": "fiu", "i": "iub", "u": "iub", "b": "b"}


def _fit_array(path: Path, spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    where = f"--data {path}: array '{spec.name}'"
    if spec.dtype is None:
        raise DataError(f"{where}: input is a {spec.kind}, not a tensor; only tensor inputs can be fed")
    if arr.dtype.kind not in _KIND_OK.get(spec.dtype.kind, spec.dtype.kind):
        raise DataError(f"{where} is {arr.dtype}; the model expects {spec.dtype}")
    if spec.shape is not None:
        if arr.ndim != len(spec.shape):
            raise DataError(
                f"{where} has shape {arr.shape}; the model expects {_fmt(spec.shape)} ({len(spec.shape)} axes)"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(want, int) and want != got:
                raise DataError(
                    f"{where} has shape {arr.shape}; the model expects {_fmt(spec.shape)} (axis {axis} must be {want})"
                )
    return np.ascontiguousarray(arr.astype(spec.dtype, copy=False))


# --------------------------------------------------------------------------- random


def parse_dims(items: list[str] | tuple[str, ...] | None) -> dict[str, int]:
    """Parse ``NAME=VALUE`` pairs given to ``--dim``."""
    dims: dict[str, int] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        try:
            size = int(value)
        except ValueError:
            size = 0
        if not sep or not name or size <= 0:
            raise OptionError(f"--dim {item!r}: expected NAME=VALUE with a positive integer VALUE, e.g. seq=16")
        dims[name] = size
    return dims


def _random_for(sig: Signature, dims: dict[str, int], count: int, seed: int) -> DataSet:
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    batched: set[str] = set()
    for spec in sig.inputs:
        if spec.dtype is None:
            raise DataError(f"input '{spec.name}' is a {spec.kind}, not a tensor; random data cannot feed it")
        if spec.shape is None:
            raise DataError(
                f"input '{spec.name}' has no known rank; random data needs a shape: use --data FILE.npz"
            )
        shape = []
        for axis, d in enumerate(spec.shape):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str) and d in dims:
                shape.append(dims[d])
            elif axis == 0:
                shape.append(count)
            else:
                shape.append(DEFAULT_SYMBOLIC_DIM)
        if spec.has_batch_axis:
            batched.add(spec.name)
        inputs[spec.name] = _random_array(rng, spec.dtype, tuple(shape))
    return DataSet(RANDOM, inputs, None, frozenset(batched))


def _random_array(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, RANDOM_INT_HIGH, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "US":
        return np.full(shape, "a", dtype=dtype)
    raise DataError(f"random data cannot generate dtype {dtype}")


# --------------------------------------------------------------------------- entry point


def load_data(
    source: str | os.PathLike | None,
    sig: Signature,
    *,
    dims: dict[str, int] | None = None,
    count: int | None = None,
    seed: int = 0,
) -> DataSet:
    """Build the data set named by ``source`` for a model with signature ``sig``.

    ``None`` means ``digits`` when it fits the model and ``random`` otherwise. ``count`` caps
    the number of samples (and sets it for random data).
    """
    src = str(source) if source is not None else None
    if src is None:
        try:
            data = _digits_for(sig)
        except DataError:
            data = _random_for(sig, dims or {}, count or DEFAULT_RANDOM_COUNT, seed)
    elif src == DIGITS:
        data = _digits_for(sig)
    elif src == RANDOM:
        data = _random_for(sig, dims or {}, count or DEFAULT_RANDOM_COUNT, seed)
    elif src.endswith(".npz") or Path(src).exists():
        data = _npz_for(Path(src), sig)
    else:
        raise DataError(
            f"--data {src}: unknown data source; expected 'digits', 'random' or a path to an .npz file"
        )
    if count is not None and data.batched and len(data) > count:
        data = DataSet(
            data.name,
            data.slice(0, count),
            None if data.labels is None else data.labels[:count],
            data.batched,
        )
    return data


def _fmt(shape) -> str:
    if shape is None:
        return "unknown"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
