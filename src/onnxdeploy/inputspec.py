"""Forward-argument specs for export: ``--input-spec NAME:SHAPE:DTYPE`` and value ranges.

Syntax (one ``--input-spec`` per forward argument, in forward order)::

    NAME:DIMS[:DTYPE]        e.g.  input_ids:batch,seq:int64   mask:batch,seq:bool   x:batch,3,32,32

``DIMS`` are comma-separated; an integer is a fixed size, an identifier is a dynamic axis with
that symbolic name (the same name on several inputs is one shared dimension). ``DTYPE`` is one of
``DTYPES`` (default float32); an empty ``DIMS`` is a 0-d input (``rate::float32``).

``--int-range [NAME=]LOW:HIGH`` bounds the integers drawn for parity (``HIGH`` exclusive), for one
input or for all; without it, an integer input that feeds an ``nn.Embedding`` draws ids below that
embedding's size, and any other integer input draws from ``[0, DEFAULT_INT_HIGH)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OptionError

DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
DEFAULT_DTYPE = "float32"
DEFAULT_INT_HIGH = 10
#: the batch size traced at export: not 1, because torch.export specializes size-1 dimensions
EXPORT_BATCH = 2
#: parity batches: 1, the traced batch, and one never seen at export time
PARITY_BATCHES = (1, EXPORT_BATCH, 7)
#: other symbolic dims: the size traced at export, then their size in each parity round
EXPORT_OTHER_DIM = 5
PARITY_OTHER_DIMS = (3, EXPORT_OTHER_DIM, 8)


@dataclass(frozen=True)
class InputSpec:
    """One forward argument: name, dims (int fixed, str symbolic), numpy dtype name."""

    name: str
    dims: tuple[int | str, ...]
    dtype: str = DEFAULT_DTYPE

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """Parse ``NAME:DIMS[:DTYPE]`` (see the module docstring)."""
        parts = text.split(":")
        hint = ("expected NAME:DIMS[:DTYPE], e.g. input_ids:batch,seq:int64 "
                f"(DTYPE one of {', '.join(DTYPES)})")
        if len(parts) not in (2, 3) or not parts[0].isidentifier():
            raise OptionError(f"--input-spec {text!r}: {hint}")
        dtype = parts[2] if len(parts) == 3 and parts[2] else DEFAULT_DTYPE
        if dtype not in DTYPES:
            raise OptionError(f"--input-spec {text!r}: unknown dtype {dtype!r}; {hint}")
        dims: list[int | str] = []
        for item in filter(None, (p.strip() for p in parts[1].split(","))):
            if item.isdigit() and int(item) > 0:
                dims.append(int(item))
            elif item.isidentifier():
                dims.append(item)
            else:
                raise OptionError(f"--input-spec {text!r}: dim {item!r} is neither a positive "
                                  f"integer nor a name; {hint}")
        return cls(parts[0], tuple(dims), dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        """The export example's shape (axis 0 symbolic dims as batch), for rank and display."""
        return tuple(d if isinstance(d, int) else dim_size(d, None, i == 0)
                     for i, d in enumerate(self.dims))

    def __str__(self) -> str:
        return f"{self.name}:{','.join(map(str, self.dims))}:{self.dtype}"


def dim_size(name: str, round_index: int | None, batchlike: bool) -> int:
    """Size of symbolic dim ``name`` at export (``round_index`` None) or in parity round i."""
    if round_index is None:
        return EXPORT_BATCH if batchlike else EXPORT_OTHER_DIM
    sizes = PARITY_BATCHES if batchlike else PARITY_OTHER_DIMS
    return sizes[round_index % len(sizes)]


def parse_int_ranges(items: list[str] | tuple[str, ...] | None) -> dict[str | None, tuple[int, int]]:
    """Parse ``--int-range [NAME=]LOW:HIGH`` items; key None is the default for every input."""
    out: dict[str | None, tuple[int, int]] = {}
    for text in items or ():
        name, _, rng = text.rpartition("=")
        low, sep, high = rng.partition(":")
        try:
            lo, hi = int(low), int(high)
        except ValueError:
            lo = hi = 0
        if not sep or hi <= lo or (name and not name.isidentifier()):
            raise OptionError(f"--int-range {text!r}: expected [NAME=]LOW:HIGH with integers "
                              "LOW < HIGH (HIGH exclusive), e.g. input_ids=0:30522")
        out[name or None] = (lo, hi)
    return out


def random_array(rng: np.random.Generator, dtype: str, shape: tuple[int, ...],
                 int_range: tuple[int, int]) -> np.ndarray:
    """Values valid for ``dtype``: N(0, 1) floats, integers in ``int_range``, fair booleans."""
    kind = np.dtype(dtype).kind
    if kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "b":
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    lo, hi = max(int_range[0], int(info.min)), min(int_range[1], int(info.max) + 1)
    return rng.integers(lo, hi, size=shape).astype(dtype)
