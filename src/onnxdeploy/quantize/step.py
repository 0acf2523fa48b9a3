"""The quantize step: prepare, quantize with one recipe (or every ``auto`` candidate), measure, choose.

Measuring goes through the measurement stage (``measure/``): the float model's reference is built
once (or handed in by the pipeline), every candidate's outputs are judged against it by output
kind, and all candidates are timed in one interleaved measurement with an A/A control, so a
difference within the noise is called equal and never decides anything.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data import DIGITS, RANDOM, DataSet, digits_split
from ..environment import environment
from ..errors import DataError, ModelLoadError, OptionError, RuntimeFailure, first_line
from ..judge import inprocess
from ..judge.choose import choose, ship_admissible
from ..measure import Measurement, Reference, Variant, build_reference
from ..measure.latency import CONTROL, REFERENCE
from ..measure.numeric import half_min_cosines
from ..measure.variants import evaluate, reference_result, time_variants
from ..modelfile import copy_model, external_data_files, load_model, op_counts, save_model
from . import fallback as mixed
from . import nncf_int8, outliers, partial
from .options import CALIBRATION_METHODS, QuantizeOptions, supported_op_types, validate
from .prepare import check_not_quantized, prepare
from .recipes import Recipe, auto_recipes, recipe_for, run_recipe
from .report import CandidateResult, QuantizeReport

FLOAT = "float"
#: simplest first: ties within the noise go to the earlier one (dynamic < static QDQ < QOperator)
SIMPLICITY = ("dynamic", "dynamic-matmul", "dynamic-matmul-per-channel",
              "dynamic-matmul-per-channel-8bit", "dynamic-matmul-per-channel-outliers",
              "static", "static-qdq",
              "static-qdq-u8s8", "static-qoperator-u8s8")
#: at most this many candidates (one a mode) are searched for nodes to keep float
MAX_BASES = 2
#: no new calibration-grid try starts after this share of --search-budget
GRID_SHARE = 0.4


def quantize_model(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: QuantizeOptions | None = None,
    *,
    reference: Reference | None = None,
    prebuilt: dict[str, Path] | None = None,
    extra: list[Variant] | None = None,
    measure_latency: bool = True,
) -> QuantizeReport:
    """Quantize ``src`` to int8 into ``out`` and report size, output drift, accuracy and latency.

    ``reference`` is the float model's reference when the caller has one (the pipeline);
    ``prebuilt`` maps a recipe name to a model already built with it (auto's dynamic candidate
    is the dynamic artifact, not a rebuild); ``extra`` variants are timed in the same
    measurement (the pipeline's optimized model), so every variant's latency is one figure.
    """
    opts = options or QuantizeOptions()
    validate(opts)
    src, out = Path(src), Path(out)
    model = load_model(src)
    check_not_quantized(model, src.name)
    ref = reference or build_reference(src, data=opts.data, dims=opts.dims, count=opts.count,
                                       threads=opts.threads, task=opts.task,
                                       latency_batch=opts.latency_batch, batch_axes=opts.batch_axes,
                                       int_ranges=opts.int_ranges)
    data = ref.data
    ops_before = op_counts(model)
    _check_quantizable(src.name, ops_before, opts)
    takes_tokens = bool(ref.signature.inputs) and all(
        s.dtype is not None and np.dtype(s.dtype).kind in "iub" for s in ref.signature.inputs)
    nncf_recipe = None
    if opts.mode == "auto":
        recipes, skipped = auto_recipes(opts, set(ops_before), takes_tokens=takes_tokens)
        # OpenVINO int8 through NNCF, when the openvino extra is installed (quantize/nncf_int8.py)
        if opts.runtimes:
            missing = nncf_int8.unavailable()
            if opts.op_types:
                skipped.append(f"{nncf_int8.NAME} left out: --op-types restricts ONNX Runtime's quantizer; "
                               "NNCF chooses the operators it quantizes itself")
            elif missing:
                skipped.append(missing)
            else:
                nncf_recipe = nncf_int8.recipe()
    else:
        recipes, skipped = [recipe_for(opts)], []
    warnings = _input_warnings(opts, data, set(ops_before), recipes)
    calibration = (_calibration_set(data, opts.calibration_count)
                   if nncf_recipe is not None or any(r.mode == "static" for r in recipes) else None)
    criterion, tolerance = _criterion(ref, opts)
    float_variant = Variant.of(REFERENCE, src, parent=None, produced_by={"step": "input"})
    layers = {n.name: partial.source_layer(n) for n in model.graph.node}
    state = _StateCheck(ref, opts)
    if state.pairs:
        note = state.note()
        state._reference()
        if state.pairs:
            warnings.append(note)
            if calibration is not None:
                calibration = state.calibration(calibration)
        else:
            warnings.append(f"{note.split(';')[0]}; not chained: the float model refused its own state "
                            f"fed back ({state.refused}); judged one step like any output")

    with tempfile.TemporaryDirectory(prefix="onnxdeploy-quantize-") as tmp:
        work = Path(tmp)
        needs = _needs_build(recipes, prebuilt) or nncf_recipe is not None
        prepared = prepare(model, work, src.name) if needs else None
        if prepared is not None:
            warnings += prepared.warnings
        results: list[CandidateResult] = []
        sessions, measured, paths = {}, {REFERENCE: reference_result(ref, float_variant)}, {}
        for recipe in recipes:
            result = CandidateResult(recipe.name, recipe.settings())
            results.append(result)
            path = (prebuilt or {}).get(recipe.name)
            try:
                if path is None:
                    path = work / f"{recipe.name}.onnx"
                    source = prepared.path
                    if recipe.split_outliers:
                        source, recipe = _split(recipe, result, prepared.path, data, work, ref.threads,
                                                layers)
                        if source is None:
                            continue
                    run_recipe(recipe, source, path, calibration)
            except RuntimeFailure as exc:
                if opts.mode != "auto":
                    raise
                result.reason = str(exc)
                continue
            variant = Variant.of(recipe.name, path, parent=REFERENCE,
                                 produced_by={"step": "quantize", "recipe": recipe.settings()})
            vr, sessions[recipe.name] = evaluate(ref, variant, max_disagreement=tolerance,
                                                 min_cosine=opts.min_cosine)
            measured[recipe.name] = vr
            paths[recipe.name] = path
            _score(result, vr, ref, criterion, tolerance)
            state.judge(result, sessions[recipe.name])

        def nncf_candidate(rec: Recipe, path: Path):
            """Build one NNCF model (the candidate, or a try of its rescue) and judge it on OpenVINO."""
            return _nncf_candidate(rec, prepared.path, path, calibration, takes_tokens, ref, opts,
                                   criterion, tolerance, state)

        if nncf_recipe is not None:
            path = work / f"{nncf_recipe.name}.onnx"
            result, vr, session = nncf_candidate(nncf_recipe, path)
            results.append(result)
            if vr is not None:
                measured[result.name], sessions[result.name], paths[result.name] = vr, session, path
        search = None
        searches: list = []
        if opts.mode == "auto" and opts.fallback:
            bases, prelim = _search_bases(opts, results, ref, sessions)
            if bases:
                if prepared is None:
                    prepared = prepare(model, work, src.name)
                for base_result in bases:
                    if base_result.settings.get("mode") == nncf_int8.MODE:
                        record, found = _partial_nncf(opts, nncf_recipe, base_result, ref, prepared.path,
                                                      work, warnings, layers, prelim, nncf_candidate)
                    else:
                        base = _recipe_named(recipes, base_result.name)
                        record, found = _partial(opts, base, base_result, results, ref, prepared.path,
                                                 work, criterion, tolerance, warnings, layers,
                                                 calibration, state, prelim, sessions, measured, paths)
                    if record is None:
                        continue
                    searches.append(record)
                    if found is not None:
                        result, vr, session, path = found
                        results.append(result)
                        measured[result.name], sessions[result.name], paths[result.name] = vr, session, path
            elif prelim is not None and any(not r.admissible for r in results if r.name in sessions):
                warnings.append("partial int8 not searched: " + (
                    f"timing too noisy to rank the candidates (A/A {100 * prelim.noise:.0f}% apart)"
                    if prelim.too_noisy else
                    "no candidate that missed the bound is faster than the admissible ones"))
            search = searches[0] if searches else None
        for v in extra or []:
            measured[v.name], sessions[v.name] = evaluate(ref, v, max_disagreement=tolerance,
                                                          min_cosine=opts.min_cosine)
        latency = None
        if measure_latency:
            droppable = {r.name for r in results if r.name in sessions} if opts.mode == "auto" else set()
            latency = time_variants(ref, sessions, budget_s=opts.latency_budget_s, droppable=droppable)
            for result in results:
                if result.name in sessions:
                    _add_latency(result, latency)
        measurement = Measurement(ref, measured, latency)
        chosen, reason, passed = _choose(opts, results, measurement, criterion, tolerance)
        _explain_candidates(results, measurement)
        for record in searches:
            _summarize_search(record, results, measurement, opts.min_cosine)
            if record.warning:
                warnings.append(record.warning)
        if searches:
            chosen_search = next((r for r in searches if chosen is not None and r.candidate == chosen.name),
                                 None)
            search = chosen_search or next((r for r in searches if r.candidate), searches[0])

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
        size_before=float_variant.size_bytes,
        size_after=None if output is None else Variant.of("out", output, parent=None, produced_by={}).size_bytes,
        comparison=_comparison(chosen, ref.accuracy, criterion, tolerance, passed),
        latency_before=latency.median(REFERENCE) if latency else {},
        latency_after=(dict(chosen.latency_ms) if chosen else {}),
        settings=chosen.settings if chosen else {},
        calibration=None if calibration is None else {
            "data": calibration.name, "samples": len(calibration), "method": opts.calibration_method},
        op_counts={"before": ops_before, "after": chosen.op_counts if chosen else {}},
        preprocessing=(prepared.notes if prepared else []) + skipped,
        candidates=results, chosen=None if chosen is None else chosen.name, reason=reason,
        passed=passed,
    )
    report.measurement = measurement
    report.fallback = None if search is None else search.to_dict()
    if report.fallback is not None:
        report.fallback["searches"] = [r.to_dict() for r in searches]
    report.state = state.to_dict()
    report.latency = None if latency is None else latency.to_dict()
    report.environment = environment(opts.threads)
    report.warnings = warnings + _result_warnings(report, chosen, measurement)
    return report


def _split(recipe: Recipe, result: CandidateResult, prepared: Path, data: DataSet, work: Path,
           threads: int | None, layers: dict[str, str]) -> tuple[Path | None, Recipe]:
    """The outlier split of the prepared model for ``recipe`` (quantize/outliers.py): the model
    to quantize and the recipe with the float products excluded; ``(None, recipe)`` and a reason
    on ``result`` when no MatMul input has outlier channels."""
    split_path = work / f"{recipe.name}.split.onnx"
    split = outliers.split_outliers(prepared, split_path, data, work, threads, layers)
    result.settings["outlier_split"] = split.to_dict()
    if not split.layers:
        result.reason = f"not built: {split.summary()}"
        return None, recipe
    return split_path, replace(recipe, nodes_to_exclude=tuple(split.float_nodes))


def _recipe_named(recipes: list[Recipe], name: str) -> Recipe:
    return next(r for r in recipes if r.name == name)


def _search_bases(opts, results: list[CandidateResult], ref: Reference, sessions: dict
                  ) -> tuple[list[CandidateResult], object]:
    """The candidates the partial search starts from, and the timing that ordered them.

    Those that missed the bound, fastest first (a preliminary interleaved timing of the full-int8
    candidates), not slower than float at any batch size (unless slower models are allowed),
    and, when some candidate is admissible, faster than the fastest admissible one by more than
    the noise. At most one a mode (dynamic, static): within a mode, among those as fast as its
    fastest within the noise, the one with the smallest error. When none is fast enough and
    nothing is admissible, the search still runs from the most accurate (choose() then refuses
    a result slower than float).
    """
    missed = [r for r in results if r.name in sessions and not r.admissible and r.int8_ops
              and r.error is not None]
    if not missed:
        return [], None
    admissible = [r for r in results if r.name in sessions and r.admissible]
    named = {r.name: sessions[r.name] for r in results if r.name in sessions}
    prelim = time_variants(ref, named, budget_s=max(0.1, opts.latency_budget_s / 2))
    worst = {r.name: inprocess.worst_speedup(prelim, r.name) for r in results if r.name in sessions}
    for r in results:
        if r.name in sessions:
            r.settings.setdefault("preliminary_speedup", {k: round(v, 3)
                                                          for k, v in prelim.speedup(r.name).items()})
    eligible = [r for r in missed if opts.allow_slower or ship_admissible(prelim, r.name)]
    if admissible:
        # worth searching: faster than the fastest admissible candidate at some batch size by
        # more than the noise (capped at 25%: a 2x-faster static candidate is searched even on
        # a busy machine; one within a few percent of the admissible one is not)
        if prelim.too_noisy:  # the timing cannot rank them: the admissible candidates stand
            return [], prelim
        best = max(admissible, key=lambda r: worst[r.name])
        cut = 1 + min(prelim.margin, 0.25)
        eligible = [r for r in eligible
                    if any(v > prelim.speedup(best.name).get(k, float("inf")) * cut
                           for k, v in prelim.speedup(r.name).items())]
    elif not eligible:
        eligible = missed
    bases = []
    for mode in ("static", "dynamic", nncf_int8.MODE):
        pool = [r for r in eligible if r.settings.get("mode") == mode]
        if not pool:
            continue
        top = max(worst[r.name] for r in pool)
        near = [r for r in pool if worst[r.name] * (1 + prelim.margin) >= top]
        bases.append(min(near, key=lambda r: (r.error, SIMPLICITY.index(r.name)
                                              if r.name in SIMPLICITY else len(SIMPLICITY))))
    bases.sort(key=lambda r: -worst[r.name])
    # at most MAX_BASES of ORT's modes; the NNCF candidate (another runtime) has a slot of its own
    ort = [r for r in bases if r.settings.get("mode") != nncf_int8.MODE][:MAX_BASES]
    return [r for r in bases if r in ort or r.settings.get("mode") == nncf_int8.MODE], prelim


def _partial(opts, base: Recipe, base_result: CandidateResult, results, ref: Reference, prepared: Path,
             work: Path, criterion: str, tolerance: float, warnings: list[str], layers: dict[str, str],
             calibration: DataSet | None, state, prelim, sessions, measured, paths):
    """Calibration grid (static bases), ranking and search from one base; ``(record, found)``."""
    import time

    start = time.monotonic()
    deadline = start + opts.search_budget_s
    by_name = {r.name: r for r in results}
    calib = calibration
    tried: list[dict] = []

    def build(recipe: Recipe, path: Path, calib_set, extra: dict | None = None):
        result = CandidateResult(recipe.name, recipe.settings())
        t0 = time.monotonic()
        try:
            run_recipe(recipe, prepared, path, calib_set)
        except RuntimeFailure as exc:
            result.failures = [str(exc)]
            return result, None, None
        variant = Variant.of(recipe.name, path, parent=REFERENCE,
                             produced_by={"step": "quantize", "recipe": recipe.settings(),
                                          "partial_from": base.name, **(extra or {})})
        vr, session = evaluate(ref, variant, max_disagreement=tolerance, min_cosine=opts.min_cosine)
        _score(result, vr, ref, criterion, tolerance)
        state.judge(result, session)
        result.settings["build_seconds"] = round(time.monotonic() - t0, 2)
        return result, vr, session

    if base.mode == "static" and calibration is not None:
        best_recipe, best_result = base, base_result
        for method, count in calibration_grid(base, len(calibration), len(calibration)):
            if time.monotonic() > start + GRID_SHARE * opts.search_budget_s:
                break  # the rest of the budget is the search's (PP-OCR det: 158 s of 300 went here)
            name = f"{base.name}-{method}" + ("" if count >= len(calibration) else f"-{count}")
            recipe = replace(base, name=name, calibration_method=method)
            subset = calibration if count >= len(calibration) else calibration.head(count)
            path = work / f"{name}.onnx"
            result, vr, session = build(recipe, path, subset, {"calibration_samples": count})
            result.settings["calibration_samples"] = len(subset)
            tried.append({"method": method, "samples": len(subset), "min_cosine": result.min_cosine,
                          "error": result.error, "admissible": result.admissible,
                          "seconds": result.settings.get("build_seconds"),
                          "failures": result.failures})
            if vr is None:
                continue
            # a calibration is part of the candidate only where it changes the result: it meets
            # the bound, or cuts the error by a tenth (the rest stay in the grid's record)
            better = (best_result.error is not None and result.error is not None
                      and result.error < 0.9 * best_result.error)
            if result.admissible or better:
                results.append(result)
                measured[name], sessions[name], paths[name] = vr, session, path
                best_recipe, best_result, calib = recipe, result, subset
            if result.admissible:
                break
        base_result.settings["calibration_grid"] = tried
        if best_result.admissible:
            # a calibration alone met the bound: it is a full-int8 candidate, no partial needed
            return None, None
        base = best_recipe
    if time.monotonic() > deadline:
        warnings.append(f"partial int8 from {base.name} not searched: the search budget "
                        f"({opts.search_budget_s:g} s) was spent on calibration")
        return None, None

    def quantize_one(exclude: list[str]) -> float:
        path = work / f"{base.name}-one.onnx"
        try:
            run_recipe(replace(base, nodes_to_exclude=tuple(exclude)), prepared, path, calib)
            from ..runtimes import make_session, run_dataset

            outs = run_dataset(make_session(path, threads=ref.threads), ref.data.head(partial.RANK_SAMPLES))
            want = {k: v for k, v in ref.outputs.items()}
            head = {k: np.asarray(v)[:partial.RANK_SAMPLES] if ref.output_batch_axes.get(k) == 0 else v
                    for k, v in want.items()}
            return partial.output_snr(head, outs)
        except Exception:
            return float("inf")

    try:
        ranking = partial.rank_units(prepared, base, ref.data, work, ref.threads, layers,
                                     quantize_one=quantize_one,
                                     budget_s=max(0.0, deadline - time.monotonic()))
    except RuntimeFailure as exc:
        warnings.append(f"mixed-precision fallback skipped: {exc}")
        return None, None
    if not ranking:
        warnings.append(f"mixed-precision fallback skipped: {base.name} quantizes no node with a "
                        "constant weight in this model")
        return None, None
    built: dict[int, tuple] = {}

    def judge(recipe: Recipe) -> CandidateResult:
        k = len(recipe.nodes_to_exclude)
        result, vr, session = build(recipe, work / f"{recipe.name}-{k}.onnx", calib)
        if result.admissible:
            built[k] = (result, vr, session, work / f"{recipe.name}-{k}.onnx")
        return result

    record, recipe = mixed.search(base, ranking, judge, opts.max_float_matmuls,
                                  budget_s=max(1.0, deadline - time.monotonic()), noun="nodes",
                                  probe_limit=True)
    if recipe is None and base.mode == "static" and time.monotonic() < deadline:
        # the nodes alone missed: again with each unit's neighbours, so its tensors stay float
        # (a node kept float still reads and writes the tensors its quantized neighbours round)
        first = record
        record, recipe = mixed.search(base, partial.with_tensors(ranking, load_model(prepared), base),
                                      judge, opts.max_float_matmuls,
                                      budget_s=max(1.0, deadline - time.monotonic()), noun="nodes",
                                      probe_limit=True)
        record.grouping, record.earlier = "tensors", first.to_dict()
        record.earlier.pop("ranking", None)
    record.quantizable_matmuls = sum(1 for c in ranking if c.op_type in ("MatMul", "Gemm"))
    src_result = by_name.get(base.name) or base_result
    record.base_min_cosine = src_result.min_cosine
    record.base_error = src_result.error
    record.base_speedup = {k: round(v, 3) for k, v in prelim.speedup(base_result.name).items()}
    if base.mode == "static":
        record.calibration = {"method": base.calibration_method,
                              "samples": None if calib is None else len(calib), "grid": tried}
    record.seconds = time.monotonic() - start
    return record, None if recipe is None else built[len(recipe.nodes_to_exclude)]


def _nncf_candidate(rec: Recipe, prepared: Path, path: Path, calibration: DataSet | None,
                    transformer: bool, ref: Reference, opts, criterion: str, tolerance: float, state):
    """``(result, VariantResult or None, session or None)`` of one NNCF model judged on OpenVINO
    (the file's metadata names the runtime); a build or load failure is the result's reason."""
    result = CandidateResult(rec.name, nncf_int8.settings(rec, transformer=transformer))
    try:
        seconds = nncf_int8.build(rec, prepared, path, calibration, transformer=transformer)
        result.settings["build_seconds"] = round(seconds, 2)
        variant = Variant.of(rec.name, path, parent=REFERENCE,
                             produced_by={"step": "quantize", "recipe": result.settings})
        vr, session = evaluate(ref, variant, max_disagreement=tolerance, min_cosine=opts.min_cosine)
    except (RuntimeFailure, ModelLoadError, DataError) as exc:
        result.reason = result.reason or first_line(exc)
        result.failures = [first_line(exc)]
        return result, None, None
    _score(result, vr, ref, criterion, tolerance)
    state.judge(result, session)
    return result, vr, session


def _partial_nncf(opts, rec: Recipe, base_result: CandidateResult, ref: Reference, prepared: Path,
                  work: Path, warnings: list[str], layers: dict[str, str], prelim, candidate):
    """The partial-int8 search from the NNCF candidate (``fallback.search`` on ``partial``'s
    ranking; the kept nodes go to NNCF's ignored scope); ``(record, found)`` as ``_partial``."""
    import time

    start = time.monotonic()
    deadline = start + opts.search_budget_s
    try:
        ranking = nncf_int8.rank(rec, prepared, ref.data, work, ref.threads, layers)
    except RuntimeFailure as exc:
        warnings.append(f"partial int8 from {rec.name} skipped: {exc}")
        return None, None
    if not ranking:
        warnings.append(f"partial int8 from {rec.name} skipped: no weight node to keep float")
        return None, None
    built: dict[int, tuple] = {}

    def judge(recipe: Recipe) -> CandidateResult:
        k = len(recipe.nodes_to_exclude)
        path = work / f"{recipe.name}-{k}.onnx"
        result, vr, session = candidate(recipe, path)
        result.settings["partial_from"] = rec.name
        if result.admissible:
            built[k] = (result, vr, session, path)
        return result

    record, found = nncf_int8.rescue(rec, ranking, judge, opts.max_float_matmuls,
                                     budget_s=max(1.0, deadline - time.monotonic()))
    record.quantizable_matmuls = sum(1 for c in ranking if c.op_type in ("MatMul", "Gemm"))
    record.base_min_cosine, record.base_error = base_result.min_cosine, base_result.error
    record.base_speedup = {k: round(v, 3) for k, v in prelim.speedup(base_result.name).items()}
    record.seconds = time.monotonic() - start
    return record, None if found is None else built[len(found.nodes_to_exclude)]


def calibration_grid(base: Recipe, available: int, count: int) -> list[tuple[str, int]]:
    """The calibrations tried when a static candidate misses: the other methods on the same
    samples, then the base's method and the best others on a quarter of them (cheaper; where
    the ranges settle early it changes nothing, and the report shows it)."""
    full = min(available, count)
    grid = [(m, full) for m in CALIBRATION_METHODS if m != base.calibration_method]
    if full >= 64:
        grid.append((base.calibration_method, full // 4))
    return grid


class _StateCheck:
    """State outputs judged as what they are: over chained steps, each step's state output fed
    back as the next state input, besides the one-step figure every output gets."""

    def __init__(self, ref: Reference, opts) -> None:
        self.ref = ref
        self.bound = opts.min_cosine
        sig = ref.signature
        known_in = {s.name for s in sig.inputs}
        known_out = {s.name for s in sig.outputs}
        for i, o in (opts.state or {}).items():
            if i not in known_in or o not in known_out:
                raise OptionError(f"--state {i}:{o}: the model has inputs {', '.join(sorted(known_in))} "
                                  f"and outputs {', '.join(sorted(known_out))}")
        self.pairs = partial.state_pairs(sig.inputs, sig.outputs, opts.state)
        self.given = bool(opts.state)
        if not self.given:
            # a pair assumed by name must also be one by what the data makes: the output the
            # float model produced has the state input's shape and dtype (silero-vad's
            # ``input [batch, sequence]`` -> ``output [batch, 1]`` matched by name alone)
            data_in, got = ref.data.inputs, ref.outputs
            self.pairs = [(i, o) for i, o in self.pairs
                          if i in data_in and o in got and hasattr(got[o], "shape")
                          and np.shape(data_in[i]) == np.shape(got[o])
                          and np.asarray(data_in[i]).dtype == np.asarray(got[o]).dtype]
        self._feeds = None
        self._float = None
        self.refused: str | None = None
        self.figures: dict[str, dict] = {}

    def note(self) -> str:
        how = "as given by --state" if self.given else "paired by name and shape"
        shown = ", ".join(f"{i} -> {o}" for i, o in self.pairs)
        return (f"state outputs ({how}): {shown}; judged one step and over "
                f"{partial.CHAIN_STEPS} chained steps (each step's state output fed back)")

    def _reference(self):
        """The float model chained; on a model that takes one sample at a time (a state exported
        at batch 1) one sample is chained; None (and a note) when the float model refuses both."""
        if self._float is None and self.pairs:
            data = self.ref.data
            sizes = [min(len(data), partial.CHAIN_SAMPLES), 1] if data.batched else [None]
            for n in sizes:
                feeds = data.slice(0, n) if n is not None else data.inputs
                try:
                    self._float = partial.chained_outputs(self.ref.session, feeds, self.pairs,
                                                          data.batch_axes)
                    self._feeds = feeds
                    break
                except Exception as exc:  # noqa: BLE001 - the runtime's refusal, reported below
                    self.refused = first_line(exc)
            if self._float is None:
                self.pairs = []  # nothing to chain against: judged one step, like any output
        return self._float

    def calibration(self, data: DataSet) -> DataSet:
        """Static calibration that sees the states a stream reaches: the calibration samples
        again with the state inputs each chained float step produced (a state calibrated only
        on the data's own states clips the ones the model feeds itself)."""
        if self._reference() is None:
            return data
        feeds = self._feeds
        parts = [data.inputs]
        current = dict(feeds)
        for _ in range(partial.CHAIN_STEPS - 1):
            from ..runtimes import run

            out = run(self.ref.session, current)
            current = {**current, **{i: out[o] for i, o in self.pairs}}
            parts.append(dict(current))
        from ..data.dataset import concat_batches

        try:
            inputs = concat_batches(parts, data.batch_axes)
        except Exception:
            return data
        return replace(data, inputs=inputs, batched=frozenset(), name=f"{data.name} + chained states")

    def judge(self, result: CandidateResult, session) -> None:
        if not self.pairs or session is None:
            return
        ref_out = self._reference()
        if ref_out is None:
            return
        try:
            got = partial.chained_outputs(session, self._feeds, self.pairs, self.ref.data.batch_axes)
        except Exception as exc:  # a variant that cannot be chained says so, it does not crash
            result.failures.append(f"state chaining failed: {type(exc).__name__}")
            result.admissible = False
            return
        axes = self.ref.output_batch_axes
        one = {o["name"]: o.get("min_cosine") for o in result.outputs}
        chained = {}
        for _, out in self.pairs:
            chained[out] = round(partial.per_sample_min_cosine(ref_out[out], got[out], axes.get(out)), 6)
        result.settings.setdefault("state", {})
        result.state = {out: {"one_step_min_cosine": one.get(out), "chained_min_cosine": c,
                              "steps": partial.CHAIN_STEPS} for out, c in chained.items()}
        result.chained = chained
        for out, c in chained.items():
            if c < self.bound:
                result.failures.append(f"state {out} after {partial.CHAIN_STEPS} chained steps: "
                                       f"min cosine {c:.4f} is below {self.bound}")
                result.admissible = False
        result.settings.pop("state", None)

    def to_dict(self) -> dict | None:
        if not self.pairs:
            return None
        return {"pairs": [{"input": i, "output": o} for i, o in self.pairs],
                "assumed": not self.given, "chained_steps": partial.CHAIN_STEPS,
                "chain_samples": partial.CHAIN_SAMPLES}


def _summarize_search(record, results, m: Measurement, bound: float) -> None:
    """The sentence saying which MatMuls stayed float and what that bought."""
    if record.candidate is None:
        return
    mixed_result = next(r for r in results if r.name == record.candidate)
    base = next(r for r in results if r.name == record.base)
    quality = (f"min cosine {base.min_cosine:.4f} -> {mixed_result.min_cosine:.4f}"
               if base.min_cosine is not None and mixed_result.min_cosine is not None
               else f"error {base.error:.4f} -> {mixed_result.error:.4f}")
    kept = record.kept_units or [{"node": n, "layer": "", "nodes": [n]} for n in record.kept]
    named = ", ".join(
        (f"{'+'.join(u['nodes'])} ({u['layer']})" if u.get("layer") and u["layer"] != u["node"]
         else "+".join(u["nodes"])) for u in kept)
    methods = "/".join(sorted({c.method for c in record.ranking}))
    noun = "MatMuls" if all(c.op_type == "MatMul" for c in record.ranking) else "nodes"
    text = (f"kept {len(kept)} of {record.quantizable} {noun} float ({named}), chosen by "
            f"their measured int8 cost ({methods}); {quality}")
    if m.latency is not None:
        speeds = []
        for r in (base, mixed_result):
            if r.name in m.latency.figures:
                speeds.append(f"{r.name} {_speed_text(m, r.name)}")
        if speeds:
            text += "; speed vs float: " + "; ".join(speeds)
    record.summary = text
    mixed_result.reason = (mixed_result.reason + "; " if mixed_result.reason else "") + text
    ref = m.reference
    halves = half_min_cosines(ref.outputs, m.results[record.candidate].outputs, ref.kinds,
                              ref.output_batch_axes)
    if halves is not None and mixed_result.min_cosine is not None:
        record.halves_min_cosine = [round(h, 6) for h in halves]
        spread, headroom = abs(halves[0] - halves[1]), mixed_result.min_cosine - bound
        if spread > headroom:
            record.warning = (
                f"{record.candidate} passes the min-cosine bound {bound} by {headroom:.4f}, less than "
                f"the {spread:.4f} by which the two halves of the data differ ({halves[0]:.4f} vs "
                f"{halves[1]:.4f}): on other texts it may well land below the bound; judge it on "
                "more, or more representative, data (bench re-checks served embeddings)")


def _check_quantizable(name: str, ops: dict[str, int], opts: QuantizeOptions) -> None:
    """Refuse, before any work, a model with no operator the quantizer of this mode handles."""
    handled = supported_op_types(opts.mode)
    if not set(ops) & handled:
        shown = ", ".join(sorted(ops)) or "no operators"
        raise ModelLoadError(
            f"{name}: nothing to quantize in {opts.mode} mode: the model has {shown}, none of which "
            f"ONNX Runtime's quantizer handles (it quantizes e.g. MatMul, Gemm, Conv)")


def _needs_build(recipes: list[Recipe], prebuilt: dict[str, Path] | None) -> bool:
    return any(r.name not in (prebuilt or {}) for r in recipes)


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
        warnings.append(f"data '{data.name}' has no labels: outputs are judged against the float model "
                        "(top-1 agreement for class scores, cosine similarity otherwise)")
    if data.name == RANDOM:
        warnings.append("random inputs prove little about accuracy: pass --data with real samples")
        if any(r.mode == "static" for r in recipes):
            warnings.append(
                "static calibration on random data: activation ranges may not match real inputs; "
                "pass --data with representative samples"
            )
    return warnings


# --------------------------------------------------------------------------- accuracy


def _criterion(ref: Reference, opts) -> tuple[str, float]:
    """What 'accuracy' means for this model and data, and the tolerance that applies."""
    scores = "class_scores" in ref.kinds.values()
    if scores and ref.labels is not None:
        return "accuracy_drop", opts.max_accuracy_drop
    if scores:
        return "top1_disagreement", opts.max_accuracy_drop
    return "output_drift", opts.max_accuracy_drop


def _score(result: CandidateResult, vr, ref: Reference, criterion: str, tolerance: float) -> None:
    cmp_ = vr.comparison
    result.size_bytes = vr.variant.size_bytes
    result.op_counts = vr.op_counts
    result.int8_ops = vr.int8_ops
    result.max_abs_diff = cmp_.max_abs_diff
    result.mean_abs_diff = cmp_.mean_abs_diff
    result.top1_agreement = cmp_.top1_agreement
    result.min_cosine = cmp_.min_cosine
    result.accuracy = vr.accuracy
    result.outputs = [m.to_dict() for m in cmp_.outputs]
    result.sha256 = vr.variant.sha256
    if criterion == "accuracy_drop":
        result.error = float(ref.accuracy - vr.accuracy)
        ok = result.error <= tolerance + 1e-12
        result.failures = [] if ok else [f"accuracy drop {result.error:.4f} exceeds {tolerance}"]
    elif criterion == "top1_disagreement":
        result.error = 1.0 - float(cmp_.top1_agreement)
        ok = bool(cmp_.passed is not False)
        result.failures = list(cmp_.failures)
    else:
        result.error = None if cmp_.min_cosine is None else 1.0 - cmp_.min_cosine
        ok = cmp_.passed is not False
        result.failures = list(cmp_.failures)
    result.exercised = cmp_.passed is not None
    result.admissible = bool(ok) and result.int8_ops > 0


def _add_latency(result: CandidateResult, latency) -> None:
    result.latency_ms = latency.median(result.name)
    result.latency = {k: f.to_dict() for k, f in latency.figures[result.name].items()}
    result.speedup = latency.speedup(result.name)
    result.speed = inprocess.speed(latency, result.name)


def _comparison(chosen, acc_before, criterion, tolerance, passed) -> dict:
    c = chosen or CandidateResult("none", {})
    return {
        "max_abs_diff": c.max_abs_diff,
        "mean_abs_diff": c.mean_abs_diff,
        "top1_agreement": c.top1_agreement,
        "min_cosine": c.min_cosine,
        "accuracy_before": acc_before,
        "accuracy_after": c.accuracy,
        "criterion": criterion,
        "error": c.error,
        "tolerance": tolerance,
        "outputs": c.outputs,
        "failures": c.failures,
        "passed": passed,
    }


# --------------------------------------------------------------------------- choice


def _speed_text(m: Measurement, name: str) -> str:
    return inprocess.speed_text(m.latency, name)


def _choose(opts, results, m: Measurement, criterion, tolerance):
    """``(chosen result or None, reason, passed)``: the judge's choice (``judge/choose.py``).

    Auto takes the fastest candidate that is admissible and not slower than float at any batch
    size; when none keeps pace, it keeps the float model unless slower models are allowed.
    """
    measured = [r for r in results if r.name in m.results]
    if opts.mode != "auto":
        r = measured[0]
        ok = r.admissible
        why = "" if ok else ("; ".join(r.failures) or
                             ("nothing was quantized (no int8 operator in the result)" if not r.int8_ops else ""))
        return r, why, ok
    choice = choose(measured, m.latency, simplicity=SIMPLICITY, criterion=criterion, tolerance=tolerance)
    if choice.name is None:
        return None, choice.reason, False
    best = next(r for r in measured if r.name == choice.name)
    if choice.keeps_pace:
        return best, choice.reason, True
    if opts.allow_slower:
        return best, f"{choice.reason} Took {best.name} anyway because slower models were allowed.", True
    lat = m.latency
    keep = CandidateResult(FLOAT, {"quantized": False}, latency_ms=lat.median(REFERENCE), max_abs_diff=0.0,
                           mean_abs_diff=0.0, error=0.0, admissible=True,
                           top1_agreement=None if best.top1_agreement is None else 1.0,
                           accuracy=m.reference.accuracy, reason="the input model, unchanged",
                           op_counts=m.results[REFERENCE].op_counts, min_cosine=1.0)
    return keep, f"{choice.reason} Kept the float model unchanged; pass --allow-slower to take {best.name}.", True


def _explain_candidates(results, m: Measurement) -> None:
    for r in results:
        if r.name not in m.results:
            continue  # the quantizer failed; reason already says so
        if not r.int8_ops:
            parts = ["quantized nothing (no int8 operator in the result): not admissible"]
        else:
            parts = ["admissible" if r.admissible else "; ".join(r.failures) or "outside tolerance"]
        if not r.exercised:
            parts.append("outputs not exercised by this data: pass real inputs with --data")
        if m.latency is not None and r.speed:
            parts.append(_speed_text(m, r.name))
        if r.op_counts.get("ConvInteger"):
            parts.append("Conv became ConvInteger (slow on CPU)")
        r.reason = "; ".join(parts)


def _result_warnings(report: QuantizeReport, chosen, m: Measurement) -> list[str]:
    if chosen is None or chosen.name == FLOAT:
        return []
    warnings = []
    lat = m.latency
    slower = lat is not None and inprocess.speed(lat, chosen.name) in ("slower", "mixed")
    conv_int = chosen.op_counts.get("ConvInteger", 0)
    if conv_int and slower:
        warnings.append(
            f"dynamic quantization turned {conv_int} Conv node(s) into ConvInteger, which ONNX Runtime "
            f"runs slower than float on CPU ({_speed_text(m, chosen.name)}); "
            "use --op-types MatMul,Gemm or --mode static (or --mode auto) for conv nets"
        )
    elif slower:
        warnings.append(f"the int8 model is slower than float: {_speed_text(m, chosen.name)}")
    if not chosen.int8_ops:
        warnings.append("nothing was quantized: the quantizer found no supported operator with constant weights")
    if not report.passed:
        warnings.append("; ".join(chosen.failures) or "the accuracy check failed")
    if lat is not None and lat.too_noisy:
        warnings.append(f"timing was noisy: the A/A control (the float model timed twice) came out "
                        f"{100 * lat.noise:.0f}% apart; speed comparisons are not reliable")
    return warnings


__all__ = ["CONTROL", "FLOAT", "quantize_model"]
