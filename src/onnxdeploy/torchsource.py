"""PyTorch model sources for export: a built-in name, ``path/to/file.py:fn`` or ``package.module:fn``.

``load_source`` turns a reference into a ``LoadedModel``: the ``nn.Module`` in eval mode with its
checkpoint applied, the example input shapes (checked by running the model once), input and
output names, and the inputs parity uses (digits for built-ins, seeded random for the rest).
Every way a reference can be wrong raises ``ModelSourceError`` (``ModelLoadError`` for an
unknown built-in) with one line naming the problem.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import zoo
from .data import digits_split
from .errors import ModelSourceError, OptionError, require
from .modelfile import META_SOURCE, classifier_metadata

#: a factory module may set this to the example input shape(s) used when --input-shape is absent
DEFAULT_SHAPE_ATTR = "INPUT_SHAPE"
_CHECKPOINT_WRAPPERS = ("state_dict", "model_state_dict", "model")
_MAX_KEYS_SHOWN = 5


@dataclass
class LoadedModel:
    """A model ready to export: module, shapes, names, and where its test inputs come from."""

    ref: str
    kind: str  # "builtin" or "factory"
    module: Any  # torch.nn.Module in eval mode
    shapes: list[tuple[int, ...]]
    input_names: list[str]
    output_names: list[str]
    train_info: Any = None  # zoo.train.TrainInfo for built-ins
    entry: Any = None  # zoo.ZooEntry for built-ins

    @property
    def data_name(self) -> str:
        """The data parity runs on: ``digits`` for built-ins, ``random`` otherwise."""
        return "digits" if self.entry is not None else "random"

    def example_inputs(self, batch: int, *, seed: int = 0, offset: int = 0) -> tuple:
        """Input tensors with the batch axis set to ``batch`` (other axes as in ``shapes``)."""
        torch = require("torch", "torch")
        if self.entry is not None and len(self.shapes) == 1 and int(np.prod(self.shapes[0][1:])) == 64:
            _, _, x_te, _ = digits_split()
            rows = (np.arange(batch) + offset) % len(x_te)
            arr = np.array(x_te[rows], dtype=np.float32).reshape(batch, *self.shapes[0][1:])
            return (torch.from_numpy(arr),)
        gen = torch.Generator().manual_seed(seed)
        return tuple(torch.randn((batch, *shape[1:]), generator=gen) for shape in self.shapes)

    def metadata(self) -> dict[str, str]:
        """``metadata_props`` for the export: classifier facts for built-ins, the source otherwise."""
        if self.entry is None:
            return {META_SOURCE: self.ref}
        return classifier_metadata(labels=list(self.entry.labels),
                                   input_scaling=dict(self.entry.input_scaling),
                                   source=f"onnxdeploy.zoo:{self.entry.name}")


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``1,1,8,8`` (as given to ``--input-shape``) into positive ints."""
    try:
        dims = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise OptionError(f"--input-shape {text!r}: expected positive integers separated by commas, e.g. 1,1,8,8")
    return dims


def load_source(ref: str, *, checkpoint=None, input_shape=None, cache_dir=None, seed: int = 0,
                progress: bool = False) -> LoadedModel:
    """Resolve ``ref`` into a LoadedModel, training a built-in when it is not cached yet."""
    require("torch", "torch")
    shapes = _normalise_shapes(input_shape)
    if ":" not in ref or ref.startswith(":"):
        if ref.endswith(".py"):
            raise ModelSourceError(f"{ref}: name the factory function after a colon, e.g. {ref}:make_model")
        return _builtin(ref, checkpoint, shapes, cache_dir, seed, progress)
    module, default_shape = _factory(ref)
    if checkpoint is not None:
        load_checkpoint(module, checkpoint, ref=ref)
    if shapes is None:
        shapes = _normalise_shapes(default_shape)
    if shapes is None:
        raise OptionError(
            f"{ref}: --input-shape is required (e.g. --input-shape 1,3,32,32), or set "
            f"{DEFAULT_SHAPE_ATTR} in the factory's module"
        )
    names = _input_names(module, len(shapes))
    outputs = _dry_run(ref, module, shapes)
    out_names = ["output"] if outputs == 1 else [f"output_{i}" for i in range(outputs)]
    return LoadedModel(ref, "factory", module, shapes, names, out_names)


def _normalise_shapes(value) -> list[tuple[int, ...]] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [parse_shape(value)]
    items = list(value)
    if items and all(isinstance(d, (int, np.integer)) for d in items):
        items = [items]
    shapes = []
    for item in items:
        shape = parse_shape(item) if isinstance(item, str) else tuple(int(d) for d in item)
        if not shape or any(d <= 0 for d in shape):
            raise OptionError(f"input shape {shape}: expected positive integers, batch axis first")
        shapes.append(shape)
    return shapes or None


def _builtin(name, checkpoint, shapes, cache_dir, seed, progress) -> LoadedModel:
    entry = zoo.get_entry(name)
    if checkpoint is None:
        module, info = zoo.load_trained(name, cache_dir=cache_dir, seed=seed, progress=progress)
    else:
        from .zoo.train import TrainInfo, count_params, evaluate

        module = entry.build()
        load_checkpoint(module, checkpoint, ref=name)
        module.eval()
        info = TrainInfo(
            name=name, accuracy=evaluate(entry, module), params=count_params(module),
            input_shape=entry.input_shape, input_name=entry.input_name,
            output_name=entry.output_name, labels=entry.labels,
            input_scaling=dict(entry.input_scaling), seed=seed, epochs=0, train_seconds=0.0,
            cached=False, weights_path=str(checkpoint),
        )
    shapes = shapes or [entry.input_shape]
    _dry_run(name, module, shapes)
    return LoadedModel(name, "builtin", module, shapes, [entry.input_name], [entry.output_name],
                       train_info=info, entry=entry)


# --------------------------------------------------------------------------- factories


def _factory(ref: str):
    torch = require("torch", "torch")
    where, _, fn_name = ref.rpartition(":")
    if not fn_name.isidentifier():
        raise ModelSourceError(f"{ref}: {fn_name!r} is not a function name; expected path/to/file.py:fn or package.module:fn")
    module = _import_file(where, ref) if _looks_like_path(where) else _import_module(where, ref)
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise ModelSourceError(f"{ref}: {where} has no attribute {fn_name!r}")
    if not callable(fn):
        raise ModelSourceError(f"{ref}: {fn_name} is a {type(fn).__name__}, not a callable factory")
    try:
        model = fn()
    except Exception as exc:
        raise ModelSourceError(f"{ref}: the factory raised {type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelSourceError(f"{ref}: the factory returned {type(model).__name__}; expected a torch.nn.Module")
    return model.eval(), getattr(module, DEFAULT_SHAPE_ATTR, None)


def _looks_like_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _import_file(where: str, ref: str):
    path = Path(where).expanduser()
    if not path.is_file():
        raise ModelSourceError(f"{ref}: no such file {where}; expected path/to/file.py:fn")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_onnxdeploy_factory_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelSourceError(f"{ref}: {where} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.parent))  # so the file can import its siblings
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if not isinstance(exc, Exception):
            raise
        raise ModelSourceError(f"{ref}: importing {where} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def _import_module(where: str, ref: str):
    try:
        return importlib.import_module(where)
    except Exception as exc:
        raise ModelSourceError(f"{ref}: cannot import {where}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _input_names(module, count: int) -> list[str]:
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = positional[:count]
    names += [f"input_{i}" for i in range(len(names), count)]
    return names


def _dry_run(ref: str, module, shapes: list[tuple[int, ...]]) -> int:
    """Run the model once on the example shapes; return its number of outputs."""
    torch = require("torch", "torch")
    args = tuple(torch.zeros(shape) for shape in shapes)
    shown = " and ".join(",".join(map(str, s)) for s in shapes)
    try:
        with torch.no_grad():
            result = module(*args)
    except Exception as exc:
        raise ModelSourceError(
            f"{ref}: the model rejects input shape {shown}: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    items = result if isinstance(result, (tuple, list)) else [result]
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise ModelSourceError(
            f"{ref}: forward returned {type(result).__name__}; expected a tensor or a tuple of tensors"
        )
    return len(items)


# --------------------------------------------------------------------------- checkpoints


def load_checkpoint(module, path, *, ref: str) -> None:
    """Load a ``state_dict`` (``weights_only=True``) into ``module``; mismatches name the keys."""
    torch = require("torch", "torch")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelSourceError(f"--checkpoint {path}: no such file; expected a state_dict saved with torch.save")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelSourceError(
            f"--checkpoint {path}: cannot be read with torch.load(weights_only=True): {_first_line(exc)}"
        ) from exc
    if isinstance(state, Mapping):
        for key in _CHECKPOINT_WRAPPERS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelSourceError(
            f"--checkpoint {path}: holds a {type(state).__name__}, expected a state_dict (name -> tensor)"
        )
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = [f"{label}: {_some(items)}" for label, items in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatch (checkpoint vs model)", wrong)) if items]
    if problems:
        raise ModelSourceError(f"--checkpoint {path} does not fit {ref}: " + "; ".join(problems))
    module.load_state_dict(state)


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_KEYS_SHOWN])
    more = len(items) - _MAX_KEYS_SHOWN
    return shown + (f" (+{more} more)" if more > 0 else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return line[:300]
