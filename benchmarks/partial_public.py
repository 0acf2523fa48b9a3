"""Partial int8 on public models shipped in a PyPI wheel: what ``quantize --mode auto`` does with them.

The models are PaddleOCR's, as the ``rapidocr_onnxruntime`` wheel ships them (nothing is
downloaded at run time: get the wheel once with ``pip download --no-deps
rapidocr_onnxruntime==1.4.4`` and unzip it, or install it, then pass ``--models DIR``):

- ``ch_ppocr_mobile_v2.0_cls_infer.onnx``: text-line orientation classifier, ``x [b, 3, 48, 192]``
- ``ch_PP-OCRv4_rec_infer.onnx``: text-line recognizer (SVTR neck), ``x [b, 3, 48, 320]``
- ``ch_PP-OCRv4_det_infer.onnx``: text detector (DBNet), ``x [b, 3, 256, 320]``

The inputs are synthetic text made here (Pillow's default font, random words, grey paper,
sensor noise), normalized as PaddleOCR does. For each model the table gives every candidate's
min cosine (or top-1 disagreement) and speed vs float, the partial search's base, the nodes it
kept float (with the source layer), its tries, the chosen model and the seconds auto took. The
CPU and the load average stand beside the figures.

    python benchmarks/partial_public.py --models DIR [--only det,rec,cls] [--samples 32]
                                        [--budget 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from onnxdeploy.environment import environment
from onnxdeploy.quantize import QuantizeOptions, quantize_model
from onnxdeploy.report.jsonio import write_json

MODELS = {
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (48, 192), "line"),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", (48, 320), "line"),
    "det": ("ch_PP-OCRv4_det_infer.onnx", (256, 320), "page"),
}
WORDS = ("the quick brown fox jumps over lazy dog invoice total 2024 amount paid thank you "
         "order no. 1337 street city").split()


def _page(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    bg = int(rng.integers(200, 256))
    img = Image.new("RGB", (w, h), (bg, bg, bg))
    draw = ImageDraw.Draw(img)
    y = int(rng.integers(2, 12))
    while y < h - 12:
        size = int(rng.integers(12, 28))
        ink = int(rng.integers(0, 90))
        text = " ".join(rng.choice(WORDS, int(rng.integers(2, 6))))
        draw.text((int(rng.integers(2, 30)), y), text, fill=(ink,) * 3,
                  font=ImageFont.load_default(size=size))
        y += size + int(rng.integers(4, 20))
    return np.clip(np.asarray(img, np.float32) + rng.normal(0, 4, (h, w, 3)), 0, 255)


def synthetic_text(kind: str, n: int, seed: int, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{"x": [n, 3, h, w]}``: pages (detector: ImageNet mean/std) or lines (+-1 scaling)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = _page(rng, *hw) / 255.0
        if kind == "page":
            a = (a - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        else:
            a = (a - 0.5) / 0.5
        out.append(a.transpose(2, 0, 1))
    return {"x": np.stack(out).astype(np.float32)}


def find_models(root: Path) -> Path:
    hits = sorted(root.rglob(MODELS["rec"][0]))
    if not hits:
        raise SystemExit(f"error: no {MODELS['rec'][0]} under {root}: unzip the rapidocr_onnxruntime "
                         "wheel there (pip download --no-deps rapidocr_onnxruntime==1.4.4)")
    return hits[0].parent


def run_one(name: str, folder: Path, work: Path, samples: int, budget: float, threads: int) -> dict:
    file, hw, kind = MODELS[name]
    data = work / f"{name}.npz"
    np.savez(data, **synthetic_text(kind, samples, 0, hw))
    opts = QuantizeOptions(mode="auto", data=str(data), threads=threads, latency_batch=4,
                           latency_budget_s=1.0, search_budget_s=budget)
    t0 = time.monotonic()
    report = quantize_model(folder / file, work / f"{name}.int8.onnx", opts)
    seconds = time.monotonic() - t0
    d = report.to_dict()
    d["auto_seconds"] = round(seconds, 1)
    d["load_average"] = os.getloadavg()
    return d


def table(name: str, d: dict) -> str:
    lines = [f"## {name}: auto took {d['auto_seconds']} s (load average {d['load_average'][0]:.1f})", "",
             "| candidate | min cosine | top-1 agree | speedup vs float (b1 / b4) | admissible |",
             "|---|---|---|---|---|"]
    for c in d["candidates"]:
        sp = c.get("speedup") or {}
        speed = " / ".join(f"{v:.2f}x" for v in sp.values()) or "-"
        mc = c.get("min_cosine")
        agree = c.get("top1_agreement")
        lines.append(f"| {c['name']} | {'-' if mc is None else f'{mc:.4f}'} | "
                     f"{'-' if agree is None else f'{agree:.3f}'} | {speed} | {c.get('admissible')} |")
    fb = d.get("fallback")
    if fb:
        lines += ["", f"search from {fb['base']} ({fb['quantizable_units']} units, ranked by "
                      f"{'/'.join(fb['methods'])}, kept float as {fb.get('grouping')}), "
                      f"{fb['seconds']} s: {fb['summary']}"]
        for t in (fb.get("earlier") or {}).get("tries", []):
            lines.append(f"- (nodes alone) {t['kept_float']} units, {len(t['nodes'])} nodes float: "
                         f"min cosine {t['min_cosine']}, admissible {t['admissible']}, {t['seconds']} s")
        for t in fb["tries"]:
            lines.append(f"- {t['kept_float']} units, {len(t['nodes'])} nodes float: min cosine {t['min_cosine']}, "
                         f"admissible {t['admissible']}, {t['seconds']} s")
        for u in fb.get("kept_units") or []:
            lines.append(f"- kept float: {'+'.join(u['nodes'])} (layer {u['layer']}, {u['op_type']}, "
                         f"{u['method']})")
    chosen = d.get("chosen") or {}
    lines += ["", f"chosen: {chosen.get('name')}: {chosen.get('reason')}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, required=True, help="folder holding the unzipped wheel")
    ap.add_argument("--only", default="det", help="comma-separated: cls, rec, det")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--budget", type=float, default=300.0, help="--search-budget seconds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"error: --only {','.join(unknown)}: expected some of {', '.join(MODELS)}", file=sys.stderr)
        return 2
    folder = find_models(args.models)
    env = environment(args.threads)
    print(f"CPU: {env.get('cpu')}; {args.threads} ORT thread(s); load average at start "
          f"{os.getloadavg()[0]:.1f}\n")
    results = {}
    with tempfile.TemporaryDirectory(prefix="partial-public-") as tmp:
        for name in names:
            results[name] = run_one(name, folder, Path(tmp), args.samples, args.budget, args.threads)
            print(table(name, results[name]), flush=True)
    if args.json:
        write_json(args.json, {"environment": env, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
