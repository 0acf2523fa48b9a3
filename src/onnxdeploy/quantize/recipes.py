"""Quantization recipes: one set of ORT quantizer settings each, and the candidates ``auto`` tries."""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..data import DataSet
from ..errors import RuntimeFailure, first_line
from .options import QuantizeOptions, supported_op_types
from .prepare import quiet_quantizer, working_directory

CALIBRATION_BATCH = 16
#: ops the dynamic quantizer turns into something other than MatMulInteger (ConvInteger etc.)
_DYNAMIC_NON_MATMUL = frozenset({"Conv", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization"})


@dataclass(frozen=True)
class Recipe:
    """One way to quantize: which quantizer, which ops, which integer types."""

    name: str
    mode: str  # "dynamic" | "static"
    op_types: tuple[str, ...] | None = None
    per_channel: bool = False
    reduce_range: bool = False
    weight_type: str = "int8"
    activation_type: str = "int8"  # static only; dynamic activations are always uint8
    quant_format: str = "qdq"  # static only: "qdq" | "qoperator"
    calibration_method: str = "minmax"
    #: nodes kept float (the partial-int8 search); empty: every supported node is quantized
    nodes_to_exclude: tuple[str, ...] = ()
    #: split the outlier channels of MatMul inputs off into float first (quantize/outliers.py)
    split_outliers: bool = False

    def settings(self) -> dict[str, Any]:
        """The settings as a plain dict for the report (static-only keys left out for dynamic)."""
        out = asdict(self)
        out.pop("name")
        out["op_types"] = list(self.op_types) if self.op_types else "all supported"
        if self.nodes_to_exclude:
            out["kept_float"] = list(out.pop("nodes_to_exclude"))
        else:
            out.pop("nodes_to_exclude")
        if not self.split_outliers:
            out.pop("split_outliers")
        if self.mode == "dynamic":
            for key in ("activation_type", "quant_format", "calibration_method"):
                out.pop(key)
        return out


def _restrict(op_types: tuple[str, ...] | None, mode: str) -> tuple[str, ...] | None:
    if op_types is None:
        return None
    allowed = supported_op_types(mode)
    return tuple(t for t in op_types if t in allowed)


def recipe_for(opts: QuantizeOptions) -> Recipe:
    """The single recipe of ``--mode dynamic`` or ``--mode static`` from the options."""
    return Recipe(
        name=opts.mode,
        mode=opts.mode,
        op_types=opts.op_types,
        per_channel=opts.per_channel,
        reduce_range=opts.reduce_range,
        weight_type=opts.weight_type,
        calibration_method=opts.calibration_method,
    )


def auto_recipes(opts: QuantizeOptions, model_ops: set[str], *, takes_tokens: bool = False
                 ) -> tuple[list[Recipe], list[str]]:
    """The candidates ``--mode auto`` measures, and notes on the ones left out and why.

    ``takes_tokens``: every input is integer (token ids, masks): a transformer, whose static
    candidates are left out unless ``--op-types`` asks for static-only operators.
    """
    base = Recipe(name="", mode="dynamic", per_channel=opts.per_channel,
                  weight_type=opts.weight_type, calibration_method=opts.calibration_method)
    notes: list[str] = []
    out: list[Recipe] = []
    dyn_types = _restrict(opts.op_types, "dynamic")
    dynamic_ops = supported_op_types("dynamic")
    if (dyn_types is None or dyn_types) and not model_ops & dynamic_ops:
        notes.append("dynamic candidates left out: the model has none of the operators the dynamic "
                     f"quantizer handles ({', '.join(sorted(dynamic_ops))})")
    elif dyn_types is None or dyn_types:
        out.append(replace(base, name="dynamic", op_types=dyn_types))
        mm = tuple(t for t in (dyn_types or ("MatMul", "Gemm")) if t in ("MatMul", "Gemm"))
        has_mm = bool(model_ops & {"MatMul", "Gemm"})
        if mm and not has_mm:
            notes.append("dynamic-matmul left out: the model has no MatMul or Gemm")
        elif mm and model_ops & (_DYNAMIC_NON_MATMUL & set(dyn_types or _DYNAMIC_NON_MATMUL)):
            out.append(replace(base, name="dynamic-matmul", op_types=mm))
        elif mm:
            notes.append("dynamic-matmul left out: dynamic on all ops already touches only MatMul/Gemm here")
        if "MatMul" in model_ops and not opts.per_channel and (dyn_types is None or "MatMul" in dyn_types):
            # transformers: per-channel weights keep embeddings close to float at the same speed
            # (FIELD measurement on a MiniLM-class model: min cosine 0.941 per-tensor, 0.987
            # per-channel); reduce_range (7-bit weights) where the CPU has no VNNI, against
            # u8 x s8 saturation in the AVX2 kernels (it cost quality on all-MiniLM-L6-v2: min
            # cosine 0.978 vs 0.985 with 8 bits; docs/quantize.md; the fallback makes up for it)
            from ..environment import cpu_flags

            vnni = cpu_flags()["vnni"]
            out.append(replace(base, name="dynamic-matmul-per-channel", op_types=("MatMul", "Gemm"),
                               per_channel=True, reduce_range=not vnni))
            if not vnni:
                # ...and full 8-bit weights beside it: which costs less quality is the model's
                # (and the kernels') business, so it is measured, not assumed
                out.append(replace(base, name="dynamic-matmul-per-channel-8bit",
                                   op_types=("MatMul", "Gemm"), per_channel=True))
            if opts.split_outliers:
                # ...and with the outlier channels of each MatMul input in float: what keeps a
                # trained transformer's embeddings within the bound in full int8 (all-MiniLM-L6-v2:
                # min cosine 0.9944 against 0.9861, docs/quantize.md). 7 bits without VNNI: with
                # the outliers gone the activations fill the uint8 range and 8 bits saturate.
                out.append(replace(base, name="dynamic-matmul-per-channel-outliers",
                                   op_types=("MatMul", "Gemm"), per_channel=True,
                                   reduce_range=not vnni, split_outliers=True))
    else:
        notes.append("dynamic candidates left out: --op-types names no op the dynamic quantizer handles")
    st_types = _restrict(opts.op_types, "static")
    if takes_tokens and out:
        # Static int8 of a transformer's activations (attention scores, LayerNorm, GELU) with
        # min-max calibration lost the signal on all-MiniLM-L6-v2 (min cosine 0.02-0.04 to
        # float, docs/quantize.md) and cost a third of auto's time; --mode static still runs it.
        notes.append("static candidates left out: a model with token-id inputs (a transformer); "
                     "static int8 of its activations measured far outside any quality bound; "
                     "use --mode static to try it")
    elif st_types is None or st_types:
        static = replace(base, mode="static", op_types=st_types)
        out.append(replace(static, name="static-qdq"))
        # U8S8 with reduce_range is what ORT recommends on x86 without VNNI; QOperator puts the
        # fewest nodes in the graph, which matters at batch 1 on small models.
        out.append(replace(static, name="static-qdq-u8s8", activation_type="uint8",
                           weight_type="int8", reduce_range=True))
        out.append(replace(static, name="static-qoperator-u8s8", activation_type="uint8",
                           weight_type="int8", reduce_range=True, quant_format="qoperator"))
    else:
        notes.append("static candidates left out: --op-types names no op the static quantizer handles")
    return out, notes


def _reader(data: DataSet):
    """A CalibrationDataReader over ``data`` in batches of CALIBRATION_BATCH."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([feeds for feeds, _ in data.batches(CALIBRATION_BATCH)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()


def run_recipe(recipe: Recipe, src: Path, out: Path, calibration: DataSet | None) -> None:
    """Quantize ``src`` into ``out`` with ``recipe``; ORT failures become RuntimeFailure."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    op_types = list(recipe.op_types) if recipe.op_types else None
    try:
        # entropy and percentile calibration print progress to stdout: keep --json output clean
        with quiet_quantizer(), working_directory(out.parent), contextlib.redirect_stdout(io.StringIO()):
            if recipe.mode == "dynamic":
                if op_types and "Gemm" in op_types and "MatMul" not in op_types:
                    op_types.append("MatMul")  # the dynamic quantizer rewrites Gemm to MatMul first
                quantize_dynamic(
                    str(src), str(out), op_types_to_quantize=op_types,
                    per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                    weight_type=qtype[recipe.weight_type],
                    nodes_to_exclude=list(recipe.nodes_to_exclude) or None,
                )
            else:
                if calibration is None:
                    raise RuntimeFailure("static quantization needs calibration data")
                quantize_static(
                    str(src), str(out), _reader(calibration),
                    quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[recipe.quant_format],
                    op_types_to_quantize=op_types,
                    per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                    activation_type=qtype[recipe.activation_type],
                    weight_type=qtype[recipe.weight_type],
                    calibrate_method={
                        "minmax": CalibrationMethod.MinMax,
                        "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile,
                    }[recipe.calibration_method],
                    nodes_to_exclude=list(recipe.nodes_to_exclude) or None,
                )
    except RuntimeFailure:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise RuntimeFailure(
            f"ONNX Runtime's quantizer failed on recipe '{recipe.name}': {type(exc).__name__}: {first}"
        ) from exc
