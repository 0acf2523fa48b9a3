"""Benchmark of ``onnxdeploy quantize``: every built-in model in every mode.

For each (model, mode) it reports the size ratio, the accuracy delta on the digits test split,
and the latency ratio int8/float at batch 1 and 32. The latency ratio is measured again after
quantization, independently of the measurement ``auto`` used to choose (so the winner is not
flattered by its own selection): float and int8 alternate A/B/A/B in one process on the same
inputs, ``--repeats`` times, and the median ratio is reported.

    python benchmarks/quantize.py [--models digits-mlp,digits-cnn] [--modes dynamic,static,auto]
                                  [--repeats 5] [--json results.json]

Goals checked: digits-mlp dynamic >= 3.9x smaller, >= 2x faster at batch 1, <= 1 pp accuracy
loss; digits-cnn auto not slower than float at batch 1 or 32 (within the 2% noise band).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from onnxdeploy.data import load_data
from onnxdeploy.export import ExportOptions, export_model
from onnxdeploy.modelfile import load_model, signature
from onnxdeploy.quantize import QuantizeOptions, quantize_model
from onnxdeploy.report.jsonio import write_json
from onnxdeploy.runtime import ab_latency, make_session
from onnxdeploy.zoo import NAMES

BATCHES = (1, 32)
NOISE = QuantizeOptions().speed_tolerance


def latency_ratios(float_path: Path, int8_path: Path, *, repeats: int, rounds: int, iters: int,
                   threads: int | None = None) -> dict:
    """Median over ``repeats`` of the A/B-measured int8/float latency ratio at each batch size."""
    data = load_data("digits", signature(load_model(float_path)))
    a, b = make_session(float_path, threads=threads), make_session(int8_path, threads=threads)
    out = {}
    for size in BATCHES:
        feeds = data.feeds(size)
        pairs = [ab_latency([a, b], feeds, rounds=rounds, iters=iters) for _ in range(repeats)]
        out[f"batch_{size}"] = {
            "float_ms": statistics.median(p[0] for p in pairs),
            "int8_ms": statistics.median(p[1] for p in pairs),
            "ratio": statistics.median(p[1] / p[0] for p in pairs),
        }
    return out


def run(models: list[str], modes: list[str], *, repeats: int, rounds: int, iters: int,
        threads: int | None = None) -> list[dict]:
    """One row per (model, mode)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-bench-quantize-") as tmp:
        work = Path(tmp)
        for name in models:
            src = Path(export_model(name, work / f"{name}.onnx", ExportOptions()).onnx_path)
            for mode in modes:
                out = work / f"{name}.{mode}.onnx"
                report = quantize_model(src, out, QuantizeOptions(mode=mode, latency_rounds=rounds,
                                                                  latency_iters=iters, threads=threads))
                d = report.to_dict()
                lat = latency_ratios(src, out, repeats=repeats, rounds=rounds, iters=iters,
                                     threads=threads)
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


def goals(rows: list[dict]) -> list[dict]:
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
            worst = max(v["ratio"] for v in r["latency"].values())
            out.append({"goal": f"digits-cnn auto not slower than float at batch 1 or 32 (ratio <= 1+{NOISE})",
                        "value": worst, "ok": worst <= 1 + NOISE})
    return out


def table(rows: list[dict], checks: list[dict]) -> str:
    """A plain-text table of the rows and the goals."""
    head = f"{'model':<11} {'mode':<8} {'chosen':<22} {'size x':>7} {'lat b1':>7} {'lat b32':>8} {'acc before':>10} {'acc after':>9} {'d pp':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<11} {r['mode']:<8} {r['chosen'] or '-':<22} {r['size_ratio'] or 0:>6.2f}x "
            f"{r['latency']['batch_1']['ratio']:>6.2f}x {r['latency']['batch_32']['ratio']:>7.2f}x "
            f"{100 * r['accuracy_before']:>9.2f}% {100 * (r['accuracy_after'] or 0):>8.2f}% {r['accuracy_delta_pp']:>+6.2f}"
        )
    lines.append("lat = int8 latency / float latency (below 1 is faster), median of A/B repeats")
    lines.append("")
    for c in checks:
        lines.append(f"[{'PASS' if c['ok'] else 'FAIL'}] {c['goal']}: {c['value']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally write JSON; exit 1 when a goal fails."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(NAMES))
    p.add_argument("--modes", default="dynamic,static,auto")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--threads", type=int, default=None,
                   help="ORT intra-op threads (default: every CPU available; `onnxdeploy serve` "
                        "runs one per worker)")
    p.add_argument("--json", dest="json_path")
    args = p.parse_args(argv)
    rows = run(args.models.split(","), args.modes.split(","), repeats=args.repeats, rounds=args.rounds,
               iters=args.iters, threads=args.threads)
    checks = goals(rows)
    print(table(rows, checks))
    if args.json_path:
        write_json(args.json_path, {"rows": rows, "goals": checks, "noise_band": NOISE})
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
