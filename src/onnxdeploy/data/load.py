"""Data sources for every step: the built-in digits set, a user ``.npz``, or random inputs.

``--data SOURCE`` is one of:
- ``digits``: scikit-learn's handwritten digits (shipped inside scikit-learn, no download), the
  fixed test split used by the built-in models, scaled to [0, 1], with labels. It fits any model
  with one floating-point input whose sample has 64 values (``N×64``, ``N×1×8×8``, ``N×8×8``).
- a path to an ``.npz`` file: one array per model input, named after the input (a one-input model
  also accepts the ``arr_0`` that ``np.savez(path, array)`` writes), and optionally an integer
  array ``labels``. Arrays are checked against the signature as converters write it: ``-1``,
  ``0``, ``'?'`` and empty dims are free, named dims must agree across inputs, and every input
  with a batch axis must hold the same number of samples along it.
- ``random``: generated from the model's signature with the right dtypes: floats from N(0, 1),
  integers from [0, 10) unless ``--int-range INPUT=LO:HI`` says otherwise, booleans fair coins.
  The batch axis takes ``count`` (default ``DEFAULT_RANDOM_COUNT``) samples; any other free axis
  takes ``DEFAULT_SYMBOLIC_DIM`` unless set with ``--dim NAME=VALUE`` (a named dim) or
  ``--dim INPUT:AXIS=VALUE`` (an unnamed one, such as Paddle's ``-1`` width).

The DataSet these sources return, with its batch axes, is in ``data/dataset.py``.
"""

from __future__ import annotations

import os
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError, OptionError, first_line
from ..modelfile import Signature, TensorSpec, dim_name, fmt_dim, fmt_shape, is_fixed_dim
from .dataset import DataSet, _contiguous

DIGITS = "digits"
RANDOM = "random"
BUILTIN_SOURCES = (DIGITS, RANDOM)

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0
DIGITS_SCALE = 1.0 / 16.0  # pixel values are 0..16

DEFAULT_RANDOM_COUNT = 64
DEFAULT_SYMBOLIC_DIM = 8
RANDOM_INT_LOW, RANDOM_INT_HIGH = 0, 10

#: what every data set made of random numbers says about itself
RANDOM_NOTE = (
    "random inputs (floats N(0, 1), integers in [LO, HI), fair-coin booleans) prove that the "
    "steps run, not that the model still gives the right answers: pass real inputs with --data FILE.npz"
)


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
            f"data 'digits' has 64 pixels a sample; input '{spec.name}' has shape {fmt_shape(spec.shape)}; "
            "use --data FILE.npz or random"
        )
    arr = np.moveaxis(x.reshape((x.shape[0], *sample)), 0, spec.batch_axis).astype(spec.dtype)
    return DataSet(DIGITS, {spec.name: _contiguous(arr)}, y.copy(),
                   batch_axes={spec.name: spec.batch_axis})


def _sample_shape_for_size(spec: TensorSpec, size: int) -> tuple[int, ...] | None:
    if not spec.shape or not spec.has_batch_axis:
        return None
    rest = [d for axis, d in enumerate(spec.shape) if axis != spec.batch_axis]
    fixed = [d for d in rest if is_fixed_dim(d)]
    free = [i for i, d in enumerate(rest) if not is_fixed_dim(d)]
    known = int(np.prod(fixed)) if fixed else 1
    if not free:
        return tuple(fixed) if known == size else None
    if len(free) == 1 and size % known == 0:
        return tuple(d if is_fixed_dim(d) else size // known for d in rest)
    if known == size:
        return tuple(d if is_fixed_dim(d) else 1 for d in rest)
    if len(rest) == 2 and not fixed and size == 64:
        return (8, 8)
    return None


# --------------------------------------------------------------------------- npz

_NPY_MAGIC = b"\x93NUMPY"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, or a one-line DataError saying what the file is instead."""
    where = f"--data {path}"
    if not path.exists():
        raise DataError(f"{where}: no such file; expected 'digits', 'random' or an .npz file")
    if path.is_dir():
        raise DataError(f"{where}: is a directory; expected an .npz file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
        if head == _NPY_MAGIC:
            raise DataError(f"{where}: a single .npy array, not an .npz; save one array per input "
                            "with np.savez(path, NAME=array, ...)")
        raise DataError(f"{where}: not a readable .npz file (not a zip archive of arrays); "
                        "save one array per input with np.savez(path, NAME=array, ...)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                except ValueError as exc:  # object arrays need pickle: refuse them, quietly
                    raise DataError(f"{where}: array '{key}' holds Python objects, not numbers; "
                                    "save numeric arrays") from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        first = first_line(exc)
        raise DataError(f"{where}: not a readable .npz file ({first})") from exc
    return arrays


def _npz_for(path: Path, sig: Signature) -> DataSet:
    arrays = _read_npz(path)
    names = [s.name for s in sig.inputs]
    labels = arrays.pop("labels", None) if "labels" not in names else None
    if len(names) == 1 and names[0] not in arrays and list(arrays) == ["arr_0"]:
        arrays = {names[0]: arrays["arr_0"]}  # what np.savez(path, array) writes
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing:
        raise DataError(
            f"--data {path}: no array for input(s) {', '.join(missing)}; "
            f"the file has {', '.join(sorted(arrays)) or 'no arrays'}, the model needs {', '.join(names)}"
        )
    if extra:
        raise DataError(
            f"--data {path}: array(s) {', '.join(extra)} match no model input; the model needs {', '.join(names)}"
        )
    inputs = {spec.name: _fit_array(path, spec, arrays[spec.name]) for spec in sig.inputs}
    axes = {s.name: s.batch_axis for s in sig.inputs}
    counts = {k: inputs[k].shape[a] for k, a in axes.items() if a is not None}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"'{k}' {n}" for k, n in counts.items())
        raise DataError(f"--data {path}: inputs disagree on the number of samples along their batch axes ({detail})")
    _check_named_dims(path, sig, inputs)
    n = next(iter(counts.values()), None)
    if n == 0:
        raise DataError(f"--data {path}: the arrays hold no samples (0 along the batch axis)")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"--data {path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        if n is not None and labels.shape[0] != n:
            raise DataError(f"--data {path}: {labels.shape[0]} labels for {n} samples")
        labels = labels.astype(np.int64)
    return DataSet(path.name, inputs, labels, batch_axes=axes)


def _check_named_dims(path: Path, sig: Signature, inputs: dict[str, np.ndarray]) -> None:
    """Dims that share a name (``seq`` in input_ids and attention_mask) must have one size."""
    seen: dict[str, tuple[str, int, int]] = {}
    for spec in sig.inputs:
        for axis, d in enumerate(spec.shape or ()):
            name = dim_name(d)
            if name is None or inputs[spec.name].ndim != len(spec.shape):
                continue
            size = inputs[spec.name].shape[axis]
            if name in seen and seen[name][2] != size:
                other, other_axis, other_size = seen[name]
                raise DataError(
                    f"--data {path}: array '{spec.name}' axis {axis} ({name}) is {size} but array "
                    f"'{other}' axis {other_axis} ({name}) is {other_size}; dims named '{name}' must agree"
                )
            seen.setdefault(name, (spec.name, axis, size))


def _fit_array(path: Path, spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    where = f"--data {path}: array '{spec.name}'"
    if spec.dtype is None:
        raise DataError(f"{where}: input is a {spec.kind}, not a tensor; only tensor inputs can be fed")
    if spec.shape is not None:
        if arr.ndim != len(spec.shape):
            raise DataError(
                f"{where} has shape {arr.shape}; the model expects {fmt_shape(spec.shape)} ({len(spec.shape)} axes)"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
            if is_fixed_dim(want) and want != got:
                raise DataError(
                    f"{where} has shape {arr.shape}; the model expects {fmt_shape(spec.shape)} "
                    f"(axis {axis} must be {want})"
                )
    return _contiguous(_cast(where, arr, spec.dtype))


def _cast(where: str, arr: np.ndarray, want: np.dtype) -> np.ndarray:
    """``arr`` as ``want`` when nothing is lost (float64 -> float32 is fine), else a DataError."""
    if arr.dtype == want:
        return arr
    got, kind = arr.dtype, want.kind
    refuse = DataError(f"{where} is {got}; the model expects {want}")
    if kind == "O":
        if got.kind not in "USO":
            raise refuse
        return arr.astype(object)
    if kind == "f":
        if got.kind not in "fiu":
            raise refuse
        with np.errstate(over="ignore"):  # overflow is checked just below
            out = arr.astype(want)
        if got.kind == "f" and np.any(np.isinf(out) & np.isfinite(arr)):
            raise DataError(f"{where} has values beyond the range of {want}; the model expects {want}")
        return out
    if kind in "iu":
        if got.kind == "b":
            return arr.astype(want)
        if got.kind not in "iu":
            raise refuse
        info = np.iinfo(want)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise DataError(
                f"{where} is {got} with values in [{arr.min()}, {arr.max()}]; the model expects {want} "
                f"([{info.min}, {info.max}]), so casting would change them"
            )
        return arr.astype(want)
    if kind == "b":
        if got.kind in "iu" and (arr.size == 0 or np.isin(arr, (0, 1)).all()):
            return arr.astype(bool)
        raise refuse
    raise refuse


# --------------------------------------------------------------------------- random


def parse_dims(items: list[str] | tuple[str, ...] | None) -> dict[str, int]:
    """Parse ``--dim`` values: ``NAME=VALUE`` for a named dim, ``INPUT:AXIS=VALUE`` for any axis."""
    dims: dict[str, int] = {}
    for item in items or ():
        name, sep, value = item.rpartition("=")
        try:
            size = int(value)
        except ValueError:
            size = 0
        target, colon, axis = name.rpartition(":")
        if colon and not (target and axis.isdigit()):
            size = 0
        if not sep or not name or size <= 0:
            raise OptionError(
                f"--dim {item!r}: expected NAME=VALUE (a named dim) or INPUT:AXIS=VALUE with a "
                "positive integer VALUE, e.g. seq=16 or image:3=320"
            )
        dims[name] = size
    return dims


def parse_int_ranges(items: list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, int]]:
    """Parse ``--int-range INPUT=LO:HI`` values: random integers for INPUT from LO to HI-1."""
    out: dict[str, tuple[int, int]] = {}
    for item in items or ():
        name, sep, value = item.rpartition("=")
        lo, colon, hi = value.partition(":")
        try:
            bounds = (int(lo), int(hi)) if colon else None
        except ValueError:
            bounds = None
        if not sep or not name or bounds is None or bounds[0] >= bounds[1]:
            raise OptionError(
                f"--int-range {item!r}: expected INPUT=LO:HI with integers LO < HI "
                "(values LO..HI-1), e.g. input_ids=0:30522"
            )
        out[name] = bounds
    return out


def _random_for(
    sig: Signature, dims: dict[str, int], int_ranges: dict[str, tuple[int, int]], count: int, seed: int
) -> DataSet:
    _check_random_options(sig, dims, int_ranges)
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    free: dict[str, str] = {}  # --dim hint -> the free dim it sets (one note per dim name)
    for spec in sig.inputs:
        if spec.dtype is None:
            raise DataError(f"input '{spec.name}' is a {spec.kind}, not a tensor; random data cannot feed it")
        if spec.shape is None:
            raise DataError(
                f"input '{spec.name}' has no known rank; random data needs a shape: use --data FILE.npz"
            )
        shape = []
        for axis, d in enumerate(spec.shape):
            name = dim_name(d)
            if is_fixed_dim(d):
                shape.append(int(d))
            elif f"{spec.name}:{axis}" in dims:
                shape.append(dims[f"{spec.name}:{axis}"])
            elif name is not None and name in dims:
                shape.append(dims[name])
            elif axis == spec.batch_axis:
                shape.append(count)
            else:
                shape.append(DEFAULT_SYMBOLIC_DIM)
                if name is not None:
                    free.setdefault(f"--dim {name}=N", f"dim '{name}'")
                else:
                    free[f"--dim {spec.name}:{axis}=N"] = f"input '{spec.name}' axis {axis} ({fmt_dim(d)})"
        low, high = int_ranges.get(spec.name, (RANDOM_INT_LOW, RANDOM_INT_HIGH))
        inputs[spec.name] = _random_array(rng, spec, tuple(shape), low, high)
    note = RANDOM_NOTE.replace("[LO, HI)", f"[{RANDOM_INT_LOW}, {RANDOM_INT_HIGH})")
    if int_ranges:
        note += " (--int-range: " + ", ".join(f"{k} in [{lo}, {hi})" for k, (lo, hi) in int_ranges.items()) + ")"
    notes = [f"{what} set to {DEFAULT_SYMBOLIC_DIM}; change it with {hint}" for hint, what in free.items()]
    return DataSet(RANDOM, inputs, None, batch_axes=sig.batch_axes, notes=(note, *notes))


def _check_random_options(sig: Signature, dims: dict[str, int], int_ranges: dict[str, tuple[int, int]]) -> None:
    """``--dim`` and ``--int-range`` must name something the model has (a typo is not ignored)."""
    named = sorted({n for s in sig.inputs for d in (s.shape or ()) if (n := dim_name(d)) is not None})
    for key in dims:
        target, colon, axis = key.rpartition(":")
        if colon:
            spec = next((s for s in sig.inputs if s.name == target), None)
            if spec is None or spec.shape is None or int(axis) >= len(spec.shape):
                raise OptionError(f"--dim {key}: the model has no input '{target}' with an axis {axis}; "
                                  f"its inputs are {', '.join(s.name for s in sig.inputs)}")
            if is_fixed_dim(spec.shape[int(axis)]):
                raise OptionError(f"--dim {key}: axis {axis} of '{target}' is fixed at {spec.shape[int(axis)]}")
        elif key not in named:
            raise OptionError(f"--dim {key}: the model has no dimension named '{key}'; its named dims are "
                              f"{', '.join(named) or 'none'} (for an unnamed axis use INPUT:AXIS=VALUE)")
    for key, (lo, hi) in int_ranges.items():
        spec = next((s for s in sig.inputs if s.name == key), None)
        if spec is None:
            raise OptionError(f"--int-range {key}: no such input; the model's inputs are "
                              f"{', '.join(s.name for s in sig.inputs)}")
        if spec.dtype is None or spec.dtype.kind not in "iu":
            raise OptionError(f"--int-range {key}: input '{key}' is {spec.dtype}; --int-range is for integer inputs")
        info = np.iinfo(spec.dtype)
        if lo < info.min or hi - 1 > info.max:
            raise OptionError(f"--int-range {key}={lo}:{hi}: outside the range of {spec.dtype} "
                              f"([{info.min}, {info.max}])")


def _random_array(rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...],
                  low: int, high: int) -> np.ndarray:
    # np.asarray: the generators return numpy scalars for shape (), and a 0-d input stays 0-d
    dtype = spec.dtype
    if dtype.kind == "f":
        return np.asarray(rng.standard_normal(shape), dtype=dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.asarray(rng.integers(max(low, info.min), min(high, int(info.max) + 1), size=shape), dtype=dtype)
    if dtype.kind == "b":
        return np.asarray(rng.random(shape) < 0.5)
    if dtype.kind in "USO":
        return np.full(shape, "a", dtype=object)
    raise DataError(f"input '{spec.name}' is {dtype}; random data cannot generate it: use --data FILE.npz")


# --------------------------------------------------------------------------- entry point


def _is_text(source: str) -> bool:
    """A .txt or .jsonl file: texts for a model that carries a tokenizer."""
    return Path(source).suffix.lower() in (".txt", ".jsonl")


def load_data(
    source: str | os.PathLike | None,
    sig: Signature,
    *,
    dims: dict[str, int] | None = None,
    int_ranges: dict[str, tuple[int, int]] | None = None,
    count: int | None = None,
    seed: int = 0,
    meta: dict[str, str] | None = None,
) -> DataSet:
    """Build the data set named by ``source`` for a model with signature ``sig``.

    ``None`` means ``digits`` when it fits the model and ``random`` otherwise. ``count`` caps
    the number of samples (and sets it for random data). ``meta`` is the model's metadata, which
    text sources (.txt, .jsonl) need for the tokenizer it carries. Batch axes come from ``sig``: apply
    ``--batch-axis`` overrides first (``sig.with_batch_axes(...)``).
    """
    src = str(source) if source is not None else None

    def random() -> DataSet:
        return _random_for(sig, dims or {}, int_ranges or {}, count or DEFAULT_RANDOM_COUNT, seed)

    if src is None:
        try:
            data = _digits_for(sig)
        except DataError:
            data = random()
    elif src == DIGITS:
        data = _digits_for(sig)
    elif src == RANDOM:
        data = random()
    elif _is_text(src):
        from .text import load_text_data  # text data needs the tokenizer module

        data = load_text_data(src, meta or {}, sig)
    elif src.endswith(".npz") or Path(src).exists():
        data = _npz_for(Path(src), sig)
    else:
        raise DataError(
            f"--data {src}: unknown data source; expected 'digits', 'random', a path to an .npz "
            "file, or a .txt/.jsonl text file for a model that carries a tokenizer"
        )
    if count is not None:
        data = data.head(count)
    return data
