"""Step 3: graph optimization pass by pass, with accounting and proof the outputs did not change.

Each onnxoptimizer pass runs on its own (``fixed_point`` off) so its effect can be counted;
constants a pass leaves behind are folded right after it (see ``fold.py``) so the next fusion
sees them and the graph does not grow; ``transformer`` then runs ONNX Runtime's transformer
optimizer (its fusions counted, see ``transformer.py``) and ``ort_level`` saves ONNX Runtime's
offline-optimized graph. The result runs against the input on the same data; when they differ by more than the
tolerance the steps are replayed one at a time to name the one that introduced the difference.
The result is recommended only when it passed and did not measure slower (``judge/recommend.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from ..data import DataSet
from ..environment import environment
from ..errors import DataError, ModelLoadError, OptionError, first_line
from ..judge import inprocess
from ..judge.recommend import RESULT, recommendation
from ..measure import (
    DEFAULT_BUDGET_S,
    DEFAULT_LATENCY_BATCH,
    Reference,
    build_reference,
    equivalence,
)
from ..measure.numeric import Comparison
from ..measure.variants import time_variants
from ..modelfile import (
    PROTOBUF_LIMIT,
    check_model,
    external_data_files,
    load_model,
    metadata,
    model_size,
    op_counts,
    save_model,
    set_metadata,
)
from ..runtimes import make_session, run_dataset
from .fold import fold_constants
from .passes import DEFAULT_PASSES, available_passes, no_change_note, parse_passes
from .transformer import STEP_PREFIX, TRANSFORMER_TYPES, TransformerSettings, fuse, resolve

__all__ = [
    "DEFAULT_PASSES", "DEFAULT_TOLERANCE", "ORT_LEVELS", "OptimizeOptions", "OptimizeReport",
    "PassRecord", "TRANSFORMER_TYPES", "available_passes", "optimize_model", "parse_passes",
    "recommendation",
]

DEFAULT_TOLERANCE = 1e-4
ORT_LEVELS = ("basic", "extended", "all")
FOLD_STEP = "fold_constants"
ORT_WARNING = ("--ort-level {level}: the saved graph may use ONNX Runtime's own fused operators "
               "and CPU-specific layouts; it is tied to onnxruntime {version} on this kind of CPU "
               "(use --ort-level basic for a portable file)")


@dataclass
class OptimizeOptions:
    """Options of ``onnxdeploy optimize``."""

    passes: list[str] | tuple[str, ...] | str | None = DEFAULT_PASSES
    fold_constants: bool = True
    ort_level: str | None = None
    #: ``auto`` or ``bert``: run ONNX Runtime's transformer fusions after the passes
    transformer: str | None = None
    #: 0 = taken from the exported-from config when it is still there, else ORT detects it
    num_heads: int = 0
    hidden_size: int = 0
    data: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    count: int | None = None
    tolerance: float = DEFAULT_TOLERANCE
    rtol: float = 0.0
    #: 0 turns the in-process latency measurement off (the pipeline measures all variants once)
    latency_rounds: int = 5
    latency_batch: int = DEFAULT_LATENCY_BATCH
    latency_budget_s: float = DEFAULT_BUDGET_S
    batch_axes: dict[str, int | None] = field(default_factory=dict)
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    threads: int | None = None


@dataclass
class PassRecord:
    """One step of the optimization: what it did to the graph."""

    name: str
    nodes_before: int
    nodes_after: int
    op_delta: dict[str, int]
    changed: bool
    note: str | None = None
    folded: dict[str, int] = field(default_factory=dict)
    max_abs_diff: float | None = None
    #: the transformer step: nodes each ORT fusion created (Attention always listed)
    fusions: dict[str, int] | None = None
    #: the transformer step: what ORT's optimizer logged (INFO and up, attention match failures)
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OptimizeReport:
    """Report of ``onnxdeploy optimize``."""

    input: str
    output: str
    passes: list[PassRecord]
    op_counts: dict[str, dict[str, int]]
    comparison: dict[str, Any]
    latency_ms: dict[str, dict[str, float]] | None
    size_bytes: dict[str, int]
    ort_level: str | None
    fold_constants: bool
    culprit: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: the interleaved figures with spread and the A/A noise, when latency was measured here
    latency: dict[str, Any] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    #: False when the check failed or the result measured slower than the input; None when
    #: nothing was measured to go on. ``-o`` is written either way.
    recommended: bool | None = None
    recommendation: str = ""
    #: the transformer step's settings (model type, num_heads, hidden_size, where they came from)
    transformer: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """False only when an exercised output changed beyond the tolerance."""
        return self.comparison["passed"] is not False

    @property
    def nodes(self) -> dict[str, int]:
        """Total node counts before and after."""
        return {k: sum(v.values()) for k, v in self.op_counts.items()}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passes"] = [p.to_dict() for p in self.passes]
        out["nodes"] = self.nodes
        return out


# --------------------------------------------------------------------------- steps


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    ops = sorted(set(before) | set(after))
    return {op: after.get(op, 0) - before.get(op, 0) for op in ops if after.get(op, 0) != before.get(op, 0)}


def _fingerprint(model: onnx.ModelProto) -> str:
    """A digest of what the graph computes: nodes, initializers, inputs, outputs, in order.

    ``value_info`` is left out: onnxoptimizer reorders it even when a pass changes nothing.
    """
    digest = hashlib.sha256()
    graph = model.graph
    for part in (graph.node, graph.initializer, graph.input, graph.output):
        for item in part:
            digest.update(item.SerializeToString())
        digest.update(b"|")
    return digest.hexdigest()


def _checked(model: onnx.ModelProto) -> str | None:
    """The checker's complaint about an in-memory model, or None when it is valid (or too big)."""
    if model.ByteSize() >= PROTOBUF_LIMIT:
        return None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        return first_line(exc, "invalid graph")
    return None


def _run_pass(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    import onnxoptimizer

    new = onnxoptimizer.optimize(model, [name], fixed_point=False)
    _restore_node_metadata(model, new)
    if model.graph.metadata_props and not new.graph.metadata_props:
        new.graph.metadata_props.extend(model.graph.metadata_props)
    return new


def _restore_node_metadata(old: onnx.ModelProto, new: onnx.ModelProto) -> None:
    """Give surviving nodes back the doc strings and metadata_props onnxoptimizer drops.

    Exporters keep provenance there (torch: module path, stack trace); a node is matched by its
    unique name and op type.
    """
    seen = Counter(n.name for n in old.graph.node)
    unique = {n.name: n for n in old.graph.node if n.name and seen[n.name] == 1}
    for node in new.graph.node:
        src = unique.get(node.name)
        if src is None or src.op_type != node.op_type:
            continue
        if src.doc_string and not node.doc_string:
            node.doc_string = src.doc_string
        if src.metadata_props and not node.metadata_props:
            node.metadata_props.extend(src.metadata_props)


def _ort_optimize(model: onnx.ModelProto, level: str, workdir: Path, threads: int | None) -> onnx.ModelProto:
    """The graph ONNX Runtime saves after optimizing ``model`` offline at ``level``."""
    src = save_model(model, workdir / "ort_in.onnx")
    dst = workdir / "ort_out.onnx"
    make_session(src, threads=threads, optimization=level, optimized_model_path=dst)
    return load_model(dst)


def _apply(
    model: onnx.ModelProto, step: str, *, fold: bool, meta: dict[str, str], ort_args: tuple,
    transformer: TransformerSettings | None = None,
) -> tuple[onnx.ModelProto, PassRecord, list[str]]:
    """Run one step (a pass plus folding what it left, the pre-fold, ORT's transformer fusions,
    or ORT) and account for it."""
    warnings: list[str] = []
    before = op_counts(model)
    print_before = _fingerprint(model)
    note = None
    folded: dict[str, int] = {}
    fusions, log = None, []
    if step.startswith(STEP_PREFIX) and transformer is not None:
        fused = fuse(model, transformer, ort_args[0])
        new, note, log, fusions = fused.model, fused.note, fused.log, fused.fusions
        warnings.extend(fused.warnings)
    elif step == FOLD_STEP:
        result = fold_constants(model)
        new, folded = result.model, result.folded
        if result.warning:
            warnings.append(result.warning)
    elif step.startswith("ort_"):
        new = _ort_optimize(model, step[4:], *ort_args)
    else:
        try:
            new = _run_pass(model, step)
        except Exception as exc:  # onnxoptimizer's C++ errors arrive as assorted types
            first = first_line(exc)
            warnings.append(f"{step}: onnxoptimizer failed ({first}); the pass was skipped")
            new, note = model, f"skipped: onnxoptimizer failed ({first})"
        problem = _checked(new) if new is not model else None
        if problem:
            warnings.append(f"{step}: produced an invalid graph ({problem}); the pass was skipped")
            new, note = model, f"skipped: it produced an invalid graph ({problem})"
        if fold and new is not model:
            result = fold_constants(new)
            new, folded = result.model, result.folded
            if result.warning:
                warnings.append(f"{step}: {result.warning}")
    set_metadata(new, meta)
    after = op_counts(new)
    changed = print_before != _fingerprint(new)
    if note is None:
        if not changed:
            note = "nothing constant to fold" if step == FOLD_STEP else (
                "no change" if step.startswith("ort_") else no_change_note(step, before))
        elif step == FOLD_STEP:
            note = "folded " + ", ".join(f"{n} {op}" for op, n in folded.items())
        elif folded:
            left = ", ".join(f"{n} {op}" for op, n in folded.items())
            note = f"left constant arithmetic behind ({left}); folded it"
        elif changed and before == after:
            note = "rewrote the graph without changing its op counts"
    record = PassRecord(step, sum(before.values()), sum(after.values()), _delta(before, after),
                        changed, note, folded, fusions=fusions, log=log)
    return new, record, warnings


# --------------------------------------------------------------------------- verification


def _outputs_of(model: onnx.ModelProto | Path, data: DataSet, threads: int | None, workdir: Path):
    if isinstance(model, onnx.ModelProto) and model.ByteSize() >= PROTOBUF_LIMIT:
        model = save_model(model, workdir / "verify.onnx")
    session = make_session(model, threads=threads, optimization="disable")
    return run_dataset(session, data)


def _find_culprit(
    model: onnx.ModelProto, steps: list[str], records: list[PassRecord], reference: Reference,
    opts: OptimizeOptions, apply: Callable, workdir: Path,
) -> str | None:
    """Replay the steps one at a time from the input; the first whose result differs is the culprit."""
    current = model
    for step, record in zip(steps, records):
        current, _, _ = apply(current, step)
        diff, problem = _verify(current, reference, opts, workdir)
        record.max_abs_diff = diff.max_abs_diff
        if diff.passed is False:
            return step
    return None


def _verify(model, reference: Reference, opts: OptimizeOptions, workdir: Path) -> tuple[Comparison, str | None]:
    """``(comparison, problem)`` of a model against the reference outputs, output by output.

    A result that no longer loads or has other output shapes is a failed check, not a user error.
    """
    try:
        got = _outputs_of(model, reference.data, opts.threads, workdir)
        return equivalence(reference.plain_outputs(), got, reference.kinds, atol=opts.tolerance, rtol=opts.rtol,
                           batch_axes=reference.output_batch_axes), None
    except (ModelLoadError, DataError) as exc:
        return Comparison([], False, [str(exc)]), str(exc)


# --------------------------------------------------------------------------- entry point


def _validate(opts: OptimizeOptions, src: Path, out: Path) -> list[str]:
    steps = parse_passes(opts.passes)
    if opts.ort_level is not None and opts.ort_level not in ORT_LEVELS:
        raise OptionError(f"--ort-level {opts.ort_level!r}: expected one of {', '.join(ORT_LEVELS)}")
    if not (opts.tolerance >= 0 and opts.rtol >= 0):
        raise OptionError("--tolerance and --rtol must be non-negative numbers")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise OptionError(f"-o {out}: the output must not overwrite the input model")
    if opts.transformer is not None and opts.transformer not in TRANSFORMER_TYPES:
        raise OptionError(f"--transformer {opts.transformer!r}: expected one of "
                          f"{', '.join(TRANSFORMER_TYPES)}")
    return steps


def optimize_model(
    src: str | os.PathLike, out: str | os.PathLike, options: OptimizeOptions | None = None,
    *, reference: Reference | None = None,
) -> OptimizeReport:
    """Optimize ``src`` pass by pass into ``out`` and verify it computes what ``src`` computes.

    User errors (bad file, invalid graph, unknown pass) are raised before anything is written.
    A failed verification still writes ``out``; the report's ``culprit`` names the step.
    ``reference`` is the input's reference when the caller has one (the pipeline).
    """
    opts = options or OptimizeOptions()
    src, out = Path(src), Path(out)
    passes = _validate(opts, src, out)
    model = load_model(src)
    check_model(src, name=src.name)
    meta = metadata(model)
    settings = None
    if opts.transformer is not None:
        settings = resolve(opts.transformer, model, meta, num_heads=opts.num_heads,
                           hidden_size=opts.hidden_size, name=src.name)

    steps = ([FOLD_STEP] if opts.fold_constants else []) + passes
    if settings is not None:
        steps.append(STEP_PREFIX + settings.model_type)
    if opts.ort_level:
        steps.append(f"ort_{opts.ort_level}")
    workdir = Path(tempfile.mkdtemp(prefix=".onnxdeploy-opt.", dir=out.parent if out.parent.exists() else None))
    try:
        def apply(m, step):
            return _apply(m, step, fold=opts.fold_constants, meta=meta, ort_args=(workdir, opts.threads),
                          transformer=settings)

        # the input must run on the data before anything is written
        if reference is None:
            reference = build_reference(src, data=opts.data, dims=opts.dims, count=opts.count,
                                        threads=opts.threads, latency_batch=opts.latency_batch,
                                        batch_axes=opts.batch_axes, int_ranges=opts.int_ranges)
        data = reference.data
        current, records, warnings = model, [], []
        for step in steps:
            current, record, step_warnings = apply(current, step)
            records.append(record)
            warnings.extend(step_warnings)
        if opts.ort_level in ("extended", "all"):
            import onnxruntime

            warnings.append(ORT_WARNING.format(level=opts.ort_level, version=onnxruntime.__version__))
        uses_external = bool(external_data_files(src))
        save_model(current, out, external_data=uses_external or None)

        diff, problem = _verify(out, reference, opts, workdir)
        passed = diff.passed
        if problem:
            warnings.append(f"the optimized model cannot be checked against the input: {problem}")
        elif passed is None:
            warnings.append("no output is exercised by this data (constant or all near zero): the "
                            "check proves nothing; pass real inputs with --data")
        culprit = None
        if passed is False:
            culprit = _find_culprit(model, steps, records, reference, opts, apply, workdir)

        before, after = op_counts(model), op_counts(current)
        if opts.fold_constants and sum(after.values()) > sum(before.values()):
            warnings.append(f"the result has more nodes than the input ({sum(after.values())} vs "
                            f"{sum(before.values())}) even after constant folding")
        latency = timing = measured = None
        if opts.latency_rounds > 0 and problem is None:
            measured = time_variants(reference, {RESULT: make_session(out, threads=opts.threads)},
                                     budget_s=opts.latency_budget_s)
            latency = {"before": measured.median("float32"), "after": measured.median(RESULT)}
            timing = measured.to_dict()
        recommended, sentence = recommendation(passed, measured)
        # a warning only for slower beyond the run's margin: a ratio under the 5% floor inside
        # a wide margin is said in `recommendation` (and the CLI's table), not shouted
        if recommended is False and measured is not None and inprocess.speed(measured, RESULT) in ("slower", "mixed"):
            warnings.append(sentence)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    return OptimizeReport(
        input=str(src),
        output=str(out),
        passes=records,
        op_counts={"before": before, "after": after},
        comparison={
            "max_abs_diff": diff.max_abs_diff,
            "mean_abs_diff": diff.mean_abs_diff,
            "top1_agreement": diff.top1_agreement,
            "passed": passed,
            "outputs": [m.to_dict() for m in diff.outputs],
            "failures": diff.failures,
            "tolerance": opts.tolerance,
            "rtol": opts.rtol,
            "data": data.name,
            "samples": len(data),
        },
        latency_ms=latency,
        size_bytes={"before": model_size(src), "after": model_size(out)},
        ort_level=opts.ort_level,
        fold_constants=opts.fold_constants,
        culprit=culprit,
        warnings=warnings,
        latency=timing,
        environment=environment(opts.threads),
        recommended=recommended,
        recommendation=sentence,
        transformer=None if settings is None else settings.to_dict(),
    )
