"""PyTorch model sources for export: a built-in name, ``path/to/file.py:fn`` or ``package.module:fn``.

``load_torch`` (``sources.load_source`` hands it every reference that is not a Hugging Face
directory) turns a reference into a ``LoadedModel``: the ``nn.Module`` in eval mode with its
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
from pathlib import Path

import numpy as np

from .. import zoo
from ..errors import ModelSourceError, OptionError, require
from ..inputspec import (
    DEFAULT_INT_HIGH,
    EXPORT_BATCH,
    PARITY_BATCHES,
    InputSpec,
    parse_int_ranges,
)
from .model import LoadedModel, ParityRound

#: a factory module may set this to the example input shape(s) used when --input-shape is absent
DEFAULT_SHAPE_ATTR = "INPUT_SHAPE"
_CHECKPOINT_WRAPPERS = ("state_dict", "model_state_dict", "model")
_MAX_KEYS_SHOWN = 5


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``1,1,8,8`` (as given to ``--input-shape``) into positive ints."""
    try:
        dims = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise OptionError(f"--input-shape {text!r}: expected positive integers separated by commas, e.g. 1,1,8,8")
    return dims


def load_torch(ref: str, *, checkpoint=None, input_shape=None, input_specs=None,
               example_inputs=None, int_ranges=None, cache_dir=None, seed: int = 0,
               progress: bool = False) -> LoadedModel:
    """A built-in name, ``path/to/file.py:fn`` or ``package.module:fn`` as a LoadedModel (see
    ``sources.load_source``, which hands every reference that is not a Hugging Face directory here)."""
    given = sum(bool(x) for x in (input_shape, input_specs, example_inputs))
    if given > 1:
        raise OptionError("give one of --input-shape, --input-spec, --example-inputs")
    shapes = _normalise_shapes(input_shape)
    ranges = int_ranges if isinstance(int_ranges, dict) else parse_int_ranges(int_ranges)
    if ":" not in ref or ref.startswith(":"):
        if ref.endswith(".py"):
            raise ModelSourceError(f"{ref}: name the factory function after a colon, e.g. {ref}:make_model")
        if input_specs or example_inputs:
            raise OptionError(f"{ref}: a built-in takes --input-shape only")
        return _builtin(ref, checkpoint, shapes, cache_dir, seed, progress)
    module, default_shape = _factory(ref)
    if checkpoint is not None:
        load_checkpoint(module, checkpoint, ref=ref)
    example = None
    if input_specs:
        specs = [s if isinstance(s, InputSpec) else InputSpec.parse(s) for s in input_specs]
        dupes = sorted({s.name for s in specs if [t.name for t in specs].count(s.name) > 1})
        if dupes:
            raise OptionError(f"--input-spec names {', '.join(dupes)} more than once")
    elif example_inputs:
        specs, example, full = _npz_specs(module, example_inputs)
    else:
        if shapes is None:
            shapes = _normalise_shapes(default_shape)
        if shapes is None:
            raise OptionError(
                f"{ref}: --input-shape is required (e.g. --input-shape 1,3,32,32), or "
                f"--input-spec NAME:DIMS:DTYPE for integer or several inputs, or set "
                f"{DEFAULT_SHAPE_ATTR} in the factory's module"
            )
        names = _input_names(module, len(shapes))
        specs = [InputSpec(n, ("batch", *shape[1:]), "float32") for n, shape in zip(names, shapes)]
    unknown = sorted(set(k for k in ranges if k is not None) - {s.name for s in specs})
    if unknown:
        raise OptionError(f"--int-range names {', '.join(unknown)}, not an input; inputs: "
                          + ", ".join(s.name for s in specs))
    src = LoadedModel(ref, "factory", module, specs, [])
    if example is not None:
        src.example = tuple(example)
        src.rounds = _npz_rounds(full)
        src.data_label = f"example inputs {Path(example_inputs).name}"
    embedding_high = _dry_run_specs(src, shape_only=shapes is not None, shapes=shapes)
    for spec in specs:
        if np.dtype(spec.dtype).kind in "iu":
            src.int_ranges[spec.name] = ranges.get(spec.name) or (
                (0, embedding_high[spec.name]) if spec.name in embedding_high
                else ranges.get(None, (0, DEFAULT_INT_HIGH)))
    return src


def _npz_specs(module, path) -> tuple[list[InputSpec], list, list[np.ndarray]]:
    """Specs and the export example from an ``.npz`` of forward arguments (batch axis first)."""
    torch = require("torch", "torch")
    p = Path(path).expanduser()
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise OptionError(f"--example-inputs {path}: cannot be read as .npz: {_first_line(exc)}") from exc
    names = _input_names(module, 64)
    given = [n for n in names if n in arrays]
    if not given and all(k.startswith("arr_") for k in arrays):
        given = names[: len(arrays)]
        arrays = {n: arrays[f"arr_{i}"] for i, n in enumerate(given)}
    extra = sorted(set(arrays) - set(given))
    if not given or extra:
        raise OptionError(f"--example-inputs {path}: arrays {', '.join(sorted(arrays)) or 'none'}; "
                          f"expected the forward's argument names ({', '.join(names[:8])})")
    specs, example, full = [], [], []
    for name in given:
        arr = np.ascontiguousarray(arrays[name])
        if arr.ndim == 0 or arr.shape[0] < 1 or str(arr.dtype) not in _NPZ_DTYPES:
            raise OptionError(f"--example-inputs {path}: {name!r} is {arr.dtype} {arr.shape}; "
                              "expected at least one sample along axis 0 of a numeric or bool array")
        specs.append(InputSpec(name, ("batch", *arr.shape[1:]), str(arr.dtype)))
        rows = np.arange(EXPORT_BATCH) % arr.shape[0]
        example.append(torch.from_numpy(np.ascontiguousarray(arr[rows])))
        full.append(arr)
    return specs, example, full


_NPZ_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


def _npz_rounds(full: list[np.ndarray]) -> list[ParityRound]:
    """Parity on the user's own values: their rows resampled at each parity batch size."""
    torch = require("torch", "torch")
    out = []
    for i, batch in enumerate(PARITY_BATCHES):
        args = []
        for arr in full:
            rows = (np.arange(batch) + i) % arr.shape[0]
            args.append(torch.from_numpy(np.ascontiguousarray(arr[rows])))
        out.append(ParityRound(str(batch), batch, tuple(args)))
    return out


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
        from ..zoo.train import TrainInfo, count_params, evaluate

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
    specs = [InputSpec(entry.input_name, ("batch", *shapes[0][1:]), "float32")]
    src = LoadedModel(name, "builtin", module, specs, [entry.output_name], train_info=info, entry=entry)
    _dry_run_specs(src, shape_only=True, shapes=shapes)
    src.output_names = [entry.output_name]
    return src


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


def _dry_run_specs(src: LoadedModel, *, shape_only: bool, shapes=None) -> dict[str, int]:
    """Run the model once on zeros of the specs' dtypes; set its output names.

    Returns, for integer inputs handed straight to an ``nn.Embedding``, that embedding's size
    (found by pre-hooks matching the argument tensors), so parity draws valid token ids.
    """
    torch = require("torch", "torch")
    shapes = shapes or [spec.shape for spec in src.specs]
    args = tuple(torch.zeros(shape, dtype=_torch_dtype(spec.dtype)) for shape, spec in zip(shapes, src.specs))
    by_ptr = {a.data_ptr(): spec.name for a, spec in zip(args, src.specs) if a.numel()}
    found: dict[str, int] = {}

    def hook(mod, inputs):
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].data_ptr() in by_ptr:
            name = by_ptr[inputs[0].data_ptr()]
            found[name] = min(found.get(name, mod.num_embeddings), mod.num_embeddings)

    embeddings = [m for m in src.module.modules() if isinstance(m, torch.nn.Embedding)]
    handles = [m.register_forward_pre_hook(hook) for m in embeddings]
    try:
        with torch.no_grad():
            result = src.module(*args)
    except Exception as exc:
        raise ModelSourceError(_rejects(src, shapes if shape_only else None, exc, bool(embeddings))) from exc
    finally:
        for h in handles:
            h.remove()
    items = result if isinstance(result, (tuple, list)) else [result]
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise ModelSourceError(
            f"{src.ref}: forward returned {type(result).__name__}; expected a tensor or a tuple of tensors"
        )
    if not src.output_names:
        src.output_names = ["output"] if len(items) == 1 else [f"output_{i}" for i in range(len(items))]
    return found


def _rejects(src: LoadedModel, shapes, exc: Exception, has_embedding: bool) -> str:
    why = f"{type(exc).__name__}: {_first_line(exc)}"
    if shapes is not None:
        shown = " and ".join(",".join(map(str, s)) for s in shapes)
        hint = ("; its forward looks like it takes token ids (it holds an nn.Embedding): "
                "describe them with --input-spec NAME:DIMS:DTYPE, e.g. input_ids:batch,seq:int64"
                if has_embedding else "")
        return f"{src.ref}: the model rejects input shape {shown} (float32): {why}{hint}"
    return f"{src.ref}: forward raised {why} on {describe_args(src.specs)}"


def describe_args(specs: list[InputSpec]) -> str:
    """``input_ids int64 [2, 5], mask bool [2, 5]``: what a forward was given, for messages."""
    return ", ".join(f"{s.name} {s.dtype} [{', '.join(map(str, s.shape))}]" for s in specs)


def _torch_dtype(name: str):
    torch = require("torch", "torch")
    return getattr(torch, name)


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
