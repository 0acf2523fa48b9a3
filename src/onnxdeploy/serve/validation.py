"""Turn request payloads into model feeds, checking every input against the model's signature.

Every problem is an ``ApiError`` carrying an HTTP status and a one-line message that names what
was wrong and what was expected; the app's error handler turns it into ``{"error": ...}``.

Dimensions are read as the converters write them (``modelfile``): a positive int is fixed; -1,
0, ``'?'`` and empty dims are dynamic and unrelated to each other; a named dim (``batch``,
``seq``) must have the same size wherever it appears. The batch is counted along each input's
own ``batch_axis`` (``state [2, batch, 128]`` has it at 1; a 0-d input has none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..modelfile import Signature, TensorSpec, dim_name, fmt_shape, is_fixed_dim

#: JSON text per value, worst case in practice: "-0.12345678901234568," (float64 repr + comma)
JSON_BYTES_PER_VALUE = 24
#: per-input allowance for names, brackets and the v2 fields around the data
INPUT_OVERHEAD_BYTES = 1024
#: the smallest derived cap (a body this size decodes to well under a megabyte)
MIN_BODY_BYTES = 64 * 1024
#: the cap when the signature cannot bound a request (a dynamic non-batch dim, unknown rank)
FALLBACK_BODY_BYTES = 8 * 2**20
#: the most values a v2 shape may describe (numpy refuses shapes past ~2**63 bytes, even empty
#: ones; no body a server takes comes near this)
MAX_TENSOR_VALUES = 2**31 - 1


class ApiError(Exception):
    """A request the service refuses: an HTTP status, a message and optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def max_values(spec: TensorSpec, max_batch: int) -> int | None:
    """The most values one request may send for this input, or None when dims leave it open."""
    if spec.shape is None or spec.dtype is None:
        return None
    count = 1
    for axis, dim in enumerate(spec.shape):
        if axis == spec.batch_axis:
            count *= max_batch
        elif is_fixed_dim(dim):
            count *= int(dim)
        else:
            return None
    return count


def body_limit(sig: Signature, max_batch: int) -> int:
    """The default body cap: what ``max_batch`` rows of every input take as JSON, with room.

    JSON is the larger encoding (binary tensors take ``itemsize`` bytes a value), so the cap
    admits any valid request in either. A signature with a dynamic dim other than the batch
    cannot bound a request; then the cap is ``FALLBACK_BODY_BYTES`` (set ``--max-body-mb``).
    """
    total = 0
    for spec in sig.inputs:
        values = max_values(spec, max_batch)
        if values is None:
            return FALLBACK_BODY_BYTES
        total += values * max(JSON_BYTES_PER_VALUE, spec.dtype.itemsize) + INPUT_OVERHEAD_BYTES
    return max(MIN_BODY_BYTES, total)


def _kind_name(dtype: np.dtype) -> str:
    return {"f": "numbers", "i": "integers", "u": "non-negative integers", "b": "booleans"}.get(
        dtype.kind, str(dtype)
    )


def array_from_json(spec: TensorSpec, value: Any) -> np.ndarray:
    """A nested JSON list (or scalar) as an array of the input's dtype, or a 400 saying why not."""
    if spec.dtype is None:
        raise ApiError(400, f"input '{spec.name}' is a {spec.kind}; only tensor inputs can be served")
    try:
        raw = np.asarray(value)
    except (ValueError, OverflowError) as exc:  # ragged nesting on numpy >= 1.24; huge ints
        if isinstance(exc, OverflowError):
            raise ApiError(400, f"input '{spec.name}': an integer out of range; expected "
                                f"{_kind_name(spec.dtype)} that fit {spec.dtype}") from exc
        raise ApiError(
            400, f"input '{spec.name}': ragged nested lists; expected a rectangular array of shape "
            f"{fmt_shape(spec.shape)}"
        ) from exc
    if raw.dtype == object:
        raise ApiError(
            400, f"input '{spec.name}': ragged or mixed nested lists (or integers beyond 64 bits); "
            f"expected a rectangular array of {_kind_name(spec.dtype)} of shape {fmt_shape(spec.shape)}"
        )
    return cast(spec.name, spec.dtype, raw)


def cast(name: str, want: np.dtype, raw: np.ndarray) -> np.ndarray:
    """``raw`` as ``want``, refusing what would change values: overflow, fractions, NaN/inf."""
    got = raw.dtype
    if want.kind == "f":
        if got.kind not in "fiu":
            raise ApiError(400, f"input '{name}': got {_describe(got)}; expected numbers ({want})")
        with np.errstate(over="ignore", invalid="ignore"):
            arr = raw.astype(want, copy=False)
        check_finite(name, arr, raw)
        return arr
    if want.kind in "iu":
        if got.kind == "f":
            if not np.all(np.isfinite(raw)) or not np.all(raw == np.floor(raw)):
                raise ApiError(400, f"input '{name}': got non-integer numbers; expected {want} values")
        elif got.kind not in "iu":
            raise ApiError(400, f"input '{name}': got {_describe(got)}; expected {want} values")
        info = np.iinfo(want)
        # as Python numbers, compared exactly: numpy compares a float64 2**63 with int64's max
        # as floats, found it equal, and the cast wrapped it to -2**63
        if raw.size and (raw.min().item() < info.min or raw.max().item() > info.max):
            raise ApiError(400, f"input '{name}': values out of range for {want} "
                                f"(expected {info.min}..{info.max})")
        return raw.astype(want, copy=False)  # int64 JSON for an int64 input: no second copy
    if want.kind == "b":
        if got.kind != "b":
            raise ApiError(400, f"input '{name}': got {_describe(got)}; expected booleans (true/false)")
        return raw
    raise ApiError(400, f"input '{name}' has dtype {want}, which this server cannot take from JSON")


def check_finite(name: str, arr: np.ndarray, source: np.ndarray | None = None) -> None:
    """A 400 for NaN or infinity, or for values too large for the dtype (1e39 in float32)."""
    if arr.dtype.kind != "f" or not arr.size or np.isfinite(arr).all():
        return
    if source is not None and source.dtype.kind == "f" and np.isfinite(source).all():
        limit = float(np.finfo(arr.dtype).max)
        raise ApiError(400, f"input '{name}': values out of range for {arr.dtype} (expected "
                            f"magnitudes up to {limit:.4g})")
    raise ApiError(400, f"input '{name}': NaN or infinite values; expected finite {arr.dtype} "
                        "numbers")


def _describe(dtype: np.dtype) -> str:
    return {"U": "strings", "S": "strings", "b": "booleans", "f": "numbers", "i": "integers",
            "u": "integers"}.get(dtype.kind, str(dtype))


def check_shape(spec: TensorSpec, arr: np.ndarray) -> None:
    """Rank and fixed dims must match; dynamic dims take any size (the batch axis at least 1)."""
    check_dims(spec, arr.shape)


def check_dims(spec: TensorSpec, shape) -> None:
    """``check_shape`` on a shape alone (before any array is made of it)."""
    if spec.shape is None:
        return
    got = [int(d) for d in shape]
    if len(got) != len(spec.shape):
        raise ApiError(
            400, f"input '{spec.name}': got shape {got} (rank {len(got)}); "
            f"expected {fmt_shape(spec.shape)} (rank {len(spec.shape)})"
        )
    for axis, (want, size) in enumerate(zip(spec.shape, got)):
        if is_fixed_dim(want):
            if int(want) != size:
                raise ApiError(
                    400, f"input '{spec.name}': got shape {got}; expected "
                    f"{fmt_shape(spec.shape)} (axis {axis} must be {want})"
                )
        elif axis == spec.batch_axis and size < 1:
            raise ApiError(
                400, f"input '{spec.name}': batch axis {axis} is empty; expected at least 1 row"
            )


def check_feeds(sig: Signature, feeds: Mapping[str, np.ndarray], *, max_batch: int) -> int:
    """Names, shapes, shared named dims and the batch limit; returns the batch size (rows)."""
    expected = [s.name for s in sig.inputs]
    unknown = [n for n in feeds if n not in expected]
    if unknown:
        raise ApiError(400, f"unknown input {unknown[0]!r}; expected inputs: {', '.join(expected)}")
    missing = [n for n in expected if n not in feeds]
    if missing:
        raise ApiError(400, f"missing input {missing[0]!r}; expected inputs: {', '.join(expected)}")
    seen: dict[str, tuple[str, int]] = {}
    batch = 1
    for spec in sig.inputs:
        arr = feeds[spec.name]
        check_shape(spec, arr)
        if spec.shape is None:
            continue
        for want, got in zip(spec.shape, arr.shape):
            name = dim_name(want)
            if name is None:
                continue  # fixed (checked above) or unnamed: no constraint across inputs
            if name in seen and seen[name][1] != got:
                other, size = seen[name]
                raise ApiError(
                    400, f"dimension '{name}' is {size} in input '{other}' but {got} in input "
                    f"'{spec.name}'; expected the same size"
                )
            seen.setdefault(name, (spec.name, got))
        if spec.batch_axis is not None and spec.batch_axis < arr.ndim:
            batch = max(batch, int(arr.shape[spec.batch_axis]))
    if batch > max_batch:
        raise ApiError(400, f"batch of {batch} rows is too large; expected at most {max_batch} per request")
    return batch


def check_v2_shape(spec: TensorSpec, shape: Any) -> list[int]:
    """A v2 ``shape`` the input can take, checked before any array is made of it: non-negative
    integers, the input's rank and fixed dims, and a number of values an array can hold (a
    shape like ``[0, 2**63 - 1]`` describes no data, yet no array can have it)."""
    if not is_shape(shape):
        raise ApiError(400, f"input '{spec.name}': 'shape' must be a list of non-negative integers")
    check_dims(spec, shape)
    values = math.prod(d for d in shape if d)
    if values > MAX_TENSOR_VALUES or any(d > MAX_TENSOR_VALUES for d in shape):
        raise ApiError(400, f"input '{spec.name}': shape {shape} is too large; expected at most "
                            f"{MAX_TENSOR_VALUES} values along its non-empty axes")
    return shape


def is_shape(shape: Any) -> bool:
    """A v2 shape: a list of non-negative ints (booleans are not ints here)."""
    return isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)


def v2_array(spec: TensorSpec, item: Mapping[str, Any], datatype_dtype: np.dtype) -> np.ndarray:
    """A v2 JSON input (``shape`` + flat or nested ``data``) as an array, shape checked against data."""
    shape = check_v2_shape(spec, item.get("shape"))
    if "data" not in item:
        raise ApiError(400, f"input '{spec.name}': no 'data'; expected 'data' or binary_data_size")
    flat = array_from_json(
        TensorSpec(spec.name, datatype_dtype, None), item["data"]
    ).reshape(-1)
    count = math.prod(shape)
    if flat.size != count:
        raise ApiError(
            400, f"input '{spec.name}': 'data' has {flat.size} values but shape {shape} needs {count}"
        )
    return flat.reshape(shape)
