"""Wire formats of the Open Inference Protocol, shared by the server (serve/) and the load
generator (bench/): the v2 datatypes and the protocol's gRPC messages (``wire/proto``).

Both steps speak the protocol, and neither may import the other; what they share lives here,
below them, and imports nothing of ours.
"""

from __future__ import annotations

import numpy as np

V2_TO_NUMPY = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
NUMPY_TO_V2 = {v: k for k, v in V2_TO_NUMPY.items()}


def v2_datatype(dtype: np.dtype | None) -> str:
    """The v2 datatype name of a numpy dtype (``BYTES`` for strings and unknowns)."""
    return NUMPY_TO_V2.get(np.dtype(dtype), "BYTES") if dtype is not None else "BYTES"


__all__ = ["NUMPY_TO_V2", "V2_TO_NUMPY", "v2_datatype"]
