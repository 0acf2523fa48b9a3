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

from .errors import OnnxDeployError, OptionError, VerificationError

FLOAT_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INT8_DYNAMIC_FILE = "model.int8-dynamic.onnx"
OPT_FILE = "model.opt.onnx"
CONFIG_FILE = "config.yaml"

STEPS = ("export", "quantize_dynamic", "quantize", "optimize", "compare", "bench", "report")
STEP_TITLES = {
    "export": "export to ONNX + parity",
    "quantize_dynamic": "quantize: dynamic int8",
    "quantize": "quantize: auto",
    "optimize": "optimize graph",
    "compare": "compare float vs int8",
    "bench": "serve + bench over HTTP",
    "report": "write reports",
}


class PipelineError(OnnxDeployError):
    """A step of the pipeline failed; ``step`` names it and ``cause`` is the original error."""

    def __init__(self, step: str, cause: BaseException):
        self.step = step
        self.cause = cause
        self.exit_code = getattr(cause, "exit_code", 1)
        super().__init__(f"step '{step}' failed: {type(cause).__name__}: {cause}")


@dataclass
class PipelineOptions:
    """Every option of ``onnxdeploy pipeline``; a config file holds the same keys."""

    model: str = "digits-cnn"
    out: str = "pipeline-out"
    checkpoint: str | None = None
    input_shape: list[int] | None = None
    cache_dir: str | None = None
    data: str | None = None
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
        raise OptionError(f"--config {p}: cannot parse it: {exc}".splitlines()[0]) from exc
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
        return PipelineOptions(**values)
    except TypeError as exc:
        raise OptionError(f"--config {p}: {exc}") from exc


@dataclass
class StepRecord:
    """One step's outcome: its time and a one-line summary."""

    name: str
    seconds: float
    summary: str


@dataclass
class PipelineReport:
    """All step reports (``to_dict`` of each) plus the summary across variants."""

    model: str
    out_dir: str
    options: dict[str, Any]
    steps: list[StepRecord] = field(default_factory=list)
    reports: dict[str, Any] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    total_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "out_dir": self.out_dir,
            "options": self.options,
            "steps": [dataclasses.asdict(s) for s in self.steps],
            **self.reports,
            "summary": {"variants": self.variants, "verdict": self.verdict},
            "artifacts": self.artifacts,
            "total_seconds": self.total_seconds,
        }


#: progress(event, step, info): event is "start", "detail" (info["message"]), "done" or "fail"
Progress = Callable[[str, str, dict[str, Any]], None]


def _noop(event: str, step: str, info: dict[str, Any]) -> None:
    return None


def run_pipeline(options: PipelineOptions, progress: Progress | None = None) -> PipelineReport:
    """Run every step on one model; artifacts and reports go into ``options.out``."""
    from .report.jsonio import to_jsonable

    notify = progress or _noop
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    report = PipelineReport(model=options.model, out_dir=str(out), options=options.to_dict())
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
            report.reports[step] = to_jsonable(result)
        report.steps.append(StepRecord(step, round(seconds, 2), summary))
        notify("done", step, {"seconds": seconds, "summary": summary})
    report.total_seconds = round(time.perf_counter() - started, 2)
    # the JSON on disk carries the final total as well
    from .report.jsonio import write_json

    write_json(out / "report.json", report)
    return report


def _write_config(path: Path, options: PipelineOptions) -> None:
    import yaml

    from .atomic import atomic_write

    atomic_write(path, yaml.safe_dump({"pipeline": options.to_dict()}, sort_keys=False))


# --------------------------------------------------------------------------- steps


def _step_export(options: PipelineOptions, out: Path, report: PipelineReport, detail):
    from .export import ExportOptions, export_model

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
        ),
    )
    data = result.to_dict()
    if not data["parity"]["passed"]:
        raise VerificationError(
            f"parity check failed: max abs diff {data['parity']['max_abs_diff']:.3g} over tolerance "
            f"{options.tolerance:g}; {out / FLOAT_FILE} kept for inspection"
        )
    report.artifacts["float"] = str(out / FLOAT_FILE)
    return result, f"max abs diff {data['parity']['max_abs_diff']:.2e} at batch {data['parity']['batch_sizes']}"


def _quantize(options: PipelineOptions, out: Path, name: str, mode: str):
    from .quantize import QuantizeOptions, quantize_model

    # allow_slower: the pipeline exists to compare float and int8 over HTTP, so auto hands back
    # its best int8 candidate even when that is slower in process; the report says so plainly.
    result = quantize_model(
        out / FLOAT_FILE,
        out / name,
        QuantizeOptions(mode=mode, data=options.data, max_accuracy_drop=options.max_accuracy_drop,
                        allow_slower=True),
    )
    d = result.to_dict()
    ratio = d.get("size_ratio")
    speed = d.get("latency_ms", {})
    before = speed.get("before", {}).get("batch_1")
    after = speed.get("after", {}).get("batch_1")
    faster = f", batch-1 latency {before / after:.2f}x" if before and after else ""
    return result, f"{ratio:.2f}x smaller{faster}"


def _step_quantize_dynamic(options, out, report, detail):
    result, summary = _quantize(options, out, INT8_DYNAMIC_FILE, "dynamic")
    report.artifacts["int8_dynamic"] = str(out / INT8_DYNAMIC_FILE)
    return result, summary


def _step_quantize(options, out, report, detail):
    result, summary = _quantize(options, out, INT8_FILE, "auto")
    report.artifacts["int8"] = str(out / INT8_FILE)
    chosen = result.to_dict().get("chosen") or {}
    name = chosen.get("name") if isinstance(chosen, dict) else chosen
    return result, f"chose {name}: {summary}" if name else summary


def _step_optimize(options, out, report, detail):
    from .optimize import OptimizeOptions, optimize_model

    kwargs: dict[str, Any] = {"tolerance": options.tolerance}
    if options.passes:
        kwargs["passes"] = list(options.passes)
    result = optimize_model(out / FLOAT_FILE, out / OPT_FILE, OptimizeOptions(**kwargs))
    d = result.to_dict()
    if not d["comparison"]["passed"]:
        raise VerificationError(
            f"optimized model differs from the input by {d['comparison']['max_abs_diff']:.3g}; "
            f"{out / OPT_FILE} kept for inspection"
        )
    report.artifacts["optimized"] = str(out / OPT_FILE)
    before = sum(d["op_counts"]["before"].values())
    after = sum(d["op_counts"]["after"].values())
    changed = [p["name"] for p in d["passes"] if p.get("changed")]
    return result, f"{before} -> {after} nodes ({', '.join(changed) or 'no pass changed anything'})"


def _step_compare(options, out, report, detail):
    from .compare import CompareOptions, compare_models

    result = compare_models(out / FLOAT_FILE, out / INT8_FILE, CompareOptions(data=options.data))
    report.reports["latency"] = _variant_latency(options, report.artifacts)
    agree = result.top1_agreement
    return result, (
        f"max abs diff {result.max_abs_diff:.3g}"
        + (f", top-1 agreement {100 * agree:.1f}%" if agree is not None else "")
    )


#: artifact keys of the model variants whose in-process latency the summary compares
VARIANT_KEYS = ("float", "int8_dynamic", "int8", "optimized")


def _variant_latency(options: PipelineOptions, artifacts: dict[str, str]) -> dict[str, Any]:
    """In-process latency of every variant in one A/B/A/B measurement, so the summary column is
    comparable (each step's own figures were taken at different moments on a shared machine)."""
    from .compare import DEFAULT_LATENCY_BATCH
    from .data import load_data
    from .modelfile import load_model, signature
    from .runtime import ab_latency, make_session

    present = {k: artifacts[k] for k in VARIANT_KEYS if k in artifacts}
    sessions = [make_session(path) for path in present.values()]
    data = load_data(options.data, signature(load_model(artifacts["float"])))
    variants: dict[str, dict[str, float]] = {k: {} for k in present}
    for size in sorted({1, DEFAULT_LATENCY_BATCH}) if data.batched else [1]:
        for key, ms in zip(present, ab_latency(sessions, data.feeds(size))):
            variants[key][f"batch_{size}"] = ms
    return {"method": "median ms per run, all variants alternated in one measurement",
            "variants": variants}


def _step_bench(options, out, report, detail):
    from .bench import BenchOptions, run_bench

    plan = options.bench_plan()
    bench_opts = BenchOptions(
        models=[str(out / FLOAT_FILE), str(out / INT8_FILE)],
        names=["float32", "int8"],
        concurrency=plan["concurrency"],
        requests=None if options.duration else plan["requests"],
        duration_s=options.duration,
        repeats=plan["repeats"],
        data=options.data,
        server_workers=options.workers,
    )
    result = run_bench(bench_opts, progress=lambda message: detail({"message": message}))
    from .bench import write_outputs

    written = write_outputs(result, out / "bench")
    for path in written:
        report.artifacts[f"bench/{Path(path).name}"] = str(path)
    verdict = result.to_dict().get("verdict", {})
    return result, verdict.get("text", "")


def _step_report(options, out, report, detail):
    from .report.html import write_html
    from .report.markdown import write_markdown
    from .report.plots import summary_plot
    from .report.sections import build_sections
    from .report.summary import summarize

    report.variants, report.verdict = summarize(report.reports, report.artifacts)
    report.total_seconds = round(sum(s.seconds for s in report.steps), 2)
    plot = summary_plot(out / "summary.png", report.variants)
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
