"""What a model source hands to export: ``LoadedModel`` (module, input specs, names, the inputs
parity runs on) and ``ParityRound`` (one set of parity inputs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import digits_split
from ..errors import require
from ..inputspec import (
    DEFAULT_INT_HIGH,
    EXPORT_BATCH,
    PARITY_BATCHES,
    InputSpec,
    dim_size,
    random_array,
)
from ..modelfile import META_SOURCE, classifier_metadata


@dataclass
class ParityRound:
    """One set of parity inputs: a label for the report, its batch size, the forward arguments."""

    label: str
    batch: int
    args: tuple


@dataclass
class LoadedModel:
    """A model ready to export: module, input specs, names, and where its test inputs come from."""

    ref: str
    kind: str  # "builtin", "factory" or "huggingface"
    module: Any  # torch.nn.Module in eval mode
    specs: list[InputSpec]
    output_names: list[str]
    train_info: Any = None  # zoo.train.TrainInfo for built-ins
    entry: Any = None  # zoo.ZooEntry for built-ins
    #: integer inputs: [low, high) of the values parity draws
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: output name -> {axis: dim name}, for the TorchScript exporter (dynamo infers them)
    output_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    #: symbolic dim -> largest size it may take (e.g. a sequence bounded by position embeddings)
    dim_max: dict[str, int] = field(default_factory=dict)
    #: a source's own inputs (a user's .npz, tokenized text): export example and parity rounds
    example: tuple | None = None
    rounds: list[ParityRound] | None = None
    data_label: str | None = None
    extra_metadata: dict[str, str] = field(default_factory=dict)
    #: facts a source adds to the export report (task, pooling, tokenizer check ...)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Example shapes (symbolic dims at their export size)."""
        return [s.shape for s in self.specs]

    @property
    def batch_dims(self) -> set[str]:
        """Symbolic dims that sit on axis 0 of some input: they take the batch sizes."""
        return {s.dims[0] for s in self.specs if s.dims and isinstance(s.dims[0], str)}

    @property
    def data_name(self) -> str:
        """The data parity runs on: ``digits`` for built-ins, ``random`` for drawn inputs."""
        if self.data_label:
            return self.data_label
        return "digits" if self.entry is not None else "random"

    def _shape(self, spec: InputSpec, round_index: int | None) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else dim_size(d, round_index, d in self.batch_dims)
                     for d in spec.dims)

    def _digits(self) -> bool:
        return self.entry is not None and len(self.shapes) == 1 and int(np.prod(self.shapes[0][1:])) == 64

    def example_inputs(self, batch: int, *, seed: int = 0, offset: int = 0) -> tuple:
        """Input tensors with every batch dim set to ``batch`` (other dims at their export size)."""
        torch = require("torch", "torch")
        if self._digits():
            _, _, x_te, _ = digits_split()
            rows = (np.arange(batch) + offset) % len(x_te)
            arr = np.array(x_te[rows], dtype=np.float32).reshape(batch, *self.shapes[0][1:])
            return (torch.from_numpy(arr),)
        rng = np.random.default_rng(seed)
        arrays = []
        for spec in self.specs:
            shape = tuple(batch if d in self.batch_dims else s
                          for d, s in zip(spec.dims, self._shape(spec, None)))
            arrays.append(self._draw(rng, spec, shape))
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)

    def _draw(self, rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...]) -> np.ndarray:
        arr = random_array(rng, spec.dtype, shape, self.int_ranges.get(spec.name, (0, DEFAULT_INT_HIGH)))
        return arr.reshape(shape)  # keeps 0-d inputs 0-d

    def export_example(self, seed: int = 0) -> tuple:
        """The forward arguments the exporter traces with."""
        if self.example is not None:
            return self.example
        return self.example_inputs(EXPORT_BATCH, seed=seed)

    def parity_rounds(self, seed: int = 0) -> list[ParityRound]:
        """Parity inputs: batch 1, the traced batch and one never traced; other dims vary too."""
        if self.rounds is not None:
            return self.rounds
        torch = require("torch", "torch")
        out = []
        for i, batch in enumerate(PARITY_BATCHES):
            if self._digits():
                args = self.example_inputs(batch, seed=seed + 1 + i, offset=sum(PARITY_BATCHES[:i]))
                out.append(ParityRound(str(batch), batch, args))
                continue
            rng = np.random.default_rng(seed + 1 + i)
            arrays = [self._draw(rng, spec, self._shape(spec, i)) for spec in self.specs]
            args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
            sizes = {d: dim_size(d, i, d in self.batch_dims) for s in self.specs for d in s.dims
                     if isinstance(d, str)}
            only_batch = set(sizes) <= self.batch_dims
            label = str(batch) if only_batch else ",".join(f"{k}={v}" for k, v in sizes.items())
            if self.batch_dims:
                actual = sizes[next(iter(self.batch_dims))]
            else:  # no dynamic batch: the rounds differ in values only
                actual = int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 1
                label = f"round {i + 1}"
            out.append(ParityRound(label, actual, args))
        return out

    def metadata(self) -> dict[str, str]:
        """``metadata_props`` for the export: classifier facts for built-ins, the source otherwise."""
        if self.entry is None:
            return {META_SOURCE: self.ref, **self.extra_metadata}
        return classifier_metadata(labels=list(self.entry.labels),
                                   input_scaling=dict(self.entry.input_scaling),
                                   source=f"onnxdeploy.zoo:{self.entry.name}")
