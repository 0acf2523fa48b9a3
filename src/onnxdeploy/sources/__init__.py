"""Model sources for export: ``load_source(ref)`` turns a reference into a ``LoadedModel``.

A reference is a local Hugging Face directory (``hf.py``), or a PyTorch built-in name,
``path/to/file.py:fn`` or ``package.module:fn`` (``torch.py``); ``model.py`` holds what both hand
to export (``LoadedModel``, ``ParityRound``). Nothing here imports torch or transformers until a
source is loaded.
"""

from __future__ import annotations

from ..errors import OptionError, require
from .model import LoadedModel, ParityRound
from .torch import describe_args, load_checkpoint, parse_shape

__all__ = ["LoadedModel", "ParityRound", "describe_args", "load_checkpoint", "load_source", "parse_shape"]


def load_source(ref: str, *, checkpoint=None, input_shape=None, input_specs=None,
                example_inputs=None, int_ranges=None, task=None, cache_dir=None, seed: int = 0,
                progress: bool = False) -> LoadedModel:
    """Resolve ``ref`` into a LoadedModel, training a built-in when it is not cached yet.

    ``ref`` may also be a local Hugging Face directory (see ``sources.hf``); ``input_specs``
    (``InputSpec`` or ``NAME:DIMS:DTYPE`` strings) and ``example_inputs`` (an ``.npz`` path)
    describe a factory's forward arguments beyond float ``input_shape``.
    """
    require("torch", "torch")
    from . import hf
    from .torch import load_torch

    if hf.is_hf_dir(ref):
        if checkpoint is not None or input_shape or input_specs or example_inputs:
            raise OptionError(f"{ref}: a Hugging Face directory takes its inputs from its "
                              "tokenizer and its weights from the directory; drop --checkpoint, "
                              "--input-shape, --input-spec and --example-inputs")
        return hf.load_hf(ref, task=task, seed=seed)
    if task is not None:
        raise OptionError(f"--task {task}: only for a Hugging Face model directory; {ref} is not "
                          "one (a directory with config.json or modules.json)")
    return load_torch(ref, checkpoint=checkpoint, input_shape=input_shape, input_specs=input_specs,
                      example_inputs=example_inputs, int_ranges=int_ranges, cache_dir=cache_dir,
                      seed=seed, progress=progress)
