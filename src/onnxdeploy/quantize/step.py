"""The quantize step: prepare, quantize with one recipe (or every ``auto`` candidate), measure, choose."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..compare import accuracy, diff_outputs, is_class_scores
from ..data import DIGITS, RANDOM, DataSet, digits_split, load_data
from ..errors import RuntimeFailure
from ..modelfile import (
    copy_model,
    external_data_files,
    load_model,
    model_size,
    op_counts,
    save_model,
    signature,
)
from ..runtime import ab_latency, make_session, run_dataset
from .options import QuantizeOptions, validate
from .prepare import check_not_quantized, is_quantized_op, prepare
from .recipes import Recipe, auto_recipes, recipe_for, run_recipe
from .report import CandidateResult, QuantizeReport

FLOAT = "float"


def quantize_model(
    src: str | os.PathLike, out: str | os.PathLike, options: QuantizeOptions | None = None
) -> QuantizeReport:
    """Quantize ``src`` to int8 into ``out`` and report size, output drift, accuracy and latency."""
    opts = options or QuantizeOptions()
    validate(opts)
    src, out = Path(src), Path(out)
    model = load_model(src)
    check_not_quantized(model, src.name)
    data = load_data(opts.data, signature(model), dims=opts.dims, count=opts.count)
    ops_before = op_counts(model)
    if opts.mode == "auto":
        recipes, skipped = auto_recipes(opts, set(ops_before))
    else:
        recipes, skipped = [recipe_for(opts)], []
    warnings = _input_warnings(opts, data, set(ops_before), recipes)
    calibration = _calibration_set(data, opts.calibration_count) if any(r.mode == "static" for r in recipes) else None

    with tempfile.TemporaryDirectory(prefix="onnxdeploy-quantize-") as tmp:
        work = Path(tmp)
        prepared = prepare(model, work, src.name)
        warnings += prepared.warnings
        float_sess = make_session(src, threads=opts.threads)
        float_out = run_dataset(float_sess, data)
        acc_before = accuracy(float_out, data.labels)
        criterion, tolerance = _criterion(float_out, data, opts)
        results, sessions, paths = [], [], {}
        for recipe in recipes:
            path = work / f"{recipe.name}.onnx"
            result = CandidateResult(recipe.name, recipe.settings())
            try:
                run_recipe(recipe, prepared.path, path, calibration)
            except RuntimeFailure as exc:
                if opts.mode != "auto":
                    raise
                result.reason = str(exc)
                results.append(result)
                continue
            sess = make_session(path, threads=opts.threads)
            _score(result, float_out, run_dataset(sess, data), data, acc_before, criterion, tolerance)
            result.size_bytes = model_size(path)
            result.op_counts = op_counts(load_model(path))
            results.append(result)
            sessions.append((result, sess))
            paths[recipe.name] = path
        before = _measure_latency(float_sess, sessions, data, opts)
        chosen, reason, passed = _choose(opts, results, before, criterion, tolerance, acc_before)
        _explain_candidates(results, before, opts)

        if chosen is None:
            output = None
        elif chosen.name == FLOAT:
            output = copy_model(src, out)
        else:
            keep_external = bool(external_data_files(src))
            output = save_model(load_model(paths[chosen.name]), out, external_data=keep_external or None)

    report = QuantizeReport(
        mode=opts.mode, model=str(src), output=None if output is None else str(output),
        data=data.name, samples=len(data), criterion=criterion, tolerance=tolerance,
        size_before=model_size(src), size_after=None if output is None else model_size(output),
        comparison=_comparison(chosen, acc_before, criterion, tolerance, passed),
        latency_before=before,
        latency_after=dict(chosen.latency_ms) if chosen else {},
        settings=chosen.settings if chosen else {},
        calibration=None if calibration is None else {
            "data": calibration.name, "samples": len(calibration), "method": opts.calibration_method},
        op_counts={"before": ops_before, "after": chosen.op_counts if chosen else {}},
        preprocessing=prepared.notes + skipped,
        candidates=results, chosen=None if chosen is None else chosen.name, reason=reason,
        passed=passed,
    )
    report.warnings = warnings + _result_warnings(report, chosen, before, opts.speed_tolerance)
    return report


# --------------------------------------------------------------------------- data


def _calibration_set(data: DataSet, count: int) -> DataSet:
    """Calibration samples: the digits *training* split for digits (never the evaluated samples)."""
    if data.name == DIGITS and len(data.inputs) == 1:
        (name, arr), = data.inputs.items()
        x_train = digits_split()[0][:count]
        train = x_train.reshape((x_train.shape[0], *arr.shape[1:])).astype(arr.dtype)
        return DataSet(f"{DIGITS} (training split)", {name: train}, None, data.batched)
    if not data.batched or len(data) <= count:
        return data
    return DataSet(data.name, data.slice(0, count), None, data.batched)


def _input_warnings(opts, data: DataSet, model_ops: set[str], recipes: list[Recipe]) -> list[str]:
    warnings = []
    if opts.op_types:
        # Gemm and MatMul stand in for each other: the dynamic quantizer rewrites Gemm to MatMul
        wanted = set(opts.op_types) | ({"MatMul", "Gemm"} if {"MatMul", "Gemm"} & set(opts.op_types) else set())
        if not wanted & model_ops:
            warnings.append(
                f"none of --op-types {','.join(opts.op_types)} occurs in the model "
                f"(it has {', '.join(sorted(model_ops))}); nothing will be quantized"
            )
    if data.labels is None:
        warnings.append(f"data '{data.name}' has no labels: accuracy is judged by agreement with the float model")
    if data.name == RANDOM and any(r.mode == "static" for r in recipes):
        warnings.append(
            "static calibration on random data: activation ranges may not match real inputs; "
            "pass --data with representative samples"
        )
    return warnings


# --------------------------------------------------------------------------- accuracy


def _criterion(float_out: dict[str, np.ndarray], data: DataSet, opts) -> tuple[str, float]:
    """What 'accuracy' means for this model and data, and the tolerance that applies."""
    scores = any(is_class_scores(v) for v in float_out.values())
    if scores and data.labels is not None:
        return "accuracy_drop", opts.max_accuracy_drop
    if scores:
        return "top1_disagreement", opts.max_accuracy_drop
    return "relative_error", opts.max_relative_error


def _relative_error(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    num = den = 0.0
    for x, y in zip(a.values(), b.values()):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind != "f" or x.size == 0:
            num += float(np.count_nonzero(x != y))
            den += float(x.size)
            continue
        num += float(np.abs(x.astype(np.float64) - y).sum())
        den += float(np.abs(x.astype(np.float64)).sum())
    return num / den if den else 0.0


def _score(result, float_out, q_out, data, acc_before, criterion, tolerance) -> None:
    diff = diff_outputs(float_out, q_out)
    result.max_abs_diff = diff.max_abs_diff
    result.mean_abs_diff = diff.mean_abs_diff
    result.top1_agreement = diff.top1_agreement
    result.relative_error = _relative_error(float_out, q_out)
    result.accuracy = accuracy(q_out, data.labels)
    if criterion == "accuracy_drop":
        result.error = float(acc_before - result.accuracy)
    elif criterion == "top1_disagreement":
        result.error = 1.0 - float(diff.top1_agreement)
    else:
        result.error = result.relative_error
    result.admissible = bool(np.isfinite(result.error)) and result.error <= tolerance + 1e-12


def _comparison(chosen, acc_before, criterion, tolerance, passed) -> dict:
    c = chosen or CandidateResult("none", {})
    return {
        "max_abs_diff": c.max_abs_diff,
        "mean_abs_diff": c.mean_abs_diff,
        "relative_error": c.relative_error,
        "top1_agreement": c.top1_agreement,
        "accuracy_before": acc_before,
        "accuracy_after": c.accuracy,
        "criterion": criterion,
        "error": c.error,
        "tolerance": tolerance,
        "passed": passed,
    }


# --------------------------------------------------------------------------- latency and choice


def _measure_latency(float_sess, sessions, data: DataSet, opts) -> dict[str, float]:
    """Float latency by batch key; each candidate's latency goes into its result, measured A/B/A/B."""
    sizes = sorted({1, opts.latency_batch}) if data.batched else [1]
    before: dict[str, float] = {}
    for size in sizes:
        feeds = data.feeds(size)
        times = ab_latency([float_sess] + [s for _, s in sessions], feeds,
                           rounds=opts.latency_rounds, iters=opts.latency_iters)
        before[f"batch_{size}"] = times[0]
        for (result, _), t in zip(sessions, times[1:]):
            result.latency_ms[f"batch_{size}"] = t
    return before


def _fmt_ratios(result: CandidateResult, before: dict[str, float]) -> str:
    return ", ".join(f"{v:.2f}x at {k.replace('_', ' ')}" for k, v in result.latency_ratio(before).items())


def _choose(opts, results, before, criterion, tolerance, acc_before):
    """``(chosen result or None, reason, passed)``; auto takes the fastest admissible candidate."""
    measured = [r for r in results if r.error is not None]
    if opts.mode != "auto":
        r = measured[0]
        ok = r.admissible
        why = "" if ok else f"{criterion.replace('_', ' ')} {r.error:.4f} exceeds the tolerance {tolerance}"
        return r, why, ok
    admissible = [r for r in measured if r.admissible]
    if not admissible:
        return None, (
            f"no candidate kept {criterion.replace('_', ' ')} within {tolerance}; no model written"
        ), False
    best = min(admissible, key=lambda r: r.worst_ratio(before))
    worst = best.worst_ratio(before)
    summary = (
        f"{best.name}, the fastest of {len(admissible)} admissible candidate(s) "
        f"(latency vs float: {_fmt_ratios(best, before)}; ranked by the worst of these), "
        f"{criterion.replace('_', ' ')} {best.error:.4f} <= {tolerance}"
    )
    if worst <= 1 + opts.speed_tolerance:
        return best, f"Chose {summary}.", True
    plain = (
        f"No int8 candidate is at least as fast as the float model at every measured batch size "
        f"(the fastest admissible, {summary})."
    )
    if opts.allow_slower:
        return best, f"{plain} Took {best.name} anyway because slower models were allowed.", True
    keep = CandidateResult(FLOAT, {"quantized": False}, latency_ms=dict(before), max_abs_diff=0.0,
                           mean_abs_diff=0.0, relative_error=0.0, error=0.0, admissible=True,
                           top1_agreement=None if best.top1_agreement is None else 1.0,
                           accuracy=acc_before, reason="the input model, unchanged")
    return keep, f"{plain} Kept the float model unchanged; pass --allow-slower to take {best.name}.", True


def _explain_candidates(results, before, opts) -> None:
    for r in results:
        if r.error is None:
            continue  # the quantizer failed; reason already says so
        parts = ["admissible" if r.admissible else "accuracy outside tolerance"]
        slower = {k: v for k, v in r.latency_ratio(before).items() if v > 1 + opts.speed_tolerance}
        if slower:
            parts.append("slower than float at " + ", ".join(
                f"{k.replace('_', ' ')} ({v:.2f}x)" for k, v in slower.items()))
        if r.op_counts.get("ConvInteger"):
            parts.append("Conv became ConvInteger (slow on CPU)")
        r.reason = "; ".join(parts)


def _result_warnings(report: QuantizeReport, chosen, before, tolerance: float) -> list[str]:
    if chosen is None or chosen.name == FLOAT:
        return []
    warnings = []
    ratios = chosen.latency_ratio(before)
    slower = {k: v for k, v in ratios.items() if v > 1.0 + tolerance}
    conv_int = chosen.op_counts.get("ConvInteger", 0)
    if conv_int and slower:
        warnings.append(
            f"dynamic quantization turned {conv_int} Conv node(s) into ConvInteger, which ONNX Runtime "
            f"runs slower than float on CPU (measured {_fmt_ratios(chosen, before)} of float latency); "
            "use --op-types MatMul,Gemm or --mode static (or --mode auto) for conv nets"
        )
    elif slower:
        warnings.append(
            "the int8 model is slower than float: "
            + ", ".join(f"{v:.2f}x latency at {k.replace('_', ' ')}" for k, v in slower.items())
        )
    if not any(is_quantized_op(op) for op in chosen.op_counts):
        warnings.append("nothing was quantized: the quantizer found no supported operator with constant weights")
    if not report.passed:
        warnings.append(f"{report.criterion.replace('_', ' ')} {chosen.error:.4f} exceeds the tolerance {report.tolerance}")
    return warnings
