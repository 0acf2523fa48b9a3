"""Turn request payloads into model feeds, checking every input against the model's signature.

Every problem is an ``ApiError`` carrying an HTTP status and a one-line message that names what
was wrong and what was expected; the app's error handler turns it into ``{"error": ...}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..modelfile import Signature, TensorSpec


class ApiError(Exception):
    """A request the service refuses: an HTTP status, a message and optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def fmt_shape(shape) -> str:
    """A signature shape as text: ``[batch, 64]`` (unknown dims as ``?``)."""
    if shape is None:
        return "[any rank]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


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
    except ValueError as exc:  # ragged nesting on numpy >= 1.24
        raise ApiError(
            400, f"input '{spec.name}': ragged nested lists; expected a rectangular array of shape "
            f"{fmt_shape(spec.shape)}"
        ) from exc
    if raw.dtype == object:
        raise ApiError(
            400, f"input '{spec.name}': ragged or mixed nested lists; expected a rectangular array of "
            f"{_kind_name(spec.dtype)} of shape {fmt_shape(spec.shape)}"
        )
    return _cast(spec, raw)


def _cast(spec: TensorSpec, raw: np.ndarray) -> np.ndarray:
    want = spec.dtype
    got = raw.dtype
    if want.kind == "f":
        if got.kind not in "fiu":
            raise ApiError(400, f"input '{spec.name}': got {_describe(got)}; expected numbers ({want})")
        arr = raw.astype(want, copy=False)
        return arr
    if want.kind in "iu":
        if got.kind == "f":
            if not np.all(np.isfinite(raw)) or not np.all(raw == np.floor(raw)):
                raise ApiError(400, f"input '{spec.name}': got non-integer numbers; expected {want} values")
        elif got.kind not in "iu":
            raise ApiError(400, f"input '{spec.name}': got {_describe(got)}; expected {want} values")
        info = np.iinfo(want)
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise ApiError(400, f"input '{spec.name}': values out of range for {want} "
                                f"(expected {info.min}..{info.max})")
        return raw.astype(want)
    if want.kind == "b":
        if got.kind != "b":
            raise ApiError(400, f"input '{spec.name}': got {_describe(got)}; expected booleans (true/false)")
        return raw
    raise ApiError(400, f"input '{spec.name}' has dtype {want}, which this server cannot take from JSON")


def _describe(dtype: np.dtype) -> str:
    return {"U": "strings", "S": "strings", "b": "booleans", "f": "numbers", "i": "integers",
            "u": "integers"}.get(dtype.kind, str(dtype))


def check_shape(spec: TensorSpec, arr: np.ndarray) -> None:
    """Rank and fixed dims must match; symbolic or unknown dims take any positive size."""
    if spec.shape is None:
        return
    if arr.ndim != len(spec.shape):
        raise ApiError(
            400, f"input '{spec.name}': got shape {list(arr.shape)} (rank {arr.ndim}); "
            f"expected {fmt_shape(spec.shape)} (rank {len(spec.shape)})"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
        if isinstance(want, int) and want != got:
            raise ApiError(
                400, f"input '{spec.name}': got shape {list(arr.shape)}; expected "
                f"{fmt_shape(spec.shape)} (axis {axis} must be {want})"
            )
        if not isinstance(want, int) and got < 1:
            raise ApiError(
                400, f"input '{spec.name}': axis {axis} ('{want or '?'}') is empty; expected at least 1"
            )


def check_feeds(sig: Signature, feeds: Mapping[str, np.ndarray], *, max_batch: int) -> int:
    """Names, shapes, shared symbolic dims and the batch limit; returns the batch size (rows)."""
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
            if isinstance(want, str):
                if want in seen and seen[want][1] != got:
                    other, size = seen[want]
                    raise ApiError(
                        400, f"dimension '{want}' is {size} in input '{other}' but {got} in input "
                        f"'{spec.name}'; expected the same size"
                    )
                seen.setdefault(want, (spec.name, got))
        if spec.has_batch_axis:
            batch = max(batch, int(arr.shape[0]))
    if batch > max_batch:
        raise ApiError(400, f"batch of {batch} rows is too large; expected at most {max_batch} per request")
    return batch


def v2_array(spec: TensorSpec, item: Mapping[str, Any], datatype_dtype: np.dtype) -> np.ndarray:
    """A v2 JSON input (``shape`` + flat or nested ``data``) as an array, shape checked against data."""
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and d >= 0 for d in shape):
        raise ApiError(400, f"input '{spec.name}': 'shape' must be a list of non-negative integers")
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
