"""DataSet: named input arrays, optional labels and the batch axis of each input.

Every input has its own batch axis (``DataSet.batch_axes``, from the signature): a voice model's
state ``[2, batch, 128]`` is sliced, tiled and concatenated along axis 1. Inputs without one (a
0-d sample rate, a fixed table) go whole with every batch, and 0-d arrays stay 0-d.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import DataError


class Batched(frozenset):
    """The names of the inputs that carry a batch axis, with the axis of each (``axes``).

    A frozenset so that ``DataSet.batched`` keeps working for callers that test membership or
    rebuild a DataSet from it (``DataSet(name, inputs, labels, data.batched)``): the axes travel
    with the names, so such a rebuild does not silently fall back to axis 0.
    """

    axes: dict[str, int]

    def __new__(cls, axes: dict[str, int]):
        obj = super().__new__(cls, axes)
        obj.axes = dict(axes)
        return obj


@dataclass(frozen=True)
class BatchSizes:
    """Which batch sizes this data and model can be run at, and why the others cannot."""

    usable: tuple[int, ...]
    skipped: dict[int, str] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """One line per skipped size, for a report."""
        return [f"batch {size} skipped: {why}" for size, why in sorted(self.skipped.items())]


@dataclass
class DataSet:
    """Named input arrays plus optional labels, and the batch axis of each input.

    ``batch_axes`` maps every input to the axis that carries samples, or None for inputs that
    go whole with every batch. ``batched`` is the set of inputs that have one (a ``Batched``);
    give either (``batched`` alone means axis 0, unless it is a ``Batched``). ``notes`` says
    what the data can and cannot show (random data proves little).
    """

    name: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    batched: frozenset[str] = frozenset()
    batch_axes: dict[str, int | None] | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.batch_axes is None:
            given = getattr(self.batched, "axes", None)
            self.batch_axes = {
                k: (given.get(k, 0) if given is not None else 0) if k in self.batched else None
                for k in self.inputs
            }
        else:
            self.batch_axes = {k: self.batch_axes.get(k) for k in self.inputs}
        self.batched = Batched({k: a for k, a in self.batch_axes.items() if a is not None})
        counts = {}
        for k, axis in self.batched.axes.items():
            arr = self.inputs[k]
            if not -arr.ndim <= axis < arr.ndim:
                raise DataError(f"input '{k}' has shape {arr.shape}; it has no axis {axis} to batch along")
            counts[k] = arr.shape[axis]
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"'{k}' {n} (axis {self.batched.axes[k]})" for k, n in counts.items())
            raise DataError(f"data '{self.name}': inputs disagree on the number of samples: {detail}")

    def __len__(self) -> int:
        for key, axis in self.batched.axes.items():
            return int(self.inputs[key].shape[axis])
        return 1

    def slice(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The feeds for samples ``start:stop`` (cut along each input's own batch axis)."""
        return {k: _cut(v, self.batch_axes[k], start, stop) for k, v in self.inputs.items()}

    def head(self, count: int) -> DataSet:
        """The first ``count`` samples (labels too), as a DataSet with the same batch axes."""
        if not self.batched or len(self) <= count:
            return self
        labels = None if self.labels is None else self.labels[:count]
        return replace(self, inputs=self.slice(0, count), labels=labels, batched=frozenset())

    def batches(self, size: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """Yield ``(feeds, labels_or_None)`` for consecutive batches of ``size`` samples."""
        for start, stop in self.ranges(size):
            labels = None if self.labels is None else self.labels[start:stop]
            yield self.slice(start, stop), labels

    def ranges(self, size: int) -> list[tuple[int, int]]:
        """The ``(start, stop)`` sample ranges ``batches(size)`` yields (one range when nothing is batched)."""
        n = len(self)
        step = n if not self.batched else max(1, size)
        return [(start, min(n, start + step)) for start in range(0, n, step)]

    def feeds(self, size: int) -> dict[str, np.ndarray]:
        """Feeds of exactly ``size`` samples, repeating the data when it holds fewer.

        Inputs without a batch axis are passed unchanged; with no batched input at all the
        data is returned as it is (the model takes one fixed feed: see ``batch_sizes``).
        """
        if not self.batched:
            return dict(self.inputs)
        idx = np.arange(size) % len(self)
        return {
            k: v if self.batch_axes[k] is None else np.take(v, idx, axis=self.batch_axes[k])
            for k, v in self.inputs.items()
        }

    def concat(self, other: DataSet) -> DataSet:
        """This data followed by ``other`` (same inputs), joined along each input's batch axis."""
        if set(other.inputs) != set(self.inputs):
            raise DataError(f"cannot join data with inputs {sorted(other.inputs)} to {sorted(self.inputs)}")
        inputs = concat_batches([self.inputs, other.inputs], self.batch_axes)
        labels = None
        if self.labels is not None and other.labels is not None:
            labels = np.concatenate([self.labels, other.labels])
        return replace(self, inputs=inputs, labels=labels, batched=frozenset(),
                       notes=tuple(dict.fromkeys(self.notes + other.notes)))

    def batch_sizes(
        self, sizes: Iterable[int], probe: Callable[[dict[str, np.ndarray]], object] | None = None
    ) -> BatchSizes:
        """Which of ``sizes`` the model can take; the others are skipped with the reason.

        ``probe`` runs the model on a feed and raises ``DataError`` when it refuses it (e.g.
        ``lambda f: runtimes.run(session, f)``); it is the reliable test. Without it the rule is
        static: no batch axis anywhere means one fixed feed; an input of rank >= 2 without a
        batch axis but with a dim of 1 (a state exported at batch 1) means batch 1 only.
        """
        usable: list[int] = []
        skipped: dict[int, str] = {}
        fixed_one = [k for k, v in self.inputs.items()
                     if self.batch_axes[k] is None and v.ndim >= 2 and 1 in v.shape]
        for size in dict.fromkeys(int(s) for s in sizes):
            if size != 1 and not self.batched:
                skipped[size] = ("no input has a batch axis (all its dims are fixed): the model "
                                 "takes one fixed-size feed; name one with --batch-axis INPUT=AXIS")
                continue
            if probe is not None:
                try:
                    probe(self.feeds(size))
                except DataError as exc:
                    skipped[size] = f"the model refused {size} samples ({exc})"
                    continue
            elif size != 1 and fixed_one:
                k = fixed_one[0]
                skipped[size] = (f"input '{k}' has no batch axis and shape {self.inputs[k].shape}: "
                                 "the model was exported for batch 1")
                continue
            usable.append(size)
        return BatchSizes(tuple(usable), skipped)


def _cut(arr: np.ndarray, axis: int | None, start: int, stop: int) -> np.ndarray:
    if axis is None:
        return arr
    index = (slice(None),) * (axis % arr.ndim) + (slice(start, stop),)
    return _contiguous(arr[index])


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """C-contiguous without promoting a 0-d array to shape (1,) as ``np.ascontiguousarray`` does."""
    if arr.ndim == 0 or arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr)


def concat_batches(parts: list[dict[str, np.ndarray]], axes: dict[str, int | None]) -> dict[str, np.ndarray]:
    """Join feeds (or outputs) of several batches along each array's batch axis.

    Arrays without a batch axis (``axes[name]`` None or absent) are not per-sample: the first
    part's value is kept.
    """
    out: dict[str, np.ndarray] = {}
    for name in parts[0]:
        values = [p[name] for p in parts]
        axis = axes.get(name)
        out[name] = values[0] if axis is None or len(values) == 1 else np.concatenate(values, axis=axis)
    return out
