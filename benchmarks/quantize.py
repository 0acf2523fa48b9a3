"""Benchmark of ``onnxdeploy quantize``: every built-in model in every mode, and what timing costs.

For each (model, mode) it reports the size ratio, the accuracy delta on the digits test split,
and the latency ratio int8/float at batch 1 and 32. The latency ratio is measured again after
quantization, independently of the measurement ``auto`` used to choose (so the winner is not
flattered by its own selection), through the measurement stage: float, its A/A control and int8
interleaved in one process on the same inputs, ``--repeats`` times; the median ratio and the
largest A/A noise are reported.

A second table times the quantize command itself on a ~10 MB model (``--cost-mb``): wall time of
``--mode dynamic`` and ``--mode auto`` with the default latency budget.

    python benchmarks/quantize.py [--models digits-mlp,digits-cnn] [--modes dynamic,static,auto]
                                  [--repeats 3] [--cost-mb 10] [--json results.json]

Goals checked: digits-mlp dynamic >= 3.9x smaller, >= 2x faster at batch 1, <= 1 pp accuracy
loss; digits-cnn auto not slower than float beyond the measured noise; quantize on the ~10 MB
model under 60 s in every mode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from onnxdeploy.export import ExportOptions, export_model
from onnxdeploy.measure import build_reference
from onnxdeploy.measure.latency import MIN_MARGIN
from onnxdeploy.measure.variants import time_variants
from onnxdeploy.quantize import QuantizeOptions, quantize_model
from onnxdeploy.report.jsonio import write_json
from onnxdeploy.runtimes import make_session
from onnxdeploy.zoo import NAMES

BATCHES = (1, 32)
COST_LIMIT_S = 60.0


def latency_ratios(float_path: Path, int8_path: Path, *, repeats: int, threads: int | None = None) -> dict:
    """Median over ``repeats`` of the int8/float latency ratio at each batch size (interleaved
    with an A/A control), and the largest A/A noise seen."""
    ref = build_reference(float_path, data="digits", threads=threads)
    sess = make_session(int8_path, threads=threads)
    runs = [time_variants(ref, {"int8": sess}) for _ in range(repeats)]
    out = {}
    for size in BATCHES:
        key = f"batch_{size}"
        out[key] = {
            "float_ms": statistics.median(r.figures["float32"][key].median_ms for r in runs),
            "int8_ms": statistics.median(r.figures["int8"][key].median_ms for r in runs),
            "ratio": statistics.median(1 / r.speedup("int8")[key] for r in runs),
        }
    out["noise"] = max(r.noise for r in runs)
    return out


def big_mlp(path: Path, megabytes: float) -> Path:
    """A float MLP of about ``megabytes`` MB (64 -> h -> h -> 10, Gemm), built with onnx.helper."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from onnxdeploy.modelfile import save_model

    hidden = int((megabytes * 2**20 / 4) ** 0.5)
    rng = np.random.default_rng(0)
    weights = {"w1": (hidden, 64), "w2": (hidden, hidden), "w3": (10, hidden)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[1])).astype(np.float32), n)
             for n, s in weights.items()]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h1"], transB=1), helper.make_node("Relu", ["h1"], ["r1"]),
         helper.make_node("Gemm", ["r1", "w2"], ["h2"], transB=1), helper.make_node("Relu", ["h2"], ["r2"]),
         helper.make_node("Gemm", ["r2", "w3"], ["logits"], transB=1)],
        "big_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save_model(model, path)


def timing_cost(megabytes: float, modes: list[str], threads: int | None) -> list[dict]:
    """Wall time of quantize per mode on a model of about ``megabytes`` MB, default budget."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-bench-cost-") as tmp:
        src = big_mlp(Path(tmp) / "big.onnx", megabytes)
        for mode in modes:
            t0 = time.perf_counter()
            report = quantize_model(src, Path(tmp) / f"big.{mode}.onnx",
                                    QuantizeOptions(mode=mode, data="random", threads=threads))
            seconds = time.perf_counter() - t0
            rows.append({"mode": mode, "size_bytes": report.size_before, "seconds": seconds,
                         "chosen": report.chosen, "noise": (report.latency or {}).get("noise"),
                         "budget_s": QuantizeOptions().latency_budget_s})
    return rows


def run(models: list[str], modes: list[str], *, repeats: int, threads: int | None = None) -> list[dict]:
    """One row per (model, mode)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-bench-quantize-") as tmp:
        work = Path(tmp)
        for name in models:
            src = Path(export_model(name, work / f"{name}.onnx", ExportOptions()).onnx_path)
            for mode in modes:
                out = work / f"{name}.{mode}.onnx"
                report = quantize_model(src, out, QuantizeOptions(mode=mode, threads=threads))
                d = report.to_dict()
                lat = latency_ratios(src, out, repeats=repeats, threads=threads)
                cmp_ = d["comparison"]
                rows.append({
                    "model": name,
                    "mode": mode,
                    "chosen": report.chosen if mode == "auto" else mode,
                    "size_bytes": d["size_bytes"],
                    "size_ratio": d["size_ratio"],
                    "accuracy_before": cmp_["accuracy_before"],
                    "accuracy_after": cmp_["accuracy_after"],
                    "accuracy_delta_pp": 100 * (cmp_["accuracy_after"] - cmp_["accuracy_before"]),
                    "latency": lat,
                    "report_speedup": d["speedup"],
                    "warnings": d["warnings"],
                })
    return rows


def goals(rows: list[dict], cost: list[dict]) -> list[dict]:
    """The issue's goals, each with the measured value and whether it holds."""
    out = []
    for r in rows:
        if (r["model"], r["mode"]) == ("digits-mlp", "dynamic"):
            speed = 1 / r["latency"]["batch_1"]["ratio"]
            out += [
                {"goal": "digits-mlp dynamic >= 3.9x smaller", "value": r["size_ratio"], "ok": r["size_ratio"] >= 3.9},
                {"goal": "digits-mlp dynamic >= 2x faster at batch 1", "value": speed, "ok": speed >= 2},
                {"goal": "digits-mlp dynamic <= 1 pp accuracy loss", "value": r["accuracy_delta_pp"],
                 "ok": r["accuracy_delta_pp"] >= -1},
            ]
        if (r["model"], r["mode"]) == ("digits-cnn", "auto"):
            worst = max(r["latency"][f"batch_{b}"]["ratio"] for b in BATCHES)
            margin = max(MIN_MARGIN, r["latency"]["noise"])
            out.append({"goal": f"digits-cnn auto not slower than float at batch 1 or 32 (ratio <= 1+noise {margin:.3f})",
                        "value": worst, "ok": worst <= 1 + margin})
    for c in cost:
        out.append({"goal": f"quantize --mode {c['mode']} on a {c['size_bytes'] / 2**20:.1f} MiB model in < {COST_LIMIT_S:.0f} s",
                    "value": c["seconds"], "ok": c["seconds"] < COST_LIMIT_S})
    return out


def table(rows: list[dict], cost: list[dict], checks: list[dict]) -> str:
    """A plain-text table of the rows and the goals."""
    head = f"{'model':<11} {'mode':<8} {'chosen':<22} {'size x':>7} {'lat b1':>7} {'lat b32':>8} {'acc before':>10} {'acc after':>9} {'d pp':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<11} {r['mode']:<8} {r['chosen'] or '-':<22} {r['size_ratio'] or 0:>6.2f}x "
            f"{r['latency']['batch_1']['ratio']:>6.2f}x {r['latency']['batch_32']['ratio']:>7.2f}x "
            f"{100 * r['accuracy_before']:>9.2f}% {100 * (r['accuracy_after'] or 0):>8.2f}% {r['accuracy_delta_pp']:>+6.2f}"
        )
    lines.append("lat = int8 latency / float latency (below 1 is faster), median of interleaved repeats; "
                 f"largest A/A noise {max((r['latency']['noise'] for r in rows), default=0):.3f}")
    lines.append("")
    if cost:
        lines.append(f"{'quantize wall time':<20} {'size':>9} {'seconds':>8} {'chosen':<22} {'A/A noise':>9}")
        for c in cost:
            lines.append(f"--mode {c['mode']:<13} {c['size_bytes'] / 2**20:>7.1f}Mi {c['seconds']:>8.1f} "
                         f"{c['chosen'] or '-':<22} {100 * (c['noise'] or 0):>8.1f}%")
        lines.append("")
    for c in checks:
        lines.append(f"[{'PASS' if c['ok'] else 'FAIL'}] {c['goal']}: {c['value']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally write JSON; exit 1 when a goal fails."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(NAMES))
    p.add_argument("--modes", default="dynamic,static,auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cost-mb", type=float, default=10.0,
                   help="size of the model whose quantize wall time is measured (0 skips it)")
    p.add_argument("--threads", type=int, default=None,
                   help="ORT intra-op threads (default: every CPU available; `onnxdeploy serve` "
                        "runs one per worker)")
    p.add_argument("--json", dest="json_path")
    args = p.parse_args(argv)
    rows = run(args.models.split(","), args.modes.split(","), repeats=args.repeats, threads=args.threads)
    cost = timing_cost(args.cost_mb, ["dynamic", "auto"], args.threads) if args.cost_mb > 0 else []
    checks = goals(rows, cost)
    print(table(rows, cost, checks))
    if args.json_path:
        write_json(args.json_path, {"rows": rows, "cost": cost, "goals": checks})
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
