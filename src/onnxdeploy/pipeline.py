"""The main job: every step on one model, one report.

PyTorch model -> ``model.onnx`` (export, parity) -> ``model.int8-dynamic.onnx`` (textbook dynamic
int8) and ``model.int8.onnx`` (the ``auto`` choice) -> ``model.opt.onnx`` (default passes) ->
compare float vs int8 -> serve both and bench them over HTTP, accuracy through the API.

``run_pipeline`` never prints; it reports progress through a callback and returns a
``PipelineReport``. A failing step raises ``PipelineError`` naming the step; artifacts of the
steps before it stay in place and the bench step stops its own servers.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OptionError, PipelineError, VerificationError, first_line

__all__ = ["PipelineError", "PipelineOptions", "PipelineReport", "run_pipeline"]

FLOAT_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INT8_DYNAMIC_FILE = "model.int8-dynamic.onnx"
OPT_FILE = "model.opt.onnx"
CONFIG_FILE = "config.yaml"

#: optimize runs before auto-quantize so that auto's one interleaved measurement also times the
#: optimized model: every variant's latency in the report is then one figure from one measurement
STEPS = ("export", "optimize", "quantize_dynamic", "quantize", "compare", "bench", "report")
STEP_TITLES = {
    "export": "export to ONNX + parity",
    "quantize_dynamic": "quantize: dynamic int8",
    "quantize": "quantize: auto",
    "optimize": "optimize graph",
    "compare": "compare float32 vs int8",
    "bench": "serve + bench over HTTP",
    "report": "write reports",
}


@dataclass
class PipelineOptions:
    """Every option of ``onnxdeploy pipeline``; a config file holds the same keys."""

    model: str = "digits-cnn"
    out: str = "pipeline-out"
    checkpoint: str | None = None
    input_shape: list[int] | None = None
    cache_dir: str | None = None
    data: str | None = None
    #: for a Hugging Face directory: feature-extraction, sentence-embedding or text-classification
    task: str | None = None
    tolerance: float = 1e-4
    max_accuracy_drop: float = 0.01
    passes: list[str] | None = None
    full: bool = False
    concurrency: list[int] | None = None
    requests: int | None = None
    duration: float | None = None
    repeats: int | None = None
    workers: int | None = None
    seed: int = 0
    #: also measure the float model on other runtimes (OpenVINO FP32, and BF16 on CPUs with
    #: BF16), when their extra is installed: ``model.float32-openvino.onnx`` ...
    runtimes: bool = True

    def bench_plan(self) -> dict[str, Any]:
        """Concurrency levels, requests and repeats: short by default, longer with ``full``."""
        # Short by default (about 20 s of load on two cores) yet three repeats, so the verdict can
        # tell a real difference from run-to-run noise; --full adds c=32 and longer runs.
        plan = (
            {"concurrency": [1, 8, 32], "requests": 5000, "repeats": 5}
            if self.full
            else {"concurrency": [1, 8], "requests": 1500, "repeats": 3}
        )
        if self.concurrency:
            plan["concurrency"] = list(self.concurrency)
        if self.requests:
            plan["requests"] = self.requests
        if self.repeats:
            plan["repeats"] = self.repeats
        return plan

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str = "") -> None:
        """Raise OptionError for a value of the wrong type or range, or a model the pipeline cannot
        start from, before any step runs (a config file goes through the same checks)."""
        w = f"{where}: " if where else ""
        _check_model_ref(self.model, w)
        for name in ("requests", "repeats", "workers", "seed"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < (0 if name == "seed" else 1)):
                raise OptionError(f"{w}{name} = {value!r}: expected a positive integer")
        for name, lo, hi in (("duration", 0.1, None), ("tolerance", 0.0, None), ("max_accuracy_drop", 0.0, 1.0)):
            value = getattr(self, name)
            if value is None and name == "duration":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < lo or (hi is not None and value >= hi):
                bound = f">= {lo}" + (f" and < {hi}" if hi is not None else "")
                raise OptionError(f"{w}{name} = {value!r}: expected a number {bound}")
        if self.concurrency is not None and (
                not isinstance(self.concurrency, list) or not self.concurrency
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in self.concurrency)):
            raise OptionError(f"{w}concurrency = {self.concurrency!r}: expected a list of positive integers, e.g. [1, 8]")
        if self.requests is not None and self.duration is not None:
            raise OptionError(f"{w}requests and duration: give one of them, not both")
        for name in ("out", "model"):
            if not isinstance(getattr(self, name), str):
                raise OptionError(f"{w}{name} = {getattr(self, name)!r}: expected a string")


def _check_model_ref(ref: Any, where: str) -> None:
    """The pipeline starts from PyTorch: a built-in name or a factory, never an .onnx file."""
    from .zoo import NAMES

    if not isinstance(ref, str) or not ref:
        raise OptionError(f"{where}model = {ref!r}: expected a built-in name or path/file.py:fn")
    if ref.lower().endswith(".onnx") or (Path(ref).is_file() and ":" not in ref):
        raise OptionError(
            f"{where}{ref}: the pipeline starts from a PyTorch model (a built-in name such as "
            f"{NAMES[0]}, path/file.py:fn or package.module:fn); for an .onnx file run the steps: "
            "onnxdeploy quantize / optimize / compare / serve / bench")
    if ":" not in ref and not Path(ref).is_dir() and ref not in NAMES:
        raise OptionError(
            f"{where}unknown built-in model {ref!r}; known: {', '.join(NAMES)} "
            "(or give a factory as path/to/file.py:fn or package.module:fn)")


def options_from_config(path: str | Path, overrides: dict[str, Any]) -> PipelineOptions:
    """Options from a YAML or TOML file, then explicit command-line values on top."""
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"--config {p}: no such file; expected a YAML or TOML file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text) or {}
    except Exception as exc:  # yaml and tomllib raise their own error types
        raise OptionError(f"--config {p}: cannot parse it: {first_line(exc)}") from exc
    if not isinstance(raw, dict):
        raise OptionError(f"--config {p}: expected a mapping of option names to values")
    raw = raw.get("pipeline", raw)
    known = {f.name for f in dataclasses.fields(PipelineOptions)}
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise OptionError(
            f"--config {p}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        options = PipelineOptions(**values)
    except TypeError as exc:
        raise OptionError(f"--config {p}: {exc}") from exc
    options.validate(f"--config {p}")
    return options


@dataclass
class StepRecord:
    """One step's outcome: its time and a one-line summary."""

    name: str
    seconds: float
    summary: str


@dataclass
class PipelineReport:
    """All step reports (``to_dict`` of each), the lineage, the one latency measurement, the verdict."""

    model: str
    out_dir: str
    options: dict[str, Any]
    steps: list[StepRecord] = field(default_factory=list)
    #: each step's typed report, serialized once, when the run's JSON is written
    results: dict[str, Any] = field(default_factory=dict)
    #: the summary table: one row per variant
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: ``variants[]`` of the contract: name, path, sha256, size_bytes, parent, produced_by
    lineage: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    verdict: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    total_seconds: float = 0.0
    #: typed objects the steps hand each other (reference, variants, measurement); not serialized
    context: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def reports(self) -> dict[str, Any]:
        """The step reports as JSON dicts (``to_dict`` of each typed report), keyed by step."""
        from .report.jsonio import to_jsonable

        return {step: to_jsonable(result) for step, result in self.results.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "out_dir": self.out_dir,
            "options": self.options,
            "environment": self.environment,
            "steps": [dataclasses.asdict(s) for s in self.steps],
            **self.reports,
            "variants": self.lineage,
            "latency": self.latency,
            "summary": {"variants": self.rows, "verdict": self.verdict.get("text", "")},
            "verdict": self.verdict,
            "sessions": self.sessions,
            "artifacts": self.artifacts,
            "total_seconds": self.total_seconds,
        }


#: progress(event, step, info): event is "start", "detail" (info["message"]), "done" or "fail"
Progress = Callable[[str, str, dict[str, Any]], None]


def _noop(event: str, step: str, info: dict[str, Any]) -> None:
    return None


def run_pipeline(options: PipelineOptions, progress: Progress | None = None) -> PipelineReport:
    """Run every step on one model; artifacts and reports go into ``options.out``."""
    notify = progress or _noop
    options.validate()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    from .environment import environment

    report = PipelineReport(model=options.model, out_dir=str(out), options=options.to_dict(),
                            environment=environment(None))
    started = time.perf_counter()
    _write_config(out / CONFIG_FILE, options)
    report.artifacts["config"] = str(out / CONFIG_FILE)

    for step in STEPS:
        notify("start", step, {"title": STEP_TITLES[step]})
        t0 = time.perf_counter()
        try:
            detail = functools.partial(notify, "detail", step)
            result, summary = _STEP_FUNCS[step](options, out, report, detail)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            notify("fail", step, {"seconds": time.perf_counter() - t0, "error": str(exc)})
            raise PipelineError(step, exc) from exc
        seconds = time.perf_counter() - t0
        if result is not None:
            report.results[step] = result
        report.steps.append(StepRecord(step, round(seconds, 2), summary))
        notify("done", step, {"seconds": seconds, "summary": summary})
    report.total_seconds = round(time.perf_counter() - started, 2)
    report.sessions = _session_counts(report)
    # the JSON on disk carries the final total as well
    from .report.jsonio import write_json

    write_json(out / "report.json", report)
    return report


def _write_config(path: Path, options: PipelineOptions) -> None:
    import yaml

    from .atomic import atomic_write

    atomic_write(path, yaml.safe_dump({"pipeline": options.to_dict()}, sort_keys=False))


# --------------------------------------------------------------------------- steps


def _session_counts(report: PipelineReport) -> dict[str, int]:
    """Sessions this run made per variant (by file), so a step that reloads a model shows up."""
    from .runtimes import session_counts

    counts = session_counts()
    base = report.context.get("sessions_at_start", {})
    by_path = {str(Path(v["path"]).resolve()): v["name"] for v in report.lineage}
    return {name: counts.get(path, 0) - base.get(path, 0) for path, name in by_path.items()}


def _variant(report: PipelineReport, name: str, path: Path, parent: str, produced_by: dict[str, Any],
             *, runtime: str | None = None, precision: str | None = None):
    from .measure import Variant

    v = Variant.of(name, path, parent=parent, produced_by=produced_by, runtime=runtime, precision=precision)
    report.context.setdefault("variants", {})[name] = v
    report.lineage = [x.to_dict() for x in report.context["variants"].values()]
    return v


def _reference(options: PipelineOptions, report: PipelineReport):
    """The float model's reference, built once for the whole run."""
    if "reference" not in report.context:
        from .measure import build_reference

        report.context["reference"] = build_reference(report.artifacts["float"], data=options.data)
    return report.context["reference"]


def _step_export(options: PipelineOptions, out: Path, report: PipelineReport, detail):
    from .export import ExportOptions, export_model
    from .runtimes import session_counts

    report.context["sessions_at_start"] = session_counts()
    result = export_model(
        options.model,
        out / FLOAT_FILE,
        ExportOptions(
            checkpoint=options.checkpoint,
            input_shape=options.input_shape,
            tolerance=options.tolerance,
            cache_dir=options.cache_dir,
            seed=options.seed,
            progress=True,
            task=options.task,
        ),
    )
    data = result.to_dict()
    if not data["parity"]["passed"]:
        raise VerificationError(
            f"parity check failed: max abs diff {data['parity']['max_abs_diff']:.3g} over tolerance "
            f"{options.tolerance:g}; {out / FLOAT_FILE} kept for inspection"
        )
    report.artifacts["float"] = str(out / FLOAT_FILE)
    source = f"pytorch:{options.model}" + (f" (checkpoint {options.checkpoint})" if options.checkpoint else "")
    _variant(report, "float32", out / FLOAT_FILE, source,
             {"step": "export", "exporter": data.get("exporter"), "opset": data.get("opset")})
    return result, f"max abs diff {data['parity']['max_abs_diff']:.2e} at batch {data['parity']['batch_sizes']}"


def _quantize(options: PipelineOptions, out: Path, report: PipelineReport, name: str, mode: str, **kwargs):
    from .quantize import QuantizeOptions, quantize_model

    # allow_slower: the pipeline exists to compare float and int8 over HTTP, so auto hands back
    # its best int8 candidate even when that is slower in process; the verdict decides shipping.
    return quantize_model(
        out / FLOAT_FILE,
        out / name,
        QuantizeOptions(mode=mode, data=options.data, max_accuracy_drop=options.max_accuracy_drop,
                        allow_slower=True, runtimes=options.runtimes and mode == "auto"),
        reference=_reference(options, report), **kwargs,
    )


def _step_quantize_dynamic(options, out, report, detail):
    # no timing here: auto's measurement times this very file as its "dynamic" candidate
    result = _quantize(options, out, report, INT8_DYNAMIC_FILE, "dynamic", measure_latency=False)
    report.artifacts["int8_dynamic"] = str(out / INT8_DYNAMIC_FILE)
    _stamp(out / INT8_DYNAMIC_FILE, "int8")
    _variant(report, "int8-dynamic", out / INT8_DYNAMIC_FILE, "float32",
             {"step": "quantize", "mode": "dynamic", "settings": result.settings})
    return result, f"{result.size_ratio:.2f}x smaller (timed with every variant in the next step)"


def _stamp(path: Path, precision: str, runtime: str = "onnxruntime") -> None:
    """A written variant carries its runtime and precision in its metadata (serve reads them)."""
    from .modelfile import write_variant

    write_variant(path, path, runtime=runtime, precision=precision)


def variant_file(name: str) -> str:
    """``model.<variant>.onnx``: where the pipeline writes a variant it adds (runtime variants)."""
    return f"model.{name}.onnx"


def _runtime_variants(options: PipelineOptions, out: Path, report: PipelineReport) -> list:
    """The float model on other runtimes (OpenVINO FP32, BF16 where the CPU has it), written as
    copies of ``model.onnx`` that carry their runtime and precision; [] without the extra."""
    from .measure import runtime_variants
    from .modelfile import write_variant

    if not options.runtimes:
        return []
    made = []
    for name, runtime, precision in runtime_variants():
        path = write_variant(out / FLOAT_FILE, out / variant_file(name), runtime=runtime, precision=precision)
        report.artifacts[name] = str(path)
        made.append(_variant(report, name, path, "float32",
                             {"step": "runtime", "runtime": runtime, "precision": precision},
                             runtime=runtime, precision=precision))
    return made


def _step_quantize(options, out, report, detail):
    from .measure.latency import REFERENCE

    variants = report.context["variants"]
    extra = [variants["float32-opt"]] if "float32-opt" in variants else []
    on_runtimes = _runtime_variants(options, out, report)
    prebuilt = {"dynamic": out / INT8_DYNAMIC_FILE} if "int8-dynamic" in variants else {}
    result = _quantize(options, out, report, INT8_FILE, "auto", prebuilt=prebuilt,
                       extra=extra + on_runtimes)
    if result.output is None:
        raise VerificationError(result.reason)
    report.artifacts["int8"] = str(out / INT8_FILE)
    m = result.measurement
    chosen = result.chosen
    # auto's choice may run on another runtime (NNCF's int8 on OpenVINO): serve runs it there
    _stamp(out / INT8_FILE, "int8" if chosen != "float32" else "fp32",
           runtime=result.settings.get("runtime", "onnxruntime"))
    _variant(report, "int8", out / INT8_FILE, "float32",
             {"step": "quantize", "mode": "auto", "chosen": chosen, "settings": result.settings})
    # the lineage lists the runtime variants after the int8 ones
    for v in on_runtimes:
        report.context["variants"][v.name] = report.context["variants"].pop(v.name)
    report.lineage = [x.to_dict() for x in report.context["variants"].values()]
    names = {"float32": REFERENCE, "int8": chosen}
    if prebuilt:
        names["int8-dynamic"] = "dynamic"
    if extra:
        names["float32-opt"] = "float32-opt"
    for v in on_runtimes:
        names[v.name] = v.name
    names = {k: v for k, v in names.items() if v in m.results}
    report.context["measurement"] = m
    report.context["names"] = names
    latency = m.latency.renamed({k: v for k, v in names.items() if k != "float32"})
    report.context["latency"] = latency
    report.latency = latency.to_dict()
    _attach_latency(report, latency)
    from .judge import inprocess

    speeds = inprocess.speed_text(latency, "int8")
    return result, f"chose {chosen}: {result.size_ratio:.2f}x smaller, {speeds}; timing noise {100 * latency.noise:.1f}%"


def _attach_latency(report: PipelineReport, latency) -> None:
    """Every section that shows a variant's latency shows the one measurement's figure.

    The typed step reports get it before anything is serialized; optimize's recommendation is
    the judge's, on the same figure (optimize itself ran untimed in the pipeline).
    """
    from .judge.recommend import recommendation

    dyn = report.results.get("quantize_dynamic")
    if dyn is not None and "int8-dynamic" in latency.figures:
        dyn.latency_before = latency.median("float32")
        dyn.latency_after = latency.median("int8-dynamic")
        dyn.latency = latency.renamed({"int8-dynamic": "int8-dynamic"}).to_dict()
    opt = report.results.get("optimize")
    if opt is not None and "float32-opt" in latency.figures:
        opt.latency_ms = {"before": latency.median("float32"), "after": latency.median("float32-opt")}
        opt.latency = latency.renamed({"float32-opt": "float32-opt"}).to_dict()
        opt.recommended, opt.recommendation = recommendation(opt.comparison.get("passed"), latency, "float32-opt")


def _step_optimize(options, out, report, detail):
    from .optimize import OptimizeOptions, optimize_model

    kwargs: dict[str, Any] = {"tolerance": options.tolerance, "latency_rounds": 0}
    if options.passes:
        kwargs["passes"] = list(options.passes)
    result = optimize_model(out / FLOAT_FILE, out / OPT_FILE, OptimizeOptions(**kwargs),
                            reference=_reference(options, report))
    d = result.to_dict()
    if d["comparison"]["passed"] is False:
        raise VerificationError(
            f"optimized model differs from the input by {d['comparison']['max_abs_diff']:.3g}; "
            f"{out / OPT_FILE} kept for inspection"
        )
    report.artifacts["optimized"] = str(out / OPT_FILE)
    _stamp(out / OPT_FILE, "fp32")
    _variant(report, "float32-opt", out / OPT_FILE, "float32",
             {"step": "optimize", "passes": [p["name"] for p in d["passes"]], "ort_level": d["ort_level"]})
    before = sum(d["op_counts"]["before"].values())
    after = sum(d["op_counts"]["after"].values())
    changed = [p["name"] for p in d["passes"] if p.get("changed")]
    return result, f"{before} -> {after} nodes ({', '.join(changed) or 'no pass changed anything'})"


def _step_compare(options, out, report, detail):
    from .compare import B_NAME, CompareOptions, compare_models

    latency = report.context["latency"].renamed({B_NAME: "int8"})
    result = compare_models(out / FLOAT_FILE, out / INT8_FILE, CompareOptions(data=options.data),
                            reference=_reference(options, report), latency=latency)
    agree = result.top1_agreement
    return result, (
        f"max abs diff {result.max_abs_diff:.3g}"
        + (f", top-1 agreement {100 * agree:.1f}%" if agree is not None else "")
        + (f", min cosine {result.min_cosine:.4f}" if result.min_cosine is not None else "")
    )


#: variants the bench step serves at most (the float model, auto's int8, one more contender)
MAX_SERVED = 3


def _within_bounds(report: PipelineReport) -> dict[str, str]:
    """Per variant: why it misses its quality bound ("" when within it), in process and served."""
    names, m = report.context["names"], report.context["measurement"]
    quant = report.results.get("quantize")
    by_candidate = {c.name: c for c in (quant.candidates if quant is not None else [])}
    opt = report.results.get("optimize")
    why: dict[str, str] = {"float32": ""}
    if opt is not None and opt.comparison.get("passed") is False:
        why["float32-opt"] = "differs from float32 beyond the tolerance"
    for name, key in names.items():
        if name.startswith("int8"):
            c = by_candidate.get(key)
            result = m.results[key]
            ok = c.admissible if c is not None else (
                result.comparison is not None and result.comparison.passed is not False and result.int8_ops > 0)
            if not ok:
                why[name] = "misses its quality bound (" + ("; ".join(c.failures) if c and c.failures
                                                            else "accuracy, agreement or min cosine") + ")"
        elif name not in why and (result := m.results.get(key)) is not None and result.comparison is not None \
                and result.comparison.passed is False:
            # a runtime variant (float32-openvino, bf16-openvino): judged by output kind like int8
            why[name] = "misses its quality bound (" + ("; ".join(result.comparison.failures)
                                                        or "accuracy, agreement or min cosine") + ")"
        why.setdefault(name, "")
    bench = report.context.get("bench")
    for name, q in ((bench.quality or {}) if bench is not None else {}).items():
        # quality measured through the API counts too: served embeddings that miss the bound do not ship
        if q and q.get("passed") is False:
            why[name] = f"misses its quality bound served (min cosine {q.get('min_cosine'):.4f})"
    return why


#: runtimes ``serve`` can run a variant on (it reads ``onnxdeploy.runtime`` from the file)
SERVED_RUNTIMES = ("onnxruntime", "openvino")


def _servable(report: PipelineReport, name: str) -> bool:
    v = report.context.get("variants", {}).get(name)
    return v is None or v.runtime in SERVED_RUNTIMES


def contenders_to_serve(report: PipelineReport) -> list[str]:
    """float32, auto's int8, and the in-process contenders no other variant beats at every batch size.

    Only a served variant can ship; serving costs a bench run per variant, so at most
    ``MAX_SERVED``, the fastest at its worst batch size first.
    """
    from .judge import inprocess

    latency, names = report.context["latency"], report.context["names"]
    why = _within_bounds(report)
    pool = [n for n in names if not why.get(n) and _servable(report, n)]
    front = [n for n in pool if not any(inprocess.dominates(latency, o, n) for o in pool if o != n)]
    served = ["float32"] + (["int8"] if "int8" in names else [])
    for name in sorted(front, key=lambda n: -inprocess.worst_speedup(latency, n)):
        if name not in served and len(served) < MAX_SERVED:
            served.append(name)
    return served


def _step_bench(options, out, report, detail):
    from .bench import BenchOptions, run_bench

    plan = options.bench_plan()
    served = contenders_to_serve(report)
    paths = {v.name: v.path for v in report.context["variants"].values()}
    report.context["served"] = served
    bench_opts = BenchOptions(
        models=[str(paths[name]) for name in served],
        names=served,
        concurrency=plan["concurrency"],
        requests=None if options.duration else plan["requests"],
        duration_s=options.duration,
        repeats=plan["repeats"],
        data=options.data,
        server_workers=options.workers,
        # the pipeline decides once, for the whole run, in its verdict: bench reports findings
        decide=False,
    )
    result = run_bench(bench_opts, progress=lambda message: detail({"message": message}))
    report.context["bench"] = result
    from .bench import write_outputs

    written = write_outputs(result, out / "bench")
    for path in written:
        report.artifacts[f"bench/{Path(path).name}"] = str(path)
    return result, (result.verdict or {}).get("text", "")


def decide_verdict(report: PipelineReport) -> dict[str, Any]:
    """The run's one verdict: the judge's shipping rule over the served variants."""
    from .judge import inprocess
    from .judge.http import Speed, same
    from .judge.ship import Contender, decide

    m, names, latency = report.context.get("measurement"), report.context.get("names", {}), report.context.get("latency")
    if m is None or latency is None:
        return {"ship": "float32", "text": "Ship float32: no variant was measured against it.",
                "rested_on": "nothing measured", "speed": "undecided"}
    bench = report.context.get("bench")
    verdict = (bench.verdict or {}) if bench is not None else {}
    comparisons = verdict.get("comparisons") or {}
    served = report.context.get("served", [])
    why = _within_bounds(report)
    quant = report.results.get("quantize")
    chosen = quant.chosen if quant is not None else None
    ref_acc = m.reference.accuracy
    contenders = []
    repeats = max((c.get("repeats") or 0 for c in comparisons.values()), default=0)
    base_speed = next(iter(comparisons.values()), None)
    for entry in report.lineage:
        name = entry["name"]
        shown = _shown(entry, chosen if name == "int8" else "")
        key = names.get(name)
        result = m.results.get(key) if key else None
        delta = None if ref_acc is None or result is None or result.accuracy is None else result.accuracy - ref_acc
        if name == "float32":
            speed = same(repeats, *((base_speed["what"], base_speed["where"]) if base_speed else ()))
        else:
            speed = Speed.from_dict(comparisons[name]) if name in comparisons else None
        contenders.append(Contender(
            name, entry["size_bytes"], admissible=not why.get(name), why_not=why.get(name, ""),
            served=name in served and (name == "float32" or speed is not None), speed=speed,
            in_process="" if name == "float32" else inprocess.short_text(latency, name),
            label=chosen if name == "int8" and chosen else "", accuracy_delta=delta, shown=shown))
    d = decide(contenders, simplicity=_simplicity(report))
    out = d.to_dict()
    out["served"] = served
    out["in_process"] = {c.name: inprocess.speed(latency, c.name) for c in contenders if c.name != "float32"}
    if latency.too_noisy:
        out["text"] += (f" In-process timing was noisy (A/A control {100 * latency.noise:.0f}% apart): "
                        "in-process speed is undecided.")
    return out


def _shown(entry: dict[str, Any], label: str) -> str:
    """How the verdict names a variant on another runtime: ``float32 on OpenVINO (bf16)`` (the
    precision it ran at, as the runtime reported it), ``int8 on OpenVINO (nncf-int8-mixed)``."""
    if entry.get("runtime", "onnxruntime") == "onnxruntime":
        return ""
    runtime = {"openvino": "OpenVINO"}.get(entry["runtime"], entry["runtime"])
    if entry.get("precision") == "int8":
        return f"int8 on {runtime}" + (f" ({label})" if label else "")
    return f"float32 on {runtime} ({entry.get('precision_used') or entry.get('precision')})"


def _simplicity(report: PipelineReport) -> tuple[str, ...]:
    """The shipping rule's order of the simpler, with ORT before OpenVINO and float before int8:
    auto's int8 on OpenVINO (NNCF) comes after the float variants on OpenVINO."""
    from .judge.ship import SIMPLICITY

    v = report.context.get("variants", {}).get("int8")
    if v is None or v.runtime == "onnxruntime":
        return SIMPLICITY
    return (*[n for n in SIMPLICITY if n != "int8"], "int8")


def _step_report(options, out, report, detail):
    from .report.html import write_html
    from .report.markdown import write_markdown
    from .report.plots import summary_plot
    from .report.sections import build_sections
    from .report.summary import summarize

    report.rows = summarize(report)
    report.verdict = decide_verdict(report)
    report.total_seconds = round(sum(s.seconds for s in report.steps), 2)
    report.sessions = _session_counts(report)
    plot = summary_plot(out / "summary.png", report.rows)
    if plot is not None:
        report.artifacts["summary.png"] = str(plot)
    bench_images = [
        (Path(p).stem.replace("_", " "), Path(p))
        for key, p in sorted(report.artifacts.items())
        if key.startswith("bench/") and str(p).endswith(".png")
    ]
    sections = build_sections(report, plot, bench_images)
    title = f"onnxdeploy: {report.model} from PyTorch to served int8"
    subtitle = f"{len(report.steps)} steps in {report.total_seconds:.0f} s; artifacts in {out}"
    report.artifacts["report.json"] = str(out / "report.json")
    report.artifacts["report.md"] = str(write_markdown(out / "report.md", title, sections))
    report.artifacts["report.html"] = str(write_html(out / "report.html", title, subtitle, sections))
    return None, str(out / "report.html")


_STEP_FUNCS = {
    "export": _step_export,
    "quantize_dynamic": _step_quantize_dynamic,
    "quantize": _step_quantize,
    "optimize": _step_optimize,
    "compare": _step_compare,
    "bench": _step_bench,
    "report": _step_report,
}
